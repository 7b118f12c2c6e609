"""Flow types the admin tests drive (registered once, on import)."""

from __future__ import annotations

from typing import Any

from flowstate_web import Artefact, Flow, Prop, State, transition
from flowstate_web.flow import _FlowMeta

HOSTILE = '"><img src=x onerror=alert(1)><script>alert(1)</script>'


class BranchyFlow(Flow, type_name="AdminBranchyFlow"):
    """A flow with an error state left by two retry transitions, and one left by none."""

    ref = Prop(str)
    count = Prop(int, default=0)
    ratio = Prop(float, default=0.5)
    urgent = Prop(bool, default=False)
    extra = Prop(dict[str, Any], default={})

    new = State(initial=True)
    working = State()
    broken = State(error=True)
    stuck = State(error=True)
    done = State(final=True)

    report = Artefact(dict[str, Any])

    @transition(source=new, target=working, persists=report)
    def start(self, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        """Start working and keep a report."""
        return payload if payload is not None else {"started": True}

    @transition(source=working, target=broken)
    def fail(self) -> None:
        """Record a failure (call from ``except``)."""

    @transition(source=working, target=stuck)
    def get_stuck(self) -> None:
        """Stuck: no retry leaves this error state."""

    @transition(source=broken, target=working, retry=True)
    def retry_work(self) -> None:
        """Go back to work."""

    @transition(source=broken, target=new, retry=True, guard="allow_restart")
    def restart(self) -> None:
        """Start over, if the guard allows."""

    @transition(source=broken, target=done, retry=True)
    def explode(self) -> None:
        """A retry whose own code fails when ``ref`` is 'boom'."""
        if self.ref == "boom":
            raise RuntimeError("explode failed for " + self.ref)

    @transition(source=working, target=done)
    def finish(self) -> None:
        """Finish."""

    def allow_restart(self) -> bool:
        return self.ref != "no-restart"


class SimpleRetryFlow(Flow, type_name="AdminSimpleRetryFlow"):
    """One error state, one retry transition: what bulk retry handles without choices."""

    ref = Prop(str)

    new = State(initial=True)
    failed = State(error=True)
    ok = State(final=True)

    @transition(source=new, target=failed)
    def fail(self) -> None:
        """Fail."""

    @transition(source=failed, target=new, retry=True)
    def again(self) -> None:
        """Back to new."""

    @transition(source=new, target=ok)
    def succeed(self) -> None:
        """Succeed."""


def _hostile_namespace() -> dict[str, Any]:
    ns: dict[str, Any] = {"__qualname__": "HostileFlow", "__module__": __name__}
    ns["note"] = Prop(str)
    ns["start"] = State(initial=True)
    ns[HOSTILE] = State(error=True)  # a state whose *name* is markup
    ns["payload"] = Artefact(dict[str, Any])

    def blow_up(self: Flow, data: dict[str, Any]) -> dict[str, Any]:
        return data

    ns["blow_up"] = transition(source=ns["start"], target=ns[HOSTILE], persists=ns["payload"])(
        blow_up
    )
    return ns


HostileFlow: type[Flow] = _FlowMeta(  # type: ignore[assignment]
    "HostileFlow", (Flow,), _hostile_namespace(), type_name="AdminHostileFlow"
)
