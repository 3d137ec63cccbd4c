"""The flows the chaos workload runs, and the path each one's graph dictates for every instance.

Three linear flows, so that "the state its graph dictates" is one path per flow and a node visited twice is a
step run twice:
- `journey` (started by TriggerFlow): entry -> a short timer -> wait_for_event `confirm` (the driver sends it once
  the wait is armed) -> call_webhook -> send_push -> exit;
- `order` (started by an `order` event): entry -> a short timer -> call_webhook -> send_in_app -> exit;
- `silent` (started by TriggerFlow): entry -> wait_for_event `never` that nobody sends -> its timeout -> exit.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final


class FlowKind(StrEnum):
    """Which of the chaos flows an instance runs."""

    JOURNEY = "journey"
    ORDER = "order"
    SILENT = "silent"


# What the local endpoint answers every call with; the call step's output must be exactly this.
CALL_ANSWER: Final[dict[str, Any]] = {"accepted": True}
CONFIRM_EVENT: Final = "confirm"
ORDER_EVENT: Final = "order"
# The webhook path carries the instance id, so each request the endpoint records names its instance.
CALL_PATH_PREFIX: Final = "/hook/"
# A call (attempts included) gives up after this; a claim of a scheduler that died lapses this long plus the
# lease later, and the call is made again under the same key.
CALL_TIMEOUT: Final = "4s"
# Where the tenant's channel provider (`webhook`) POSTs each delivery, with its idempotency key.
DELIVERY_PATH: Final = "/deliveries"


@dataclass(frozen=True)
class ChaosTemplate:
    """A message template the send nodes name (created through TemplateService before the flows)."""

    id: str
    channel: str
    subject: str
    body: str


TEMPLATES: Final = (
    ChaosTemplate("chaos-push", "push", "Confirmed", "Thanks, {{ participant_id }}."),
    ChaosTemplate("chaos-inbox", "in_app", "Order", "Your order is on its way, {{ participant_id }}."),
)


@dataclass(frozen=True)
class Visit:
    """One node an instance must pass exactly once, with the branch it must take (None: no branch)."""

    node_id: str
    branch: str | None = None


@dataclass(frozen=True)
class ChaosFlow:
    """A flow's graph as (id, type, config) nodes and (source, target, branch) edges, and its dictated path."""

    kind: FlowKind
    nodes: tuple[tuple[str, str, dict[str, Any]], ...]
    edges: tuple[tuple[str, str, str], ...]
    path: tuple[Visit, ...]
    # Nodes that make one delivery each, and the node whose call the endpoint must see.
    delivery_nodes: tuple[str, ...] = ()
    call_node: str | None = None


def chaos_flows(call_url_base: str) -> dict[FlowKind, ChaosFlow]:
    """The three flows, calling `call_url_base` + `/hook/<instance id>`."""
    call = {
        "url": f"{call_url_base}{CALL_PATH_PREFIX}{{{{ _instance_id }}}}",
        "body": {"participant": "{{ _participant_id }}"},
        "timeout": CALL_TIMEOUT,
    }
    return {
        FlowKind.JOURNEY: ChaosFlow(
            kind=FlowKind.JOURNEY,
            nodes=(
                ("start", "event_entry", {"event_type": "chaos_journey"}),
                ("pause", "wait", {"duration": "1.5s"}),
                ("confirm", "wait_for_event", {"event_type": CONFIRM_EVENT, "timeout": "150s"}),
                ("call", "call_webhook", call),
                ("push", "send_push", {"template_id": "chaos-push"}),
                ("done", "exit", {}),
                ("expired", "exit", {"reason": "never confirmed"}),
            ),
            edges=(
                ("start", "pause", ""),
                ("pause", "confirm", ""),
                ("confirm", "call", "event_received"),
                ("confirm", "expired", "timed_out"),
                ("call", "push", ""),
                ("push", "done", ""),
            ),
            path=(
                Visit("start"),
                Visit("pause"),
                Visit("confirm", "event_received"),
                Visit("call"),
                Visit("push"),
                Visit("done"),
            ),
            delivery_nodes=("push",),
            call_node="call",
        ),
        FlowKind.ORDER: ChaosFlow(
            kind=FlowKind.ORDER,
            nodes=(
                ("start", "event_entry", {"event_type": ORDER_EVENT}),
                ("pause", "wait", {"duration": "1s"}),
                ("call", "call_webhook", call),
                ("inbox", "send_in_app", {"template_id": "chaos-inbox", "placement": "home"}),
                ("done", "exit", {}),
            ),
            edges=(("start", "pause", ""), ("pause", "call", ""), ("call", "inbox", ""), ("inbox", "done", "")),
            path=(Visit("start"), Visit("pause"), Visit("call"), Visit("inbox"), Visit("done")),
            delivery_nodes=("inbox",),
            call_node="call",
        ),
        FlowKind.SILENT: ChaosFlow(
            kind=FlowKind.SILENT,
            nodes=(
                ("start", "event_entry", {"event_type": "chaos_silent"}),
                ("hold", "wait_for_event", {"event_type": "never", "timeout": "3s"}),
                ("expired", "exit", {"reason": "timed out"}),
                ("got", "exit", {}),
            ),
            edges=(("start", "hold", ""), ("hold", "expired", "timed_out"), ("hold", "got", "event_received")),
            path=(Visit("start"), Visit("hold", "timed_out"), Visit("expired")),
        ),
    }
