"""Times shown to people: in the lab's time zone (Asia/Shanghai), with the zone named."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

ZONE = ZoneInfo("Asia/Shanghai")


def local_time(value: Any) -> str:
    """A stored time (ISO text, an extract version like ``20261202T123642123456Z``, or a
    datetime; UTC unless it says otherwise) in Beijing time, with the zone named."""
    if not value:
        return ""
    if isinstance(value, datetime):
        moment = value
    else:
        text = str(value)
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            try:
                moment = datetime.strptime(text, "%Y%m%dT%H%M%S%fZ")
            except ValueError:
                return text
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return f"{moment.astimezone(ZONE):%Y-%m-%d %H:%M:%S} (Asia/Shanghai)"
