"""Secrets generated on first use and kept in the state directory.

Each secret is one file in ``<home>/secrets/`` with mode 0600, written atomically
(temporary file, fsync, rename) so that a crash never leaves half a secret behind.
Values never appear in logs or errors; ``scrub`` removes any that slipped into a text.

Where the secrets are mounted from elsewhere (a Kubernetes Secret, ``DATALAB_SECRETS_DIR``
with ``DATALAB_SECRETS_READONLY=1``), nothing is generated or written: a missing secret is
an error that names it, so every replica reads the same values (the session key above all).
"""

from __future__ import annotations

import os
import secrets as _random
from pathlib import Path

from lab.errors import ConfigError
from lab.settings import Settings


def _create_private(path: Path, value: str) -> bool:
    """Create ``path`` (mode 0600) holding ``value``; False if it already exists.

    The value is written and synced under a temporary name and then hard-linked into
    place, so the file appears whole or not at all and the first writer wins a race.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, value.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def secret(settings: Settings, name: str, *, nbytes: int = 24) -> str:
    """Return the secret ``name``, generating it (hex, ``nbytes`` random bytes) if absent."""
    path = settings.secrets_dir / name
    if not path.exists():
        if settings.secrets_readonly:
            raise ConfigError(
                f"the secret {name!r} is missing from {settings.secrets_dir} (DATALAB_SECRETS_READONLY=1: "
                "nothing is generated); add it to the mounted Secret "
                f"/ 只读密钥目录中缺少密钥 {name!r}，请把它加入挂载的 Secret",
                reason="secret-missing",
            )
        _create_private(path, _random.token_hex(nbytes))
    return path.read_text().strip()


def known_secrets(settings: Settings) -> list[str]:
    """All secret values generated so far (for scrubbing)."""
    if not settings.secrets_dir.is_dir():
        return []
    values = []
    for path in settings.secrets_dir.iterdir():
        if path.is_file() and not path.name.startswith("."):
            value = path.read_text().strip()
            if len(value) >= 8:
                values.append(value)
    return values


def scrub(text: str, settings: Settings) -> str:
    """Replace every known secret in ``text`` with ``***``."""
    for value in known_secrets(settings):
        text = text.replace(value, "***")
    return text
