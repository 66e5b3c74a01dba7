"""The one exception tree of Data Lab.

Every error a user can meet is a ``LabError``. Each carries:

- ``message``: what went wrong and what to do, safe to show to the user;
- ``detail``: a fuller text for the log (never a secret, token or raw value);
- ``reason``: a short, stable code for programs and tests.

::

    LabError
    ├── ConfigError          bad setting, file or command-line value
    │   └── PolicyError      a policy file that is malformed or would leak
    ├── NotFound             unknown dataset, organisation, column, component
    ├── NotAuthenticated     no token, or one that is expired, forged or not for us
    ├── AccessDenied         no grant, wrong role, expired grant
    ├── BudgetExhausted      the privacy budget left cannot pay for the request
    ├── Busy                 too many heavy queries are running; retry after a while
    └── StackError           installing, starting or checking the local services
        ├── MissingTool      a required program is absent or too old
        ├── InstallFailed    a download or build step failed
        ├── PortInUse        a port the lab needs is taken by another program
        └── HealthCheckFailed a component did not become healthy
"""

from __future__ import annotations


class LabError(Exception):
    """Root of every Data Lab error."""

    reason = "error"

    def __init__(self, message: str, *, detail: str | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail or message
        if reason is not None:
            self.reason = reason

    def __str__(self) -> str:
        return self.message


class ConfigError(LabError):
    reason = "config"


class PolicyError(ConfigError):
    reason = "policy"


class NotFound(LabError):
    reason = "not-found"


class NotAuthenticated(LabError):
    reason = "not-authenticated"


class AccessDenied(LabError):
    reason = "access-denied"


class BudgetExhausted(LabError):
    reason = "budget-exhausted"


class Busy(LabError):
    """The gateway turned a heavy query away before reserving any budget; ``retry_after`` in seconds."""

    reason = "busy"

    def __init__(
        self,
        message: str,
        *,
        position: int = 0,
        retry_after: int = 1,
        detail: str | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message, detail=detail, reason=reason)
        self.position = position
        self.retry_after = retry_after


class StackError(LabError):
    reason = "stack"


class MissingTool(StackError):
    reason = "missing-tool"


class InstallFailed(StackError):
    reason = "install-failed"


class PortInUse(StackError):
    reason = "port-in-use"


class HealthCheckFailed(StackError):
    reason = "unhealthy"
