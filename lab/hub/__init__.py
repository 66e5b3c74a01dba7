"""The JupyterHub adapter: configuration (``config``), authenticator (``auth``), login hook
(``login``) and the sandbox spawner (``spawner``).

Kept import-light: ``lab.hub.spawner.inside`` runs inside the sandbox.
"""
