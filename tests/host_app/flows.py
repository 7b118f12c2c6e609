"""The host app's flow type: a customer's onboarding, with an after-commit callback."""

from __future__ import annotations

from flowstate_web import Flow, Prop, State, transition

#: Flow ids whose after-commit callback ran, in order.
welcomed: list[int] = []


class HostOnboardingFlow(Flow, type_name="HostOnboardingFlow"):
    """Activate a customer and send a welcome e-mail after the commit."""

    customer_id = Prop(int)

    new = State(initial=True)
    active = State(final=True)

    @transition(source=new, target=active, after="send_welcome")
    def activate(self) -> None:
        """Activate the customer."""

    def send_welcome(self) -> None:
        welcomed.append(self.id)
