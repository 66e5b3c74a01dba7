# Read-only configuration of every sandboxed notebook server (JUPYTER_CONFIG_DIR points here).
# jupyter_server_config.json beside it enables lab.hub.spawner.guard; this file keeps in the home
# what the server writes there on the analyst's behalf (notebook trust, front-end settings),
# since the configuration and data directories themselves are read-only.
import os

from jupyter_core.paths import jupyter_config_path

c = get_config()  # type: ignore[name-defined]  # noqa: F821
home = os.environ["HOME"]
notary_dir = os.path.join(home, ".local", "share", "jupyter")
os.makedirs(notary_dir, mode=0o700, exist_ok=True)  # a fresh home has none; nbformat does not make it
c.NotebookNotary.data_dir = notary_dir
c.ConfigManager.write_config_dir = os.path.join(home, ".jupyter", "serverconfig")
c.ConfigManager.read_config_path = [os.path.join(p, "serverconfig") for p in jupyter_config_path()] + [
    c.ConfigManager.write_config_dir
]
