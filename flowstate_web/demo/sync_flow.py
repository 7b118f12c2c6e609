"""The flow_state gem's README example, in Python: fetch a third-party API, then save it.

The README quotes this module; ``tests/test_example_flow.py`` runs it, failure and retries too.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flowstate_web import Artefact, Flow, Prop, State, transition


class SyncThirdPartyApiFlow(Flow, state_timeout=timedelta(minutes=15)):
    """Fetch a record from a third-party API, persist the response, save it locally."""

    my_record_id = Prop(str)
    third_party_id = Prop(str)
    third_party_etag = Prop(str, default="")

    pending = State(initial=True, timeout=None)  # waits for pick(): not a stall
    picked = State()
    fetching_third_party_api = State(
        timeout=timedelta(minutes=2), on_timeout="fail_third_party_api_request"
    )
    fetched_third_party_api = State()
    failed_to_fetch_third_party_api = State(error=True)
    saving_my_record = State(timeout=timedelta(minutes=2), on_timeout="fail_record_save")
    saved_my_record = State()
    failed_to_save_my_record = State(error=True)
    completed = State(final=True)

    third_party_api_response = Artefact(dict[str, Any])

    @transition(source=pending, target=picked, enqueue="fetch_third_party")
    def pick(self) -> None:
        """Claim the flow and hand the fetch job to the queue."""

    @transition(source=picked, target=fetching_third_party_api)
    def start_third_party_api_request(self) -> None:
        """Mark the API call as in progress."""

    @transition(
        source=fetching_third_party_api,
        target=fetched_third_party_api,
        persists=third_party_api_response,
        enqueue="save_local_record",
    )
    def finish_third_party_api_request(self, result: dict[str, Any]) -> dict[str, Any]:
        """Store the API's response as an artefact (its etag as a prop); hand off the save."""
        self.third_party_etag = str(result.get("etag", ""))  # written with this transition
        return result

    @transition(source=fetching_third_party_api, target=failed_to_fetch_third_party_api)
    def fail_third_party_api_request(self) -> None:
        """Record that the API call failed (call it from ``except``: the error is kept)."""

    @transition(
        source=failed_to_fetch_third_party_api,
        target=picked,
        retry=True,
        enqueue="fetch_third_party",
    )
    def retry_fetch(self) -> None:
        """Operator's retry: go back to picked and hand the fetch job off again."""

    @transition(
        source=fetched_third_party_api,
        target=saving_my_record,
        guard="has_response",
    )
    def start_record_save(self) -> None:
        """Start saving; refused unless a response was persisted."""

    @transition(source=saving_my_record, target=saved_my_record, enqueue="complete_flow")
    def finish_record_save(self) -> None:
        """Mark the record saved and hand the completion to the queue."""

    @transition(source=saving_my_record, target=failed_to_save_my_record)
    def fail_record_save(self) -> None:
        """Record that saving failed."""

    @transition(
        source=failed_to_save_my_record,
        target=fetched_third_party_api,
        retry=True,
        enqueue="save_local_record",
    )
    def retry_save(self) -> None:
        """Operator's retry: hand the save job off again (the response is kept)."""

    @transition(source=saved_my_record, target=completed)
    def complete(self) -> None:
        """Finish the flow."""

    def has_response(self) -> bool:
        return self.third_party_api_response.exists()
