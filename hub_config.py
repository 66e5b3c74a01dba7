# JupyterHub configuration for Data Lab. Keep this file thin: the logic is lab.hub.config.
from lab.hub.config import configure
from lab.settings import load_settings

configure(c, load_settings())  # type: ignore[name-defined]  # noqa: F821
