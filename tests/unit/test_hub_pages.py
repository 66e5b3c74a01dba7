"""The hub's page templates render, branded and in both languages, from JupyterHub's own."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from jinja2 import ChoiceLoader, Environment, FileSystemLoader, PrefixLoader
from traitlets.config import Config

from lab.hub import pages
from lab.hub.config import configure
from lab.hub.spawner import labsettings
from lab.settings import load_settings

pytestmark = pytest.mark.unit

HAN = re.compile(r"[\u4e00-\u9fff]")


def _environment() -> Environment:
    """Templates found the way JupyterHub finds them (``app.py``: its own under ``templates/``)."""
    import jupyterhub.app

    default = jupyterhub.app.JupyterHub()._template_paths_default()[0]
    ours = FileSystemLoader([str(pages.TEMPLATES)])
    loader = ChoiceLoader([PrefixLoader({"templates": FileSystemLoader([default])}, "/"), ours])
    return Environment(loader=loader, autoescape=True)


class _User:
    name = "li.na"
    json_escaped_name = "li.na"

    class spawner:
        options_form = None


def _namespace(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    settings = load_settings({"DATALAB_HOME": str(tmp_path)})
    made, expires = datetime(2026, 12, 4, 2, 0), datetime(2026, 12, 4, 10, 0)
    token = type("T", (), {"api_id": "a1", "note": "script", "scopes": [], "last_activity": None,
                           "created": made, "expires_at": expires})  # fmt: skip
    return {
        **pages.template_vars(settings),
        "base_url": "/hub/", "prefix": "/", "user": _User(), "login_url": "/hub/login",
        "logout_url": "/hub/logout", "static_url": lambda path, **_: f"/hub/static/{path}",
        "parsed_scopes": {"admin-ui": True, "list:users": True, "servers": {"user": {"li.na"}}},
        "services": [], "xsrf_token": "x", "default_server": type("S", (), {"active": True}),
        "url": "/user/li.na/", "api_tokens": [token], "oauth_clients": [], "status_code": 404,
        "status_message": "Not Found", "message": "", "progress_url": "/p", "spawn_url": "/hub/spawn",
        "token_expires_in_options_html": "", "api_page_limit": 50, "server_version": "6",
        **extra,
    }  # fmt: skip


@pytest.mark.parametrize(
    "name",
    ["home.html", "token.html", "spawn.html", "spawn_pending.html", "stop_pending.html",
     "not_running.html", "error.html", "404.html", "logout.html", "admin.html"],
)  # fmt: skip
def test_every_hub_page_is_branded_and_bilingual(tmp_path: Path, name: str) -> None:
    html = _environment().get_template(name).render(**_namespace(tmp_path))
    title = re.search(r"<title>(.*?)</title>", html, re.S)
    assert title and title.group(1).strip() == "数据实验室 · Data Lab"
    body = html.split("<body>", 1)[1]
    assert "数据实验室 · Data Lab" in body
    # JupyterHub's error pages have no login widget
    assert "退出 · Log out" in body or name in ("error.html", "404.html")
    assert HAN.search(re.sub(r"<script.*?</script>", "", body, flags=re.S)), name
    assert "JupyterHub logo" not in body and ">Services<" not in body


def test_admin_page_offers_only_what_the_viewers_scopes_allow(tmp_path: Path) -> None:
    env = _environment()
    operator = env.get_template("admin.html").render(**_namespace(tmp_path))
    hidden = " ".join(rule for rule in re.findall(r"[^{}]*\{ display: none !important; \}", operator))
    selectors = ("td.actions a", ".start-all", ".add-users-button", 'a[href$="/groups"]', "#shutdown-button")
    for selector in selectors:
        assert selector in hidden, selector  # Access Server and Spawn Page are the links in td.actions
    scopes = ("admin-ui", "access:servers", "servers", "admin:users", "admin:groups", "shutdown")
    everything = _namespace(tmp_path, parsed_scopes=dict.fromkeys(scopes, True))
    admin = env.get_template("admin.html").render(**everything)
    assert "display: none" not in admin
    assert "不能进入任何人的服务器" in operator


def test_error_pages_name_the_status_in_both_languages(tmp_path: Path) -> None:
    env = _environment()
    refused = env.get_template("error.html").render(
        **_namespace(tmp_path, status_code=403, status_message="Forbidden", message="requires admin-ui")
    )
    assert re.search(r"403\s+无权访问", refused) and "Forbidden" in refused and "requires admin-ui" in refused
    assert "联系数据局运营人员" in refused
    missing = env.get_template("404.html").render(**_namespace(tmp_path))
    assert "页面不存在" in missing and "There is no page at this address" in missing
    assert "moons" not in missing


def test_hub_config_uses_the_lab_templates(tmp_path: Path) -> None:
    c = Config()
    configure(c, load_settings({"DATALAB_HOME": str(tmp_path), "DATALAB_HUB_PORT": "8100"}))
    assert c.JupyterHub.template_paths == [str(pages.TEMPLATES)]
    assert (pages.TEMPLATES / "page.html").is_file()
    assert c.JupyterHub.template_vars["console_url"] == "http://localhost:8100/services/gateway/console/"


def test_jupyterlab_gets_a_data_lab_menu_with_console_and_airlock() -> None:
    settings = json.loads(labsettings.overrides_bytes("http://localhost:8100/services/gateway/console"))
    assert settings["@jupyterlab/translation-extension:plugin"] == {"locale": "zh_CN"}  # the base kept
    (menu,) = settings["@jupyterlab/mainmenu-extension:plugin"]["menus"]
    assert menu["label"] == "数据实验室 · Data Lab"
    entries = {item["args"]["text"]: item["args"]["url"] for item in menu["items"]}
    assert all(item["command"] == "help:open" and item["args"]["newBrowserTab"] for item in menu["items"])
    assert set(entries.values()) == {
        "http://localhost:8100/services/gateway/console/analyst",
        "http://localhost:8100/services/gateway/console/analyst#my-exports",
    }
    assert all(HAN.search(text) and re.search("[A-Za-z]", text) for text in entries)
