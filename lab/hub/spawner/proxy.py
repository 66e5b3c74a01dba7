"""configurable-http-proxy routes to servers that listen on unix sockets."""

from __future__ import annotations

import re
from typing import Any

from jupyterhub.proxy import ConfigurableHTTPProxy

_UNIX_PORT = re.compile(r"^(http\+unix://[^/:]+):80(?=/|$)")


class UnixSocketProxy(ConfigurableHTTPProxy):
    """JupyterHub stores port 80 for an ``http+unix://`` server; the proxy must not see it."""

    async def add_route(self, routespec: str, target: str, data: dict[str, Any]) -> Any:
        return await super().add_route(routespec, _UNIX_PORT.sub(r"\1", target), data)
