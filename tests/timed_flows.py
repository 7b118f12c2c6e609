"""Flow types with state timeouts (defined once: the registry is process-wide)."""

from __future__ import annotations

from datetime import timedelta

from flowstate_web import Flow, Prop, State, transition

TEN_MINUTES = timedelta(minutes=10)
HOUR = timedelta(hours=1)
callbacks: list[int] = []


class TimedFlow(Flow, type_name="tests.TimedFlow", state_timeout=HOUR):
    """Queued inherits the type's hour; fetching has its own 10 minutes and a sweep action."""

    ref = Prop(str)

    queued = State(initial=True)
    fetching = State(timeout=TEN_MINUTES, on_timeout="fail_fetch")
    parked = State(timeout=None)  # opts out of the type's default: never stalls
    failed = State(error=True)
    cancelled = State(error=True)
    done = State(final=True)

    @transition(source=queued, target=fetching, after="enqueue_fetch")
    def start(self) -> None:
        """Start fetching and hand the job over (in-process, at most once)."""

    @transition(source=fetching, target=failed)
    def fail_fetch(self) -> None:
        """The fetch failed or timed out."""

    @transition(source=[queued, fetching], target=cancelled)
    def cancel(self) -> None:
        """Give up on the flow."""

    @transition(source=fetching, target=parked)
    def park(self) -> None:
        """Wait for a human, as long as it takes."""

    @transition(source=[fetching, parked], target=done)
    def finish(self) -> None:
        """Done."""

    @transition(source=failed, target=queued, retry=True)
    def retry_fetch(self) -> None:
        """Queue the fetch again."""

    def enqueue_fetch(self) -> None:
        callbacks.append(self.id)


class ExplodingTimeoutFlow(Flow, type_name="tests.ExplodingTimeoutFlow"):
    """Its on_timeout transition raises for ref 'boom' (the sweep must go on)."""

    ref = Prop(str)

    waiting = State(initial=True, timeout=TEN_MINUTES, on_timeout="time_out")
    timed_out = State(error=True)

    @transition(source=waiting, target=timed_out)
    def time_out(self) -> None:
        """Give up waiting."""
        if self.ref == "boom":
            raise RuntimeError("time_out exploded for " + self.ref)
