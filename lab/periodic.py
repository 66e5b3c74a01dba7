"""A task that runs every few seconds in a daemon thread of a long-lived process.

The gateway keeps three of them (grant expiry and MinIO policies, MinIO members policies,
abandoned budget reservations). Each round that fails is logged by its exception's reason
or type only (never its text, which may name values) and retried at the next round.
"""

from __future__ import annotations

import logging
import threading


class Periodic:
    """Calls :meth:`tick` every ``interval`` seconds until :meth:`stop`."""

    name = "periodic"
    log = logging.getLogger(__name__)

    def __init__(self, interval: float, *, immediate: bool = True) -> None:
        if interval <= 0:
            raise ValueError("the interval must be > 0 seconds")
        self.interval = interval
        self.immediate = immediate  # the first round at start, or one interval after it
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> object:
        raise NotImplementedError

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval + 5)
            self._thread = None

    def _run(self) -> None:
        if not self.immediate and self._stop.wait(self.interval):
            return
        while not self._stop.is_set():
            try:
                self.tick()
                self.last_error = None
            except Exception as exc:  # retried next round
                self.last_error = str(getattr(exc, "reason", "") or type(exc).__name__)
                self.log.error(
                    "%s failed (%s); retrying in %.0f s", self.name, self.last_error, self.interval
                )
            self._stop.wait(self.interval)
