"""The notebook server's one way out: no bulk file transfer to the browser.

A jupyter_server extension, loaded from the read-only ``/opt/datalab`` by the read-only
configuration directory the spawner names (``JUPYTER_CONFIG_DIR``), so code in the
sandbox can neither remove nor reconfigure it. Data leaves the lab through the airlock
(``lab.client.request_export``); the browser gets from the server only what editing needs:

- refused, whatever the method: ``/files/…``, ``/view/…``, ``/nbconvert/…``, any request
  with a ``download`` argument, and any handler that serves files straight from the home
  (a ``StaticFileHandler`` rooted there, however it is routed);
- the contents API returns no body of a plain file (``type`` file, text or base64), only
  its listing entry; notebooks keep opening, up to ``DownloadGuard.max_notebook_bytes``
  (the check is on the model about to be sent, so a file swapped after the request is
  measured as it is);
- every refusal and every notebook sent to the browser is logged (path and size, never
  content) in the server's log, which the hub's log collects.

The extension also makes the server process non-dumpable (``PR_SET_DUMPABLE`` 0), so
kernels running under the same uid cannot ptrace it or read its memory to undo the above
(``lab.hub.spawner.inside`` does the same at the very start). What a person can still copy off
the screen, from cell output or a terminal, is the residual risk named in docs/notebooks.md.
"""

from __future__ import annotations

import ctypes
import json
import os
from typing import Any

from tornado import httputil, web
from traitlets import Integer
from traitlets.config import LoggingConfigurable

PR_SET_DUMPABLE = 4
_loaded = False  # set once the guard is in place; lab.hub.spawner.inside refuses to listen before
REFUSED_PREFIXES = ("files/", "view/", "nbconvert/")

REFUSED = (
    "Files are not downloaded from the notebook server: data leaves the lab only through the "
    "airlock (lab.request_export(...) in a notebook). / 笔记本服务器不提供文件下载：数据只能经"
    "出口审核离开实验室（在笔记本中调用 lab.request_export(...)）。"
)
TOO_BIG = (
    "This notebook is larger than {limit} bytes and is not sent to the browser; clear large "
    "outputs in a kernel (e.g. nbformat) and open it again. / 该笔记本超过 {limit} 字节，"
    "不会发送到浏览器；请在内核中清除较大的输出后重新打开。"
)


def loaded() -> bool:
    """True once ``_load_jupyter_server_extension`` has put the guard in place."""
    return _loaded


def non_dumpable() -> None:
    """No ptrace, /proc/<pid>/mem or core dump of this process by the same uid."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")


class DownloadGuard(LoggingConfigurable):
    """Decides what the notebook server may send to the browser."""

    max_notebook_bytes = Integer(
        4 * 1024 * 1024,
        config=True,
        help="Largest notebook (JSON bytes) the contents API sends to the browser; larger ones get 413.",
    )

    def refusal(self, request: httputil.HTTPServerRequest, base_url: str) -> str | None:
        """Why ``request`` is refused before routing, or None."""
        path = request.path
        local = path[len(base_url) :] if path.startswith(base_url) else path.lstrip("/")
        local = local.lstrip("/")
        if local.startswith(REFUSED_PREFIXES):
            return local.split("/", 1)[0]
        if "download" in httputil.parse_qs_bytes(request.query, keep_blank_values=True):
            return "download"
        return None

    def serves_home(self, handler_class: Any, handler_kwargs: dict[str, Any], root_dir: str) -> bool:
        """True for a static-file handler that reads from the home (any route to it)."""
        if not (isinstance(handler_class, type) and issubclass(handler_class, web.StaticFileHandler)):
            return False
        roots = handler_kwargs.get("path", "/")
        home = os.path.realpath(root_dir)
        for root in roots if isinstance(roots, list | tuple) else [roots]:
            served = os.path.realpath(str(root))
            if (
                served == home
                or served.startswith(home + os.sep)
                or home.startswith(served.rstrip(os.sep) + os.sep)
            ):
                return True
        return False

    def check_model(self, model: dict[str, Any]) -> None:
        """Raise 403 for the body of a plain file, 413 for a notebook over the limit."""
        if model.get("content") is None or model.get("type") == "directory":
            return
        path = model.get("path", "")
        if model.get("type") != "notebook":
            self.log.warning("Refused to send the contents of %s to the browser (one way out)", path)
            raise web.HTTPError(403, REFUSED, reason="Download refused")
        size = len(json.dumps(model.get("content"), default=str))
        if size > self.max_notebook_bytes:
            self.log.warning(
                "Refused to send notebook %s (%d bytes, limit %d)", path, size, self.max_notebook_bytes
            )
            raise web.HTTPError(
                413, TOO_BIG.format(limit=self.max_notebook_bytes), reason="Notebook too large"
            )
        self.log.info("Sent notebook %s (%d bytes) to the browser", path, size)


class RefusedHandler(web.RequestHandler):
    """Answers 403 with the reason in 中文 and English, for every method."""

    def initialize(self, what: str) -> None:
        self.what = what

    def prepare(self) -> None:
        self.set_status(403, "Download refused")
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps({"message": REFUSED, "reason": "download-refused", "what": self.what}))


def _load_jupyter_server_extension(serverapp: Any) -> None:
    global _loaded
    non_dumpable()
    guard = DownloadGuard(parent=serverapp)
    app = serverapp.web_app
    base_url = serverapp.base_url
    root_dir = serverapp.root_dir
    route = app.find_handler

    def find_handler(request: httputil.HTTPServerRequest, **kwargs: Any) -> Any:
        what = guard.refusal(request, base_url)
        if what is None:
            delegate = route(request, **kwargs)
            handler = getattr(delegate, "handler_class", None)
            if not guard.serves_home(handler, getattr(delegate, "handler_kwargs", {}), root_dir):
                return delegate
            what = "static"
        guard.log.warning(
            "Refused %s %s (%s: no downloads from the notebook server)", request.method, request.path, what
        )
        return app.get_handler_delegate(request, RefusedHandler, {"what": what})

    app.find_handler = find_handler

    from jupyter_server.services.contents.handlers import ContentsHandler

    finish_model = ContentsHandler._finish_model

    def _finish_model(self: Any, model: dict[str, Any], location: bool = True) -> None:
        guard.check_model(model)
        finish_model(self, model, location)

    ContentsHandler._finish_model = _finish_model  # type: ignore[method-assign]
    _loaded = True
    serverapp.log.info(
        "lab.hub.spawner.guard: file downloads refused, notebooks up to %d bytes", guard.max_notebook_bytes
    )


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "lab.hub.spawner.guard"}]
