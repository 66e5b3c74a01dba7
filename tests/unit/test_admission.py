"""Heavy queries are admitted a few at a time; the others wait in line or are told "busy, position N".

What an analyst notices: a query beyond the line is answered at once with HTTP 429, a
bilingual message with its position and a ``Retry-After``, and its budget is untouched;
queries in line run in the order they came, as soon as a slot frees up.
"""

from __future__ import annotations

import json
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

from lab.errors import Busy, ConfigError
from lab.gateway.app import error_response
from lab.services import queries
from lab.services.admission import Admission
from lab.services.queries import Gateway
from lab.settings import load_settings

pytestmark = pytest.mark.unit


def _hold(
    admission: Admission, started: threading.Event, release: threading.Event, log: list[str], name: str
):
    def run() -> None:
        try:
            with admission.slot():
                log.append(f"start {name}")
                started.set()
                release.wait(10)
        except Busy as exc:
            log.append(f"busy {name} {exc.position}")
            started.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_beyond_the_line_is_busy_with_its_position_and_nothing_waits() -> None:
    admission = Admission(limit=2, queue=1, wait_s=30)
    release, log = threading.Event(), []
    threads = [_hold(admission, threading.Event(), release, log, str(i)) for i in range(2)]
    _until(lambda: admission.running == 2)
    waiter = _hold(admission, threading.Event(), release, log, "w")
    _until(lambda: admission.waiting == 1)
    start = time.monotonic()
    with pytest.raises(Busy) as refused, admission.slot():
        pass
    assert time.monotonic() - start < 1  # answered at once, not after the wait
    assert refused.value.position == 2 and refused.value.retry_after >= 1
    message = refused.value.message
    assert "position 2" in message and "排队第 2 位" in message and "no budget" in message
    release.set()
    for t in [*threads, waiter]:
        t.join(5)
    assert log[-1] == "start w"  # the one in line ran once a slot was free


def test_the_line_is_first_come_first_served() -> None:
    admission = Admission(limit=1, queue=5, wait_s=30)
    release, log = threading.Event(), []
    first = _hold(admission, threading.Event(), release, log, "0")
    _until(lambda: admission.running == 1)
    rest, waiting = threading.Event(), []
    for i in range(1, 5):
        waiting.append(_hold(admission, threading.Event(), rest, log, str(i)))
        _until(lambda i=i: admission.waiting == i)
    release.set()  # the first finishes: the first in line starts, the others keep waiting
    first.join(5)
    _until(lambda: log[-1] == "start 1")
    assert log == ["start 0", "start 1"] and admission.waiting == 3
    rest.set()
    for t in waiting:
        t.join(5)
    assert log == [f"start {i}" for i in range(5)] and admission.running == 0


def test_a_wait_that_runs_out_is_busy_with_the_position_reached() -> None:
    admission = Admission(limit=1, queue=3, wait_s=0.2)
    release, log = threading.Event(), []
    holder = _hold(admission, threading.Event(), release, log, "0")
    _until(lambda: admission.running == 1)
    with pytest.raises(Busy) as refused, admission.slot():
        pass
    assert refused.value.position == 1 and admission.waiting == 0
    release.set()
    holder.join(5)
    with admission.slot():  # free again
        assert admission.running == 1
    assert admission.running == 0


def test_busy_is_http_429_with_retry_after_not_a_server_error() -> None:
    response = error_response(Busy("繁忙 / busy", position=3, retry_after=12))
    body = json.loads(bytes(response.body))
    assert response.status_code == 429 and response.headers["Retry-After"] == "12"
    assert body["error"] == {"reason": "busy", "message": "繁忙 / busy", "position": 3, "retry_after": 12}


class _Ledger:
    def __init__(self) -> None:
        self.reserved: list[float] = []

    def spend(self, grant_id: int, epsilon: float, delta: float, **_: Any) -> Any:
        self.reserved.append(epsilon)
        raise AssertionError("a busy query must not reserve budget")


def test_a_query_turned_away_reserves_no_budget(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"DATALAB_HOME": str(tmp_path), "DATALAB_HEAVY_QUERIES": "1", "DATALAB_HEAVY_QUEUE": "0"}
    settings = load_settings(env)
    assert (settings.heavy_queries, settings.heavy_queue) == (1, 0)
    gateway = object.__new__(Gateway)  # only what run() touches: the checks are faked, the order is not
    gateway.ledger = ledger = _Ledger()  # type: ignore[assignment]
    gateway.admission = Admission(settings.heavy_queries, settings.heavy_queue, settings.heavy_wait_s)
    checked = (SimpleNamespace(canonical=lambda: "{}"), SimpleNamespace(meta=None), SimpleNamespace(id=1))
    monkeypatch.setattr(gateway, "_prepare", lambda caller, body: checked)
    monkeypatch.setattr(queries.dp, "preview", lambda query, meta: SimpleNamespace(epsilon=0.5, delta=0.0))
    with gateway.admission.slot(), pytest.raises(Busy):  # another heavy query holds the only slot
        gateway.run(SimpleNamespace(username="ana"), {})  # type: ignore[arg-type]
    assert ledger.reserved == []


@pytest.mark.parametrize(("name", "value"), [("DATALAB_HEAVY_QUERIES", "0"), ("DATALAB_HEAVY_QUEUE", "many")])
def test_bad_admission_settings_name_the_variable(name: str, value: str, tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings({"DATALAB_HOME": str(tmp_path), name: value})


def test_twenty_heavy_queries_at_once_are_run_or_told_to_wait_and_light_requests_keep_answering() -> None:
    """The gateway's shape in one process: sync endpoints on the server's thread pool, the real
    error handler. Heavy work is a 0.3 s sleep (the engine releases the GIL likewise)."""
    import asyncio
    import statistics

    import httpx
    from fastapi import FastAPI

    from lab.errors import LabError

    admission = Admission(limit=2, queue=8, wait_s=10)
    app = FastAPI()

    @app.exception_handler(LabError)
    async def lab_error(request: Any, exc: LabError) -> Any:
        return error_response(exc)

    @app.post("/heavy")
    def heavy() -> dict[str, bool]:
        with admission.slot():
            time.sleep(0.3)
        return {"ok": True}

    @app.get("/light")
    def light() -> dict[str, bool]:
        return {"ok": True}

    async def scenario() -> tuple[list[httpx.Response], list[float]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
            heavies = [asyncio.create_task(http.post("/heavy")) for _ in range(20)]
            await asyncio.sleep(0.1)
            light_s = []
            for _ in range(40):
                start = time.perf_counter()
                assert (await http.get("/light")).status_code == 200
                light_s.append(time.perf_counter() - start)
                await asyncio.sleep(0.02)
            return list(await asyncio.gather(*heavies)), light_s

    answers, light_s = asyncio.run(scenario())
    codes = sorted(r.status_code for r in answers)
    assert codes == [200] * 10 + [429] * 10  # 2 ran at once, 8 waited their turn, 10 were told to wait
    for refused in (r for r in answers if r.status_code == 429):
        error = refused.json()["error"]
        assert int(refused.headers["Retry-After"]) >= 1 and error["reason"] == "busy"
        assert "position 9" in error["message"] and "排队第 9 位" in error["message"]
    p95 = statistics.quantiles(light_s, n=20)[-1]
    assert p95 < 0.3, (
        f"light requests waited behind heavy ones (p95 {p95:.3f} s)"
    )  # one heavy query takes 0.3 s
