"""JupyterLab's setting defaults in a sandbox: the repository's overrides plus the lab's links.

``jupyterlab/overrides.json`` beside this module holds what every sandbox shares (中文 by
default, no news or update checks). The links to the console and the airlock need the lab's
public address, so the spawner writes the merged result per server, as root, into the
sandbox's read-only ``/run/datalab/jupyterlab/`` (``LabApp.app_settings_dir``): a top-level
*数据实验室 · Data Lab* menu whose entries open the pages in a new browser tab (JupyterLab's
own ``help:open`` command; no extension is built).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

BASE = Path(__file__).with_name("jupyterlab") / "overrides.json"
MENU_ID = "jp-mainmenu-datalab"
MENU_LABEL = "数据实验室 · Data Lab"
MAIN_MENU = "@jupyterlab/mainmenu-extension:plugin"


def links(console_url: str) -> list[tuple[str, str]]:
    """The menu's entries: (label in 中文 and English, address)."""
    return [
        ("控制台：数据目录、申请与授权 · Console: catalogue, applications, grants", f"{console_url}/analyst"),
        ("数据导出审核（气闸）· Airlock: export requests", f"{console_url}/analyst#my-exports"),
    ]


def overrides(console_url: str, base: Path = BASE) -> dict[str, Any]:
    """The repository's overrides with the *数据实验室 · Data Lab* menu added."""
    merged: dict[str, Any] = json.loads(base.read_text(encoding="utf-8"))
    items = [
        {"command": "help:open", "args": {"text": text, "url": url, "newBrowserTab": True}, "rank": rank}
        for rank, (text, url) in enumerate(links(console_url), start=1)
    ]
    menu = {"id": MENU_ID, "label": MENU_LABEL, "rank": 900, "items": items}
    merged.setdefault(MAIN_MENU, {})["menus"] = [menu]
    return merged


def overrides_bytes(console_url: str) -> bytes:
    return json.dumps(overrides(console_url), ensure_ascii=False, indent=1).encode()
