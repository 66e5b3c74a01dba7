"""Byte relays between TCP ports and unix sockets: the only ways out of a sandbox.

A sandbox has its own network namespace with nothing but ``lo``. Each channel to the lab
(the hub API, the gateway, MinIO's S3 endpoint) is two relays joined by a unix socket in
the user's private socket directory:

- outside (``--unix PATH=HOST:PORT``, run by the spawner): accepts on the unix socket and
  connects to the service's TCP port on the host;
- inside (``--tcp PORT=PATH``, run in the sandbox by ``lab.hub.spawner.inside``): accepts on
  the sandbox's own ``127.0.0.1:PORT`` and connects to the unix socket.

Nothing else is forwarded, so a sandbox can reach those three services and no other.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

Connect = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


@dataclass(frozen=True)
class Route:
    """Listen on ``listen`` and forward each connection to ``target``.

    Either end is ``("unix", path)`` or ``("tcp", host, port)``.
    """

    listen: tuple[str, ...]
    target: tuple[str, ...]


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass


def _connector(target: tuple[str, ...]) -> Connect:
    if target[0] == "unix":
        return lambda: asyncio.open_unix_connection(target[1])
    return lambda: asyncio.open_connection(target[1], int(target[2]))


def _handler(connect: Connect) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await connect()
        except OSError:
            writer.close()
            return
        try:
            await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))
        finally:
            for end in (writer, upstream_writer):
                with contextlib.suppress(Exception):
                    end.close()

    return handle


async def serve(routes: Sequence[Route], *, socket_mode: int = 0o666) -> list[asyncio.Server]:
    """Start a server per route; unix sockets get ``socket_mode``."""
    servers = []
    for route in routes:
        handle = _handler(_connector(route.target))
        if route.listen[0] == "unix":
            path = route.listen[1]
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            servers.append(await asyncio.start_unix_server(handle, path))
            os.chmod(path, socket_mode)
        else:
            servers.append(await asyncio.start_server(handle, route.listen[1], int(route.listen[2])))
    return servers


def parse(unix: Sequence[str], tcp: Sequence[str]) -> list[Route]:
    """``PATH=HOST:PORT`` (unix → tcp) and ``PORT=PATH`` (127.0.0.1:PORT → unix)."""
    routes = []
    for spec in unix:
        path, _, address = spec.partition("=")
        host, _, port = address.rpartition(":")
        routes.append(Route(("unix", path), ("tcp", host, port)))
    for spec in tcp:
        port, _, path = spec.partition("=")
        routes.append(Route(("tcp", "127.0.0.1", port), ("unix", path)))
    return routes


async def _run(routes: Sequence[Route]) -> None:
    servers = await serve(routes)
    await asyncio.gather(*(s.serve_forever() for s in servers))


def _die_with_parent() -> None:
    """Ask the kernel to send SIGTERM when the parent (the hub) dies (prctl PR_SET_PDEATHSIG)."""
    import ctypes
    import signal

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM, 0, 0, 0)
    if os.getppid() == 1:  # the parent died before the request took effect
        sys.exit(0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lab.hub.spawner.relay", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--unix", action="append", default=[], metavar="PATH=HOST:PORT")
    parser.add_argument("--tcp", action="append", default=[], metavar="PORT=PATH")
    parser.add_argument("--die-with-parent", action="store_true", help="exit when the parent process dies")
    args = parser.parse_args(argv)
    if args.die_with_parent:
        _die_with_parent()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run(parse(args.unix, args.tcp)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
