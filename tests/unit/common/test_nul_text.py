"""U+0000 is found wherever a request carries text (PostgreSQL stores it in neither text nor jsonb), and named."""

from __future__ import annotations

from google.protobuf import struct_pb2
from hypothesis import given
from hypothesis import strategies as st
from kalcifer.v1 import customer_pb2, event_pb2, flow_pb2, segment_pb2, trigger_pb2
from kalcifer_common.rpc.nul_text import nul_path
from kalcifer_common.structs import dict_to_struct


def test_a_plain_string_field() -> None:
    assert nul_path(flow_pb2.ActivateFlowRequest(id="x", request_id="a\x00b")) == "request_id"


def test_a_nested_repeated_field() -> None:
    batch = event_pb2.IngestEventsRequest(
        events=[
            event_pb2.IngestEventRequest(participant_id="alice", event_type="a"),
            event_pb2.IngestEventRequest(participant_id="\x00", event_type="a"),
        ]
    )
    assert nul_path(batch) == "events[1].participant_id"


def test_map_keys_and_values() -> None:
    assert (
        nul_path(customer_pb2.SetCustomerPreferencesRequest(channels={"e\x00mail": True})) == "channels['e\\x00mail']"
    )
    upsert = customer_pb2.UpsertCustomerRequest(customer=customer_pb2.Customer(tags=["ok", "n\x00"]))
    assert nul_path(upsert) == "customer.tags[1]"


def test_struct_keys_and_values_at_any_depth() -> None:
    context = dict_to_struct({"a": {"list": [1, "fine", {"k\x00": 1}]}})
    assert nul_path(trigger_pb2.TriggerFlowRequest(context=context)) == "context['a']['list'][2]['k\\x00']"
    context = dict_to_struct({"a": ["x", "y\x00"]})
    assert nul_path(trigger_pb2.TriggerFlowRequest(context=context)) == "context['a'][1]"


def test_a_value_field() -> None:
    rule = segment_pb2.SegmentRule(field="tags", operator="eq", value=struct_pb2.Value(string_value="\x00"))
    request = segment_pb2.CreateSegmentRequest(segment=segment_pb2.Segment(name="s", rules=[rule]))
    assert nul_path(request) == "segment.rules[0].value"


def test_a_long_key_is_cut_in_the_path() -> None:
    path = nul_path(trigger_pb2.TriggerFlowRequest(context=dict_to_struct({"k" * 10_000: "\x00"})))
    assert path is not None
    assert len(path) < 100


@given(st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30))
def test_text_without_nul_passes(text: str) -> None:
    request = trigger_pb2.TriggerFlowRequest(
        flow_id=text, participant_id=text, context=dict_to_struct({text: [text, {text: text}]})
    )
    assert nul_path(request) is None
