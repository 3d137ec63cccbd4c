"""`make chaos` judges a run from recorded rows: each kind of loss or duplicate it must catch, it does."""

from __future__ import annotations

from dataclasses import replace

from tests.chaos.flows import CALL_ANSWER, FlowKind, chaos_flows
from tests.chaos.verdict import (
    CallRequest,
    DeliveryRow,
    EventRow,
    InstanceRow,
    Observed,
    Recovered,
    Send,
    Started,
    StepRow,
    judge,
    phase_at,
    redone_by_phase,
    render_redone,
    render_table,
)

FLOWS = chaos_flows("http://127.0.0.1:1")


def _journey(instance: str = "i1", participant: str = "p1") -> tuple[list[StepRow], list[DeliveryRow]]:
    steps = [
        StepRow(instance, "start", "completed", None, {}),
        StepRow(instance, "pause", "completed", None, {}),
        StepRow(instance, "confirm", "completed", "event_received", {}),
        StepRow(instance, "call", "completed", None, CALL_ANSWER),
        StepRow(instance, "push", "completed", None, {}),
        StepRow(instance, "done", "completed", None, {}),
    ]
    return steps, [DeliveryRow(instance, "push", "sent", f"{instance}:push:a1:v1")]


def _clean() -> tuple[list[Started], Observed]:
    steps, deliveries = _journey()
    observed = Observed(
        instances=[InstanceRow("i1", FlowKind.JOURNEY, "p1", "completed")],
        steps=steps,
        deliveries=deliveries,
        calls=[CallRequest("i1", "w1")],
        sends=[Send("i1:push:a1:v1")],
        events=[EventRow("confirm-p1", routed=True)],
        pending_waits=0,
        events_sent=frozenset({"confirm-p1"}),
        events_acknowledged=frozenset({"confirm-p1"}),
    )
    return [Started("p1", FlowKind.JOURNEY, phase=1, acknowledged=True)], observed


def test_a_clean_run_passes_with_its_figures_in_its_phase() -> None:
    started, observed = _clean()

    verdict = judge(FLOWS, started, observed)

    assert verdict.ok, verdict.problems
    assert (verdict.phases[1].started, verdict.phases[1].completed, verdict.phases[1].calls) == (1, 1, 1)
    assert "after x" in render_table({1: "after x"}, verdict)


def test_a_call_made_again_under_the_same_key_is_counted_but_allowed() -> None:
    started, observed = _clean()
    observed.calls = [CallRequest("i1", "w1"), CallRequest("i1", "w1")]
    observed.sends = [Send("i1:push:a1:v1"), Send("i1:push:a1:v1")]

    verdict = judge(FLOWS, started, observed)

    assert verdict.ok
    assert (verdict.total.calls_repeated, verdict.total.sends_repeated) == (1, 1)


def test_a_missing_instance_is_lost() -> None:
    started, observed = _clean()
    observed.instances = []

    verdict = judge(FLOWS, started, observed)

    assert not verdict.ok
    assert verdict.total.lost == 1


def test_a_second_instance_of_one_participant_is_a_duplicate() -> None:
    started, observed = _clean()
    steps, deliveries = _journey("i2")
    observed.instances = [*observed.instances, InstanceRow("i2", FlowKind.JOURNEY, "p1", "completed")]
    observed.steps = [*observed.steps, *steps]
    observed.deliveries = [*observed.deliveries, *deliveries]
    observed.calls = [*observed.calls, CallRequest("i2", "w2")]

    assert judge(FLOWS, started, observed).total.duplicate_instances == 1


def test_a_node_visited_twice_is_a_step_run_twice() -> None:
    started, observed = _clean()
    observed.steps = [*observed.steps, StepRow("i1", "push", "completed", None, {})]

    verdict = judge(FLOWS, started, observed)

    assert verdict.total.duplicate_steps == 1
    assert not verdict.ok


def test_a_second_delivery_of_one_node_is_a_duplicate_delivery() -> None:
    started, observed = _clean()
    observed.deliveries = [*observed.deliveries, DeliveryRow("i1", "push", "sent", "i1:push:a2:v1")]

    assert judge(FLOWS, started, observed).total.duplicate_deliveries == 1


def test_a_delivery_never_sent_fails_the_run() -> None:
    started, observed = _clean()
    observed.deliveries = [replace(observed.deliveries[0], status="failed")]

    assert judge(FLOWS, started, observed).total.unsent_deliveries == 1


def test_a_call_made_again_under_a_new_key_fails_the_run() -> None:
    started, observed = _clean()
    observed.calls = [CallRequest("i1", "w1"), CallRequest("i1", "w2")]

    assert judge(FLOWS, started, observed).total.calls_new_key == 1


def test_a_path_the_graph_does_not_dictate_is_a_wrong_state() -> None:
    started, observed = _clean()
    observed.steps = [
        replace(step, branch="timed_out") if step.node_id == "confirm" else step for step in observed.steps
    ]

    assert judge(FLOWS, started, observed).total.wrong_state == 1


def test_an_answer_the_engine_did_not_apply_as_given_is_a_wrong_state() -> None:
    started, observed = _clean()
    observed.steps = [replace(step, output={}) if step.node_id == "call" else step for step in observed.steps]

    assert judge(FLOWS, started, observed).total.wrong_state == 1


def test_an_instance_left_waiting_is_a_wrong_state() -> None:
    started, observed = _clean()
    observed.instances = [replace(observed.instances[0], status="waiting")]

    assert judge(FLOWS, started, observed).total.wrong_state == 1


def test_an_acknowledged_event_lost_or_unrouted_fails_the_run() -> None:
    started, observed = _clean()
    observed.events = [EventRow("confirm-p1", routed=False)]

    assert not judge(FLOWS, started, observed).ok
    observed.events = []
    assert judge(FLOWS, started, observed).events.lost == 1


def test_a_start_never_acknowledged_or_a_pending_wait_fails_the_run() -> None:
    started, observed = _clean()

    assert not judge(FLOWS, [replace(started[0], acknowledged=False)], observed).ok
    observed.pending_waits = 1
    assert not judge(FLOWS, started, observed).ok


def test_work_picked_up_again_counts_in_the_phase_it_happened_in() -> None:
    _, observed = _clean()
    observed.calls = [CallRequest("i1", "w1", at=5.0), CallRequest("i1", "w1", at=25.0)]
    observed.sends = [Send("k", at=1.0), Send("k", at=12.0), Send("k", at=13.0)]
    recovered = [Recovered("events routed by recovery", 3, at=11.0), Recovered("events routed by recovery", 1, at=30)]

    redone = redone_by_phase([10.0, 20.0], observed, recovered, {1: 7})

    assert [phase_at([10.0, 20.0], at) for at in (0.0, 10.0, 19.9, 20.0, 99.0)] == [0, 1, 1, 2, 2]
    assert [(r.calls_remade, r.sends_remade, r.api_retries) for r in redone.values()] == [
        (0, 0, 0),
        (0, 2, 7),
        (1, 0, 0),
    ]
    assert redone[1].counts["events routed by recovery"] == 3
    assert "events routed by recovery" in render_redone({}, redone, ["events routed by recovery"])
