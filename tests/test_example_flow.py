"""The README's example (the gem's SyncThirdPartyApiFlow) run end to end with its jobs.

The jobs here are the README's: they follow the gem's pattern (start, call, finish;
on error, fail from ``except`` and re-raise). The flow hands them off through the outbox to
a real huey queue (SQLite storage), drained job by job in the test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from huey import SqliteHuey

from flowstate_web import GuardFailedError
from flowstate_web.demo.sync_flow import SyncThirdPartyApiFlow
from flowstate_web.queues import JobRegistry
from flowstate_web.queues.huey import HueyQueue

jobs = JobRegistry()
huey: SqliteHuey


@pytest.fixture(autouse=True)
def _queue(app: Flask, tmp_path: Path) -> Iterator[None]:
    global huey
    huey = SqliteHuey("readme-example", filename=str(tmp_path / "queue.db"), results=False)
    app.extensions["flowstate"].use_queue(HueyQueue(huey, jobs, relay=False), app)
    yield
    huey.flush()


def queued() -> list[tuple[str, int]]:
    """Return what waits in the queue: (job, flow id)."""
    return [(t.name, t.args[0]) for t in huey.pending()]


class FakeApi:
    def __init__(self, fail: bool) -> None:
        self.fail = fail

    def fetch(self, third_party_id: str) -> dict[str, Any]:
        if self.fail:
            raise TimeoutError(f"third party {third_party_id} timed out")
        return {"id": third_party_id, "name": "Widget", "etag": "e-1"}


saved: dict[str, dict[str, Any]] = {}


api = FakeApi(fail=False)


@jobs.job()
def fetch_third_party(flow_id: int, *, dispatch_id: str) -> None:
    flow = SyncThirdPartyApiFlow.get(flow_id, lock=True)
    flow.start_third_party_api_request()
    try:
        response = api.fetch(flow.third_party_id)
        flow.finish_third_party_api_request(response)
    except Exception:
        flow.fail_third_party_api_request()
        raise


@jobs.job()
def save_local_record(flow_id: int, *, dispatch_id: str) -> None:
    flow = SyncThirdPartyApiFlow.get(flow_id, lock=True)
    flow.start_record_save()
    try:
        saved[flow.my_record_id] = flow.third_party_api_response.latest() or {}
        flow.finish_record_save()
    except Exception:
        flow.fail_record_save()
        raise


@jobs.job()
def complete_flow(flow_id: int, *, dispatch_id: str) -> None:
    SyncThirdPartyApiFlow.get(flow_id, lock=True).complete()


def drain(with_api: FakeApi) -> None:
    """Run the queued jobs one by one, as a consumer would (a failed job is logged by huey)."""
    global api
    api = with_api
    while (task := huey.dequeue()) is not None:
        huey.execute(task)


def test_happy_path_completes(app: Any) -> None:
    flow = SyncThirdPartyApiFlow.create(my_record_id="rec-1", third_party_id="tp-1")
    flow.pick()
    assert queued() == [("fetch_third_party", flow.id)]
    drain(FakeApi(fail=False))
    done = SyncThirdPartyApiFlow.get(flow.id)
    assert done.state == "completed" and done.completed_at is not None
    assert saved["rec-1"] == {"id": "tp-1", "name": "Widget", "etag": "e-1"}
    assert done.third_party_etag == "e-1"  # assigned in the transition, committed with it
    fetched = done.history()[2]
    assert fetched.changes == {"third_party_etag": {"old": "", "new": "e-1"}}
    names = [h.name for h in done.history()]
    assert names == [
        "pick",
        "start_third_party_api_request",
        "finish_third_party_api_request",
        "start_record_save",
        "finish_record_save",
        "complete",
    ]
    response = done.third_party_api_response.versions()
    assert len(response) == 1
    assert response[0].transition_id == done.history()[2].id


def test_failure_then_operator_retry_completes(app: Any) -> None:
    flow = SyncThirdPartyApiFlow.create(my_record_id="rec-2", third_party_id="tp-2")
    flow.pick()
    drain(FakeApi(fail=True))
    failed = SyncThirdPartyApiFlow.get(flow.id)
    assert failed.errored and failed.state == "failed_to_fetch_third_party_api"
    assert failed.last_error_type == "TimeoutError"
    assert failed.last_error_message == "third party tp-2 timed out"
    assert [t.name for t in failed.retry_transitions()] == ["retry_fetch"]
    failed.retry(actor="ops@example.com", reason="vendor fixed their API")
    assert queued() == [("fetch_third_party", flow.id)]
    drain(FakeApi(fail=False))
    done = SyncThirdPartyApiFlow.get(flow.id)
    assert done.state == "completed" and not done.errored
    assert done.last_errored_at is not None
    retry = next(h for h in done.history() if h.name == "retry_fetch")
    assert (retry.actor, retry.reason) == ("ops@example.com", "vendor fixed their API")


def test_save_guard_needs_the_persisted_response(app: Any, db: Any) -> None:
    from sqlalchemy import update

    from flowstate_web.models import flows

    flow = SyncThirdPartyApiFlow.create(my_record_id="rec-3", third_party_id="tp-3")
    # Force the state without an artefact, as a buggy writer might.
    db.session.execute(
        update(flows).where(flows.c.id == flow.id).values(state="fetched_third_party_api")
    )
    db.session.commit()
    with pytest.raises(GuardFailedError, match="start_record_save"):
        flow.start_record_save()


def test_readme_example_is_the_tested_flow() -> None:
    """The flow class printed in the README declares exactly the graph tested above."""
    import re
    from pathlib import Path

    from flowstate_web import registry

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "class Sync" in b)
    namespace: dict[str, Any] = {"__name__": SyncThirdPartyApiFlow.__module__}
    try:
        exec(block, namespace)
        from_readme = namespace["SyncThirdPartyApiFlow"]
        assert from_readme is not SyncThirdPartyApiFlow
        assert from_readme.graph().to_dict() == SyncThirdPartyApiFlow.graph().to_dict()
    finally:
        registry.register(SyncThirdPartyApiFlow)
    assert registry.get_flow_type("SyncThirdPartyApiFlow") is SyncThirdPartyApiFlow
