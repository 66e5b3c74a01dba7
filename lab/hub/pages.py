"""The hub's own pages, branded *数据实验室 · Data Lab* and in 中文 and English.

``templates/`` beside this module overrides JupyterHub's page templates
(``JupyterHub.template_paths``): each file extends JupyterHub's own (``templates/<name>``,
the prefix JupyterHub gives its defaults) or our ``page.html``, and replaces only the blocks
that hold words. The values below reach every template (``JupyterHub.template_vars``).

The admin page is JupyterHub's React app (English, built into JupyterHub); ``admin.html``
puts a bilingual header above it and hides its *Access Server* and *Spawn Page* links:
operators hold neither ``access:servers`` nor ``servers`` (``lab.hub.auth.OPERATOR_ROLE``),
so those links would only lead to a refusal.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lab.settings import Settings

TEMPLATES = Path(__file__).with_name("templates")
BRAND = ("数据实验室", "Data Lab")

# HTTP statuses the hub answers with, named in both languages (error.html).
STATUS: dict[int, tuple[str, str]] = {
    400: ("请求有误", "Bad request"),
    401: ("需要登录", "Login required"),
    403: ("无权访问", "Forbidden"),
    404: ("页面不存在", "Not found"),
    405: ("不允许的操作", "Method not allowed"),
    409: ("状态冲突", "Conflict"),
    429: ("请求过于频繁", "Too many requests"),
    500: ("服务器内部错误", "Internal server error"),
    502: ("上游服务无响应", "Bad gateway"),
    503: ("服务暂不可用", "Service unavailable"),
}


def template_vars(settings: Settings) -> dict[str, Any]:
    """What every hub template may use besides JupyterHub's own namespace."""
    return {
        "brand_zh": BRAND[0],
        "brand_en": BRAND[1],
        "console_url": f"{settings.console_url}/",
        "status_names": {str(code): names for code, names in STATUS.items()},
    }
