"""Graph validation, one rule at a time (SPEC 5): each rule's good case passes and its bad case names the field."""

from __future__ import annotations

from typing import Any

from kalcifer_common.errors import FieldViolation
from kalcifer_common.structs import MAX_JSON_NESTING
from kalcifer_engine.domain import FlowGraph, GraphLimits, GraphNode, GraphViolation, ViolationReason, validate_graph

from tests.support.payloads import nested
from tests.unit.engine.samples import REGISTRY, edge, graph, node

TRIGGER = node("t", "event_entry", {"event_type": "signup"})
MAIL = node("mail", "send_email", {"template_id": "welcome"})
WAIT = node("w", "wait", {"duration": "1d"})
EXIT = node("bye", "exit")
COND = node("c", "check_segment", {"segment_id": "vip"})


def check(data: dict[str, Any] | FlowGraph, limits: GraphLimits | None = None) -> list[FieldViolation]:
    return validate_graph(data, REGISTRY, limits) if limits else validate_graph(data, REGISTRY)


def fields(data: dict[str, Any], limits: GraphLimits | None = None) -> list[str]:
    return [v.field for v in check(data, limits)]


def reasons(data: dict[str, Any]) -> list[ViolationReason]:
    return [v.reason for v in check(data) if isinstance(v, GraphViolation)]


LINEAR = graph([TRIGGER, MAIL, WAIT, EXIT], [edge("t", "mail"), edge("mail", "w"), edge("w", "bye")])


def test_a_linear_flow_is_valid() -> None:
    assert check(LINEAR) == []


def test_a_parsed_flow_graph_validates_like_its_json() -> None:
    assert check(FlowGraph.from_json(LINEAR)) == []
    broken = graph([TRIGGER, WAIT], [edge("t", "w"), edge("w", "t")])
    assert check(FlowGraph.from_json(broken)) == check(broken)


# -- triggers --------------------------------------------------------------------------------------------------------


def test_a_graph_needs_a_trigger() -> None:
    violations = check(graph([MAIL]))
    assert [v.field for v in violations] == ["nodes"]
    assert "event_entry, segment_entry, webhook_entry" in violations[0].description
    assert check(graph([TRIGGER])) == []


def test_an_empty_graph_needs_a_trigger() -> None:
    assert fields(graph([])) == ["nodes"]


def test_a_trigger_has_no_incoming_edges() -> None:
    second = node("t2", "segment_entry", {"segment_id": "vip"})
    violations = check(graph([TRIGGER, second], [edge("t", "t2")]))
    assert [v.field for v in violations] == ["edges[0].target"]
    assert violations[
        0
    ].description == 'edge "t-t2" enters trigger node "t2" (segment_entry); a trigger cannot have ' + ("incoming edges")


def test_several_triggers_may_share_a_path() -> None:
    second = node("t2", "webhook_entry", {"webhook_path": "signup"})
    assert check(graph([TRIGGER, second, MAIL], [edge("t", "mail"), edge("t2", "mail")])) == []


# -- ids and edge ends -----------------------------------------------------------------------------------------------


def test_node_ids_are_non_empty() -> None:
    assert fields(graph([TRIGGER, node("", "exit")], [edge("t", "")])) == ["nodes[1].id", "edges[0].target"]


def test_node_ids_are_unique() -> None:
    violations = check(graph([TRIGGER, EXIT, EXIT], [edge("t", "bye")]))
    assert [v.field for v in violations] == ["nodes[2].id"]
    assert violations[0].description == 'node id "bye" is already used by nodes[1]'


def test_edge_ids_are_unique_when_set() -> None:
    edges = [edge("t", "mail", edge_id="e"), edge("mail", "bye", edge_id="e")]
    assert fields(graph([TRIGGER, MAIL, EXIT], edges)) == ["edges[1].id"]
    edges = [edge("t", "mail", edge_id=""), edge("mail", "bye", edge_id="")]
    assert check(graph([TRIGGER, MAIL, EXIT], edges)) == []


def test_edge_ends_exist() -> None:
    violations = check(graph([TRIGGER, MAIL], [edge("t", "mail"), edge("ghost", "mail"), edge("mail", "x")]))
    assert [(v.field, v.description) for v in violations] == [
        ("edges[1].source", 'edge "ghost-mail" leaves node "ghost", which does not exist'),
        ("edges[2].target", 'edge "mail-x" enters node "x", which does not exist'),
    ]


def test_edge_ends_are_required() -> None:
    assert fields(graph([TRIGGER], [{"id": "e"}])) == ["edges[0].source", "edges[0].target"]


# -- cycles ----------------------------------------------------------------------------------------------------------


def test_a_self_loop_is_a_cycle() -> None:
    violations = check(graph([TRIGGER, WAIT], [edge("t", "w"), edge("w", "w")]))
    assert [(v.field, v.description) for v in violations] == [("edges[1]", 'edge "w-w" creates a cycle: w -> w')]


def test_a_cycle_is_reported_once_naming_its_path() -> None:
    nodes = [TRIGGER, MAIL, WAIT, EXIT]
    edges = [edge("t", "mail"), edge("mail", "w"), edge("w", "mail"), edge("w", "bye")]
    violations = check(graph(nodes, edges))
    assert [(v.field, v.description) for v in violations] == [
        ("edges[2]", 'edge "w-mail" creates a cycle: mail -> w -> mail')
    ]
    assert reasons(graph(nodes, edges)) == [ViolationReason.CYCLE]


def test_two_cycles_are_two_violations() -> None:
    nodes = [TRIGGER, MAIL, WAIT, node("w2", "wait", {"duration": "1h"})]
    edges = [edge("t", "mail"), edge("mail", "w"), edge("w", "mail"), edge("t", "w2"), edge("w2", "w2")]
    assert fields(graph(nodes, edges)) == ["edges[2]", "edges[4]"]


def test_a_diamond_is_not_a_cycle() -> None:
    nodes = [TRIGGER, COND, MAIL, WAIT, EXIT]
    edges = [edge("t", "c"), edge("c", "mail", "true"), edge("c", "w", "false"), edge("mail", "bye"), edge("w", "bye")]
    assert check(graph(nodes, edges)) == []


# -- reachability ----------------------------------------------------------------------------------------------------


def test_every_node_is_reachable_from_a_trigger() -> None:
    violations = check(graph([TRIGGER, MAIL, WAIT], [edge("mail", "w")]))
    assert [(v.field, v.description) for v in violations] == [
        ("nodes[1]", 'node "mail" (send_email) cannot be reached from any trigger'),
        ("nodes[2]", 'node "w" (wait) cannot be reached from any trigger'),
    ]


def test_unreachability_is_not_repeated_when_there_is_no_trigger() -> None:
    assert fields(graph([MAIL, WAIT], [edge("mail", "w")])) == ["nodes"]


# -- types and configs -----------------------------------------------------------------------------------------------


def test_node_types_are_registered() -> None:
    violations = check(graph([TRIGGER, node("x", "send_pigeon")], [edge("t", "x")]))
    assert [(v.field, v.description) for v in violations] == [
        ("nodes[1].type", 'node "x" has unknown type "send_pigeon"')
    ]
    assert fields(graph([TRIGGER, node("x", "")], [edge("t", "x")])) == ["nodes[1].type"]


def test_configs_validate_against_their_schema() -> None:
    bad = node("w", "wait", {"duration": 30, "until": "later"})
    violations = check(graph([TRIGGER, bad], [edge("t", "w")]))
    assert [(v.field, v.description) for v in violations] == [
        ("nodes[1].config.duration", "must be a string, got an integer"),
        ("nodes[1].config.until", "unknown field; allowed: duration"),
    ]
    assert all(isinstance(v, GraphViolation) and v.node_id == "w" for v in violations)


def test_configs_pass_their_semantic_checks() -> None:
    violations = check(graph([TRIGGER, node("w", "wait", {"duration": "30"})], [edge("t", "w")]))
    assert [v.field for v in violations] == ["nodes[1].config.duration"]
    assert violations[0].description.startswith("'30' is not a duration")


def test_config_size_is_limited() -> None:
    big = node("tag", "add_tag", {"tag": "x" * 2000})
    assert fields(graph([TRIGGER, big], [edge("t", "tag")]), GraphLimits(max_config_bytes=1000)) == ["nodes[1].config"]


def test_config_nesting_is_limited() -> None:
    def calling(body: dict[str, Any]) -> dict[str, Any]:
        # The config is one level above its body: {"url": ..., "body": body}.
        return graph(
            [TRIGGER, node("call", "call_webhook", {"url": "https://x.example.com", "body": body})], [edge("t", "call")]
        )

    assert check(calling(nested(MAX_JSON_NESTING - 1))) == []
    violations = check(calling(nested(MAX_JSON_NESTING)))
    assert [(v.field, v.reason) for v in violations if isinstance(v, GraphViolation)] == [
        ("nodes[1].config", ViolationReason.INVALID_CONFIG)
    ]
    assert len(violations) == 1
    assert f"more than {MAX_JSON_NESTING} deep" in violations[0].description


def test_config_that_is_not_json_is_a_violation() -> None:
    flow = FlowGraph.from_json(graph([TRIGGER, node("tag", "add_tag", {"tag": 2**70})], [edge("t", "tag")]))
    assert [v.field for v in check(flow)] == ["nodes[1].config"]


# -- branches --------------------------------------------------------------------------------------------------------


def test_every_branch_has_an_edge() -> None:
    violations = check(graph([TRIGGER, COND, MAIL], [edge("t", "c"), edge("c", "mail", "true")]))
    assert [(v.field, v.description) for v in violations] == [
        ("nodes[1]", 'node "c" (check_segment) has no edge for its branch "false"')
    ]


def test_no_edge_carries_a_branch_its_node_cannot_return() -> None:
    edges = [edge("t", "c"), edge("c", "mail", "true"), edge("c", "bye", "false"), edge("c", "bye", "maybe")]
    violations = check(graph([TRIGGER, COND, MAIL, EXIT], edges))
    assert [(v.field, v.reason) for v in violations if isinstance(v, GraphViolation)] == [
        ("edges[3].branch", ViolationReason.UNKNOWN_BRANCH)
    ]
    assert 'cannot return branch "maybe"; its branches are "true", "false"' in violations[0].description


def test_a_branching_node_needs_labelled_edges() -> None:
    edges = [edge("t", "c"), edge("c", "mail", "true"), edge("c", "bye", "false"), edge("c", "bye")]
    assert fields(graph([TRIGGER, COND, MAIL, EXIT], edges)) == ["edges[3].branch"]


def test_a_completing_node_needs_unlabelled_edges() -> None:
    assert fields(graph([TRIGGER, MAIL, EXIT], [edge("t", "mail"), edge("mail", "bye", "true")])) == ["edges[1].branch"]


def test_a_completing_node_may_fan_out() -> None:
    assert check(graph([TRIGGER, MAIL, WAIT, EXIT], [edge("t", "mail"), edge("t", "w"), edge("w", "bye")])) == []


def test_a_branch_may_fan_out() -> None:
    edges = [edge("t", "c"), edge("c", "mail", "true"), edge("c", "w", "true"), edge("c", "bye", "false")]
    assert check(graph([TRIGGER, COND, MAIL, WAIT, EXIT], edges)) == []


def test_an_end_node_has_no_outgoing_edges() -> None:
    violations = check(graph([TRIGGER, EXIT, MAIL], [edge("t", "bye"), edge("bye", "mail")]))
    assert [(v.field, v.reason) for v in violations if isinstance(v, GraphViolation)] == [
        ("edges[1].source", ViolationReason.END_HAS_OUTGOING_EDGE)
    ]


def test_ab_split_needs_an_edge_per_variant() -> None:
    split = node("s", "ab_split", {"variants": [{"key": "a", "weight": 1}, {"key": "b", "weight": 1}]})
    wired = [edge("t", "s"), edge("s", "mail", "a"), edge("s", "bye", "b")]
    assert check(graph([TRIGGER, split, MAIL, EXIT], wired)) == []
    violations = check(graph([TRIGGER, split, MAIL, EXIT], [*wired[:2], edge("s", "bye", "c")]))
    assert [v.field for v in violations] == ["edges[2].branch", "nodes[1]"]
    assert violations[1].description == 'node "s" (ab_split) has no edge for its branch "b"'


def test_ab_split_with_a_bad_config_reports_only_the_config() -> None:
    split = node("s", "ab_split", {"variants": []})
    assert fields(graph([TRIGGER, split, MAIL], [edge("t", "s"), edge("s", "mail", "a")])) == [
        "nodes[1].config.variants"
    ]


# -- limits and everything at once -----------------------------------------------------------------------------------


def test_node_and_edge_counts_are_limited() -> None:
    limits = GraphLimits(max_nodes=3, max_edges=2)
    assert fields(LINEAR, limits) == ["nodes", "edges"]
    assert fields(LINEAR, GraphLimits(max_nodes=4, max_edges=3)) == []
    assert [v.field for v in check(FlowGraph.from_json(LINEAR), limits)] == ["nodes", "edges"]


def test_every_problem_is_reported_at_once() -> None:
    nodes = [node("m", "send_email", {}), node("w", "wait", {"duration": "soon"}), node("x", "teleport")]
    edges = [edge("m", "w", "yes"), edge("w", "m"), edge("w", "nowhere")]
    assert set(reasons(graph(nodes, edges))) == {
        ViolationReason.INVALID_CONFIG,
        ViolationReason.UNKNOWN_NODE_TYPE,
        ViolationReason.NO_TRIGGER,
        ViolationReason.MISSING_EDGE_END,
        ViolationReason.CYCLE,
        ViolationReason.UNKNOWN_BRANCH,
    }


def test_violations_name_their_node_and_edge() -> None:
    [by_node] = check(graph([TRIGGER, node("w", "wait", {})], [edge("t", "w")]))
    assert isinstance(by_node, GraphViolation)
    assert (by_node.node_id, by_node.edge_id) == ("w", "")
    [by_edge] = check(graph([TRIGGER], [edge("t", "gone", edge_id="e9")]))
    assert isinstance(by_edge, GraphViolation)
    assert (by_edge.node_id, by_edge.edge_id, by_edge.reason) == ("", "e9", ViolationReason.MISSING_EDGE_END)


def test_a_malformed_graph_is_reported_without_raising() -> None:
    assert fields({"nodes": [{"id": 7}]}) == ["nodes[0].id"]


def test_a_flow_graph_built_in_code_with_a_non_object_config_is_reported() -> None:
    flow = FlowGraph((GraphNode("t", "event_entry", ["signup"]),))  # type: ignore[arg-type]
    assert [v.field for v in check(flow)] == ["nodes[0].config"]


# -- templates -------------------------------------------------------------------------------------------------------


def test_a_channel_node_must_name_a_template_of_the_tenant_for_its_channel() -> None:
    sms = node("sms", "send_sms", {"template_id": "otp"})
    data = graph([TRIGGER, MAIL, sms, EXIT], [edge("t", "mail"), edge("mail", "sms"), edge("sms", "bye")])

    assert validate_graph(data, REGISTRY, templates={"welcome": "email", "otp": "sms"}) == []
    violations = validate_graph(data, REGISTRY, templates={"otp": "email"})
    assert [(v.field, v.reason, v.node_id) for v in violations if isinstance(v, GraphViolation)] == [
        ("nodes[1].config.template_id", ViolationReason.UNKNOWN_TEMPLATE, "mail"),
        ("nodes[2].config.template_id", ViolationReason.UNKNOWN_TEMPLATE, "sms"),
    ]
    assert 'names template "welcome", which does not exist' in violations[0].description
    assert 'sends sms, but template "otp" is for email' in violations[1].description


def test_without_a_tenant_templates_are_not_checked() -> None:
    assert validate_graph(LINEAR, REGISTRY, templates=None) == []


def test_a_node_whose_config_is_invalid_is_not_also_told_its_template_is_missing() -> None:
    bad = node("mail", "send_email", {"template_id": "welcome", "reply_to": 3})
    data = graph([TRIGGER, bad], [edge("t", "mail")])
    assert [v.field for v in validate_graph(data, REGISTRY, templates={})] == ["nodes[1].config.reply_to"]


def test_template_ids_lists_what_the_nodes_name_and_nothing_from_a_graph_over_the_limits() -> None:
    from kalcifer_engine.domain.validation import template_ids

    data = graph([TRIGGER, MAIL, node("x", "send_sms", {"template_id": "bad id!"})], [])
    assert template_ids(data) == {"welcome"}
    assert template_ids(data, GraphLimits(max_nodes=2)) == set()
    assert template_ids({"nodes": "nope"}) == set()


def test_violations_are_bounded_however_many_the_graph_holds() -> None:
    """Found by the public-API fuzzer: 100 nodes of 5000 unknown config keys each made 500 000 violations, an
    answer of 50 MB that the engine could not send (RESOURCE_EXHAUSTED after seconds of work)."""
    unknown_keys = {f"k{index}": True for index in range(5000)}
    nodes = [TRIGGER] + [node(f"m{index}", "send_email", {"template_id": "t", **unknown_keys}) for index in range(100)]
    found = check(graph(nodes, [edge("t", f"m{index}") for index in range(100)]))
    assert len(found) == 1001
    assert all(v.field.startswith("nodes[1].config.") for v in found[:1000])
    last = found[-1]
    assert isinstance(last, GraphViolation)
    assert (last.reason, last.description) == (
        ViolationReason.TOO_LARGE,
        "more than 1000 violations; the first 1000 are shown",
    )


def test_the_violation_bound_is_a_limit() -> None:
    nodes = [node(f"n{index}", "no_such_type") for index in range(5)]
    assert len(check(graph(nodes), GraphLimits(max_violations=3))) == 4
