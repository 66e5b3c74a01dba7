"""Notebook servers for analysts, each in its own sandbox (one machine: bubblewrap + cgroups).

Kept import-light: the sandbox's own entry point (``lab.hub.spawner.inside``) runs inside the
sandbox, where only the notebook's dependencies matter. The hub loads
``lab.hub.spawner.spawner.SandboxSpawner`` and ``lab.hub.spawner.proxy.UnixSocketProxy``.
"""
