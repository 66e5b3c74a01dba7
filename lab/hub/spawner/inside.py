"""The first program inside a sandbox: start the inside relays, then the notebook server.

``python -m lab.hub.spawner.inside --tcp PORT=PATH ... -- jupyterhub-singleuser ARGS`` runs the
relays in a background thread and the single-user server in the main thread; when the
server exits, the sandbox (and every process in it) ends.

The first thing it does is make itself non-dumpable (``PR_SET_DUMPABLE`` 0): kernels and
terminals run under the same uid, and without Yama on the host they could otherwise
ptrace the server or write its memory (``/proc/<pid>/mem``) and switch its guard off.
It also fails closed: the server does not bind its socket unless ``lab.hub.spawner.guard``
loaded (jupyter_server would otherwise only log a failed extension and serve on).
"""

from __future__ import annotations

import asyncio
import sys
import threading

from lab.hub.spawner.relay import _run, parse


def _require_guard() -> None:
    """Make ``ServerApp.init_httpserver`` (which binds the socket) refuse without the guard."""
    from jupyter_server.serverapp import ServerApp

    from lab.hub.spawner import guard

    bind = ServerApp.init_httpserver

    def init_httpserver(self: ServerApp) -> None:
        if not guard.loaded():
            raise SystemExit(
                "lab.hub.spawner.guard did not load, so the notebook server does not start; see the "
                "lines above in this log. / 下载防护扩展未加载，笔记本服务器不启动。"
            )
        bind(self)

    ServerApp.init_httpserver = init_httpserver  # type: ignore[method-assign]


def main(argv: list[str]) -> int:
    from lab.hub.spawner.guard import non_dumpable

    non_dumpable()
    _require_guard()
    if "--" not in argv:
        print("usage: python -m lab.hub.spawner.inside --tcp PORT=PATH ... -- COMMAND ...", file=sys.stderr)
        return 2
    split = argv.index("--")
    relays = [arg for flag, arg in zip(argv[:split:2], argv[1:split:2], strict=True) if flag == "--tcp"]
    routes = parse([], relays)
    thread = threading.Thread(target=lambda: asyncio.run(_run(routes)), name="relays", daemon=True)
    thread.start()
    command = argv[split + 1 :]
    sys.argv = command
    from jupyterhub.singleuser import main as singleuser

    return int(singleuser() or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
