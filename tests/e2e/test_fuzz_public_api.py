"""Every public RPC under a hypothesis-driven fuzzer (issue #12 item 7; SPEC 4 "never UNKNOWN/INTERNAL for bad
input", SPEC 10 limits on untrusted input).

Each RPC of every `kalcifer.v1` service (found from the generated descriptors, so a new RPC is fuzzed without this
file being edited) gets batches of requests drawn by `tests.support.fuzzing`, built from scratch or mutated from
requests that succeeded: nasty strings, extreme numbers, unknown enums, huge and deeply nested Structs,
out-of-range Timestamps, wrong ids, forged page tokens, bodies that are no message, missing or wrong credentials.
A batch's calls are in flight together. Then, for every call:

- its status is OK or a precise refusal (`answer_problem`: never UNKNOWN or INTERNAL, nor UNAVAILABLE or
  DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED only for a message over the size limit, UNIMPLEMENTED only from a service
  offered before it is implemented);
- the three processes are alive (and SERVING, checked every few batches and at the end);
- a rejected call changed no row: a batch whose calls were all rejected (and any batch of a read-only method)
  leaves every table's fingerprint (row count + checksum of its row versions) as it found it; the rejected calls
  of a batch where some succeeded are sent again, alone, on a settled database, and checked the same way.

The module runs its own suite on a scratch database and Redis db, with rate limits out of the way (the fuzzer
sends as fast as the API answers). The generation seed is printed; `KALCIFER_FUZZ_SEED=<seed>` replays a run's
requests (the answers also depend on the order in which concurrent calls land, and mutations on which calls
succeeded). `KALCIFER_FUZZ_EXAMPLES=<n>` sends n batches per method instead of 8, for a longer hunt.
"""

from __future__ import annotations

import os
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health_pb2
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from kalcifer.v1 import (
    customer_pb2,
    customer_pb2_grpc,
    event_pb2,
    event_pb2_grpc,
    flow_pb2,
    flow_pb2_grpc,
    journey_pb2,
    journey_pb2_grpc,
    node_type_pb2,
    node_type_pb2_grpc,
    segment_pb2,
    segment_pb2_grpc,
    tenant_pb2,
    tenant_pb2_grpc,
    trigger_pb2,
    trigger_pb2_grpc,
)
from kalcifer_common.structs import dict_to_struct

from tests.support.databases import REPO_ROOT, scratch_database, scratch_redis_db
from tests.support.fingerprints import DatabaseFingerprints, Fingerprint, changed_tables
from tests.support.fuzzing import (
    Credentials,
    FuzzCall,
    Pools,
    PublicMethod,
    RequestStrategies,
    calls,
    public_methods,
)
from tests.support.processes import SERVICE_NAMES, Suite, health_status, running_suite
from tests.support.rpc import bearer
from tests.support.tenants import Tenant, new_tenant

pytestmark = pytest.mark.e2e

PROTO_DIR = REPO_ROOT / "protos" / "kalcifer" / "v1"
METHODS = public_methods(PROTO_DIR)
# Batches per method: 8 in CI (over 10 000 requests in about a minute); more for a longer hunt.
EXAMPLES_PER_METHOD = int(os.environ.get("KALCIFER_FUZZ_EXAMPLES") or 8)
BATCH_SIZE = 22
MIN_REQUESTS = 10_000
CALL_TIMEOUT_SECONDS = 60.0
HEALTH_EVERY_BATCHES = 25
# Successful requests up to this size become templates for mutations (bigger ones would slow every mutation).
MAX_TEMPLATE_BYTES = 16 * 1024
# Bigger than the server's 16 MiB limit on a received message.
OVERSIZE_BYTES = 17 * 1024 * 1024
SEED = int(os.environ.get("KALCIFER_FUZZ_SEED") or secrets.randbits(32))

StatusCode = grpc.StatusCode
# What a fuzzed call may be answered: OK or a precise refusal (SPEC 4). Never UNKNOWN or INTERNAL, nor UNAVAILABLE or
# DEADLINE_EXCEEDED (the suite is healthy: those would mean a fuzzed call stalled or broke a process).
ALLOWED_CODES = frozenset(
    {
        StatusCode.OK,
        StatusCode.INVALID_ARGUMENT,
        StatusCode.NOT_FOUND,
        StatusCode.ALREADY_EXISTS,
        StatusCode.FAILED_PRECONDITION,
        StatusCode.ABORTED,
        StatusCode.OUT_OF_RANGE,
        StatusCode.UNAUTHENTICATED,
    }
)
# The server's limit on a received message (kalcifer_common.rpc.server.MAX_MESSAGE_BYTES).
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
# What a placeholder servicer (`rpc.server.binding` without one) answers: services offered before they are
# implemented. gRPC's own UNIMPLEMENTED ("Method not found!") would mean a public service is not served at all.
PLACEHOLDER_DETAILS = "method not implemented yet"


def answer_problem(answer: Answer) -> str | None:
    """Why `answer` is no acceptable answer to a fuzzed call, or None. RESOURCE_EXHAUSTED is right for a message
    over the size limit only (rate limits are lifted here): anything else (a reply too big to send, say) is a bug."""
    if answer.code in ALLOWED_CODES:
        return None
    if answer.code == StatusCode.RESOURCE_EXHAUSTED and len(answer.call.body) > MAX_MESSAGE_BYTES:
        return None
    if answer.code == StatusCode.UNIMPLEMENTED and answer.details == PLACEHOLDER_DETAILS:
        return None
    return f"{answer.code.name} is no answer to a fuzzed call"


CHANNEL_OPTIONS = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]


# --- the suite and what it holds before the first fuzzed call -----------------------------------------------------


def _graph(entry: tuple[str, dict[str, Any]], last: tuple[str, dict[str, Any]]) -> flow_pb2.FlowGraph:
    return flow_pb2.FlowGraph(
        nodes=[
            flow_pb2.GraphNode(id="entry", type=entry[0], config=dict_to_struct(entry[1])),
            flow_pb2.GraphNode(id="done", type=last[0], config=dict_to_struct(last[1])),
        ],
        edges=[flow_pb2.GraphEdge(id="e1", source="entry", target="done")],
    )


# Valid graphs whose runs end at once (no waits, no sends): background work stops soon after a call.
VALID_GRAPHS = (
    _graph(("event_entry", {"event_type": "signup"}), ("add_tag", {"tag": "new"})),
    _graph(("webhook_entry", {"webhook_path": "orders/paid"}), ("exit", {"reason": "done"})),
    _graph(("event_entry", {"event_type": "order.paid"}), ("exit", {})),
)


class _Seeder:
    """Calls made before fuzzing on one tenant's behalf: the ids they return, and the requests themselves (which
    succeeded, so they are templates the fuzzer mutates)."""

    def __init__(self, channel: grpc.Channel, tenant: Tenant, templates: Pools | None) -> None:
        self.channel = channel
        self.auth = tenant.auth
        self.templates = templates
        self.ids: list[str] = []

    def __call__(self, method: Callable[..., Any], request: Message) -> Any:
        response = method(request, metadata=self.auth, timeout=30)
        if self.templates is not None:
            pool = self.templates.templates.setdefault(request.DESCRIPTOR.full_name, [])
            self.templates.add(pool, request.SerializeToString())
        for name in ("id", "instance_id"):
            if isinstance(found := getattr(response, name, None), str) and found:
                self.ids.append(found)
        return response


def _seed_tenant(channel: grpc.Channel, tenant: Tenant, label: str, templates: Pools | None = None) -> list[str]:
    """Flows in every status (with versions), a segment, a journey, customers, an instance, an event and a node
    type of the tenant's own: the resources fuzzed calls name. Returns their ids."""
    call = _Seeder(channel, tenant, templates)
    flows = flow_pb2_grpc.FlowServiceStub(channel)

    def flow(name: str, graph: flow_pb2.FlowGraph) -> str:
        created = call(flows.CreateFlow, flow_pb2.CreateFlowRequest(flow=flow_pb2.Flow(name=name), graph=graph))
        return str(created.id)

    flow(f"{label}-draft", VALID_GRAPHS[0])
    active = flow(f"{label}-active", VALID_GRAPHS[1])
    call(flows.ActivateFlow, flow_pb2.ActivateFlowRequest(id=active))
    call(flows.CreateFlowVersion, flow_pb2.CreateFlowVersionRequest(flow_id=active, graph=VALID_GRAPHS[2]))
    paused = flow(f"{label}-paused", VALID_GRAPHS[2])
    call(flows.ActivateFlow, flow_pb2.ActivateFlowRequest(id=paused))
    call(flows.PauseFlow, flow_pb2.PauseFlowRequest(id=paused))
    archived = flow(f"{label}-archived", VALID_GRAPHS[0])
    call(flows.ActivateFlow, flow_pb2.ActivateFlowRequest(id=archived))
    call(flows.ArchiveFlow, flow_pb2.ArchiveFlowRequest(id=archived))

    vips = segment_pb2.SegmentRule(field="tags", operator="contains", value=struct_pb2.Value(string_value="vip"))
    segment = call(
        segment_pb2_grpc.SegmentServiceStub(channel).CreateSegment,
        segment_pb2.CreateSegmentRequest(
            segment=segment_pb2.Segment(name=f"{label}-vips", match=segment_pb2.SEGMENT_MATCH_ALL, rules=[vips])
        ),
    )
    journey = journey_pb2.Journey(
        name=f"{label}-journey",
        flow_id=active,
        audience_segment_id=segment.id,
        # A schedule that never fires during a run: background work would blur the row checks.
        entry_schedule=journey_pb2.EntrySchedule(cron="0 0 1 1 *", timezone="Europe/Paris"),
        goals=[journey_pb2.Goal(name="bought", event_type="order.paid", filter="data.total > 10")],
        exit_criteria=[journey_pb2.ExitCriterion(event_type="unsubscribed")],
        frequency_cap=journey_pb2.FrequencyCap(max_messages=3, time_window="7d", channel="email"),
        quiet_hours=journey_pb2.QuietHours(start="22:00", end="08:00", timezone="Europe/Paris"),
    )
    call(journey_pb2_grpc.JourneyServiceStub(channel).CreateJourney, journey_pb2.CreateJourneyRequest(journey=journey))
    customers = customer_pb2_grpc.CustomerServiceStub(channel)
    for participant in ("alice", "bob"):
        customer = customer_pb2.Customer(
            external_id=participant,
            attributes=dict_to_struct({"plan": "pro"}),
            tags=["vip"],
            preferences={"email": True},
            timezone="Europe/Paris",
            email=f"{participant}@example.com",
        )
        call(customers.UpsertCustomer, customer_pb2.UpsertCustomerRequest(customer=customer))
    call(
        trigger_pb2_grpc.TriggerServiceStub(channel).TriggerFlow,
        trigger_pb2.TriggerFlowRequest(flow_id=active, participant_id="alice", context=dict_to_struct({"n": 1})),
    )
    call(
        event_pb2_grpc.EventServiceStub(channel).IngestEvent,
        event_pb2.IngestEventRequest(participant_id="bob", event_type="signup", data=dict_to_struct({"n": 1})),
    )
    hook = node_type_pb2.NodeType(
        key="my_hook",
        category=node_type_pb2.NODE_CATEGORY_ACTION,
        config_schema=dict_to_struct({"type": "object", "properties": {"n": {"type": "integer"}}}),
        endpoint_url="https://hooks.example.com/x",
    )
    call(
        node_type_pb2_grpc.NodeTypeServiceStub(channel).RegisterNodeType,
        node_type_pb2.RegisterNodeTypeRequest(node_type=hook),
    )
    return call.ids


@dataclass
class Answer:
    """How the API answered one call."""

    call: FuzzCall
    code: StatusCode
    details: str
    body: bytes | None
    seconds: float = 0.0


@dataclass
class Tally:
    """What the run sent and got."""

    seed: int
    started: float = field(default_factory=time.monotonic)
    requests: int = 0
    generated: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    by_method: dict[str, Counter[str]] = field(default_factory=dict)
    rejected_verified: int = 0
    rejected_unverified: int = 0
    methods_done: set[str] = field(default_factory=set)
    # Seconds spent waiting for answers and reading fingerprints; the rest of the elapsed time is generation.
    seconds: dict[str, float] = field(default_factory=dict)
    slowest: list[Answer] = field(default_factory=list)

    @contextmanager
    def timing(self, what: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.seconds[what] = self.seconds.get(what, 0.0) + time.monotonic() - started

    def count(self, answers: list[Answer]) -> None:
        for answer in answers:
            self.requests += 1
            self.codes[answer.code.name] += 1
            self.by_method.setdefault(str(answer.call.method), Counter())[answer.code.name] += 1
        self.slowest = sorted([*self.slowest, *answers], key=lambda answer: answer.seconds, reverse=True)[:3]

    def report(self) -> str:
        elapsed = time.monotonic() - self.started
        lines = [
            f"fuzzer seed {self.seed} (KALCIFER_FUZZ_SEED={self.seed} replays it)",
            f"requests sent: {self.requests} ({self.generated} generated, the rest replays of rejected calls) "
            f"in {elapsed:.1f}s ({self.requests / max(elapsed, 1e-9):.0f}/s) over {len(self.methods_done)} methods",
            "seconds spent: " + ", ".join(f"{what} {spent:.1f}" for what, spent in self.seconds.items()),
            "status codes: " + ", ".join(f"{code} {n}" for code, n in self.codes.most_common()),
            "slowest answers:",
            *(f"  {a.seconds:.2f}s {a.code.name} {a.call.method} {a.call.describe(200)}" for a in self.slowest),
            f"rejected calls checked to change no row: {self.rejected_verified} "
            f"(not checkable, their replay succeeded: {self.rejected_unverified})",
        ]
        return "\n".join(lines)


class Fuzzer:
    """Sends batches of fuzzed calls to the suite's API and checks every answer, the processes and the rows."""

    def __init__(self, suite: Suite, tenant: Tenant, pools: Pools) -> None:
        self.suite = suite
        self.channel = grpc.insecure_channel(suite.address("api"), options=CHANNEL_OPTIONS)
        self.credentials = Credentials(tenant_key=tenant.key, admin_token=suite.admin_token)
        self.pools = pools
        self.strategies = RequestStrategies(pools)
        self.fingerprints = DatabaseFingerprints(suite.database_url)
        self.tally = Tally(SEED)
        self._callables: dict[str, grpc.UnaryUnaryMultiCallable[bytes, bytes]] = {}
        self._last: Fingerprint | None = None
        self._batches = 0

    def close(self) -> None:
        self.fingerprints.close()
        self.channel.close()

    def settled(self) -> Fingerprint:
        """The database's fingerprint once background work of earlier calls has stopped."""
        with self.tally.timing("reading fingerprints"):
            return self.fingerprints.settled()

    def _take(self) -> Fingerprint:
        with self.tally.timing("reading fingerprints"):
            return self.fingerprints.take()

    def _callable(self, method: PublicMethod) -> grpc.UnaryUnaryMultiCallable[bytes, bytes]:
        if method.path not in self._callables:
            # No (de)serializers: bodies travel as the bytes the fuzzer made, answers come back as bytes.
            self._callables[method.path] = self.channel.unary_unary(
                method.path, request_serializer=None, response_deserializer=None
            )
        return self._callables[method.path]

    def send(self, batch: list[FuzzCall]) -> list[Answer]:
        """All calls of `batch` in flight at once; their answers in order."""
        started = time.monotonic()
        finished: dict[int, float] = {}

        def on_done(index: int) -> Callable[[Any], None]:
            return lambda _: finished.__setitem__(index, time.monotonic())

        futures: list[grpc.CallFuture[bytes]] = []
        for index, call in enumerate(batch):
            future = self._callable(call.method).future(call.body, metadata=call.metadata, timeout=CALL_TIMEOUT_SECONDS)
            future.add_done_callback(on_done(index))
            futures.append(future)
        with self.tally.timing("waiting for answers"):
            answers = [self._answer(call, future) for call, future in zip(batch, futures, strict=True)]
        for index, answer in enumerate(answers):
            answer.seconds = finished.get(index, time.monotonic()) - started
        self.tally.count(answers)
        return answers

    @staticmethod
    def _answer(call: FuzzCall, future: grpc.CallFuture[bytes]) -> Answer:
        try:
            return Answer(call, StatusCode.OK, "", future.result())
        except grpc.RpcError as error:
            if not isinstance(error, grpc.Call):
                raise
            return Answer(call, error.code(), error.details() or "", None)

    def _check_codes(self, answers: list[Answer]) -> None:
        wrong = [answer for answer in answers if answer_problem(answer) is not None]
        assert not wrong, f"{len(wrong)} calls got a status a fuzzed call must never get (seed {SEED}):\n" + "\n".join(
            f"  {a.call.method} -> {a.code.name} {a.details!r}\n    {a.call.describe()}" for a in wrong[:5]
        )

    def _check_unchanged(self, before: Fingerprint, answers: list[Answer], what: str) -> Fingerprint:
        after = self._take()
        changed = changed_tables(before, after)
        assert not changed, f"{what} changed rows {changed} (seed {SEED}); the calls:\n" + "\n".join(
            # Every call (each cut short): the one that wrote is rarely among the first few.
            f"  {a.call.method} -> {a.code.name} {a.details!r}\n    {a.call.describe(300)}"
            for a in answers
        )
        return after

    def check_processes(self, *, health: bool) -> None:
        """Every process is alive (and, with `health`, SERVING)."""
        for name in SERVICE_NAMES:
            process = self.suite.processes[name]
            assert process.poll() is None, f"{name} died with exit code {process.returncode} (seed {SEED})"
            if health:
                status = health_status(self.suite.address(name), timeout=10)
                assert status == health_pb2.HealthCheckResponse.SERVING, f"{name} health is {status} (seed {SEED})"

    def run_batch(self, batch: list[FuzzCall]) -> None:
        """Send `batch` and check it: codes, processes, rows untouched by rejected calls."""
        self.tally.generated += len(batch)
        before = self._last if self._last is not None else self.settled()
        self._last = None  # until this batch is checked (a failed check leaves the next batch a fresh reading)
        answers = self.send(batch)
        self._batches += 1
        self.check_processes(health=self._batches % HEALTH_EVERY_BATCHES == 0)
        self._check_codes(answers)
        rejected = [a for a in answers if a.code != StatusCode.OK]
        self._harvest(answers)
        method = batch[0].method
        if method.read_only or len(rejected) == len(answers):
            what = "a read-only method's batch" if method.read_only else "a batch of rejected calls"
            self._last = self._check_unchanged(before, answers, what)
            self.tally.rejected_verified += len(rejected)
            return
        self._replay(rejected)

    def _replay(self, rejected: list[Answer]) -> None:
        """Send the rejected calls of a batch again, alone, until they are all rejected (then check no row changed)
        or three rounds have passed (what kept succeeding is counted as not checkable)."""
        pending = [answer.call for answer in rejected]
        for _ in range(3):
            if not pending:
                return
            before = self.settled()
            self._last = None
            answers = self.send(pending)
            self._check_codes(answers)
            self._harvest(answers)
            still = [a for a in answers if a.code != StatusCode.OK]
            if len(still) == len(answers):
                self._last = self._check_unchanged(before, answers, "rejected calls sent again")
                self.tally.rejected_verified += len(still)
                return
            self.tally.rejected_unverified += len(answers) - len(still)
            pending = [answer.call for answer in still]
        self.tally.rejected_unverified += len(pending)

    def _harvest(self, answers: list[Answer]) -> None:
        """Ids and page tokens from successful answers go to the pools, for later calls to name."""
        for answer in answers:
            if answer.body is None or answer.call.method.admin:
                continue
            try:
                response = answer.call.method.response_class.FromString(answer.body)
            except DecodeError:
                continue
            _harvest_message(response, self.pools, depth=0)
            if len(answer.call.body) <= MAX_TEMPLATE_BYTES:
                request = answer.call.method.request_class.DESCRIPTOR.full_name
                self.pools.add(self.pools.templates.setdefault(request, []), answer.call.body, limit=50)
            if token := getattr(response, "next_page_token", ""):
                request = answer.call.method.request_class.DESCRIPTOR.full_name
                self.pools.add(self.pools.page_tokens.setdefault(request, []), token, limit=50)


def _harvest_message(message: Message, pools: Pools, depth: int) -> None:
    for descriptor, value in message.ListFields():
        if descriptor.name in ("id", "instance_id", "instance_ids", "flow_id") and descriptor.message_type is None:
            for item in value if descriptor.is_repeated else (value,):
                if _is_uuid(item):
                    pools.add(pools.own_ids, item)
        elif descriptor.message_type is not None and depth < 2 and not descriptor.message_type.GetOptions().map_entry:
            items = list(value)[:5] if descriptor.is_repeated else [value]
            for item in items:
                _harvest_message(item, pools, depth + 1)


def _is_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


@pytest.fixture(scope="module")
def fuzzer(servers: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzer]:
    """The suite on its own database and Redis db (rate limits lifted), a fuzzed tenant and another one, seeded."""
    settings_env = {"RATE_LIMIT_PER_SECOND": "1000000", "RATE_LIMIT_BURST": "1000000", "LOG_LEVEL": "WARNING"}
    log_dir: Path = tmp_path_factory.mktemp("fuzz-suite-logs")
    with (
        scratch_database(servers[0]) as database_url,
        scratch_redis_db(servers[1]) as redis_url,
        running_suite(database_url, redis_url, log_dir, settings_env) as suite,
        grpc.insecure_channel(suite.address("api")) as channel,
    ):
        fuzzed, other, operated = (new_tenant(suite, f"fuzz-{name}") for name in ("fuzzed", "other", "operated"))
        pools = Pools(graphs=list(VALID_GRAPHS))
        pools.own_ids += _seed_tenant(channel, fuzzed, "own", templates=pools)
        pools.foreign_ids += _seed_tenant(channel, other, "theirs")
        admin = tenant_pb2_grpc.TenantServiceStub(channel)
        keys = admin.ListApiKeys(
            tenant_pb2.ListApiKeysRequest(tenant_id=str(operated.id)), metadata=bearer(suite.admin_token)
        )
        # Tenant ids for TenantService's calls; the fuzzed tenant's own key id is never handed out (revoking it
        # would end the run), the operated tenant's are.
        pools.foreign_ids += [str(t.id) for t in (fuzzed, other, operated)] + [k.id for k in keys.api_keys]
        listed = node_type_pb2_grpc.NodeTypeServiceStub(channel).ListNodeTypes(
            node_type_pb2.ListNodeTypesRequest(), metadata=fuzzed.auth
        )
        pools.node_types[:] = [n.key for n in listed.node_types]
        running = Fuzzer(suite, fuzzed, pools)
        try:
            _collect_first_page_tokens(running)
            print(f"\nfuzzing {len(METHODS)} public methods with seed {SEED} (KALCIFER_FUZZ_SEED to replay)")
            yield running
        finally:
            running.close()


def _collect_first_page_tokens(fuzzer: Fuzzer) -> None:
    """A real `next_page_token` of every list method (pages of one), for fuzzed calls to tamper with; a method
    that needs a parent id gets each seeded id in turn."""
    for method in METHODS:
        fields = method.request_class.DESCRIPTOR.fields_by_name
        if "page_size" not in fields or "next_page_token" not in method.response_class.DESCRIPTOR.fields_by_name:
            continue
        parents = [name for name in fields if name.endswith("_id")]
        token = fuzzer.credentials.admin_token if method.admin else fuzzer.credentials.tenant_key
        for parent in [*fuzzer.pools.own_ids, *fuzzer.pools.foreign_ids] if parents else [""]:
            request = method.request_class(page_size=1, **dict.fromkeys(parents, parent))
            try:
                body = fuzzer._callable(method)(request.SerializeToString(), metadata=bearer(token), timeout=10)
            except grpc.RpcError:
                continue
            next_token = getattr(method.response_class.FromString(body), "next_page_token", "")
            if next_token:
                tokens = fuzzer.pools.page_tokens.setdefault(method.request_class.DESCRIPTOR.full_name, [])
                fuzzer.pools.add(tokens, next_token)
                break


# --- the tests -----------------------------------------------------------------------------------------------------


def test_every_public_service_is_fuzzed() -> None:
    """Each .proto of the public package contributes its services, each service at least one method."""
    services = {method.descriptor.containing_service.full_name for method in METHODS}
    assert {"kalcifer.v1.FlowService", "kalcifer.v1.TenantService", "kalcifer.v1.AnalyticsService"} <= services
    assert len(METHODS) * EXAMPLES_PER_METHOD * BATCH_SIZE >= MIN_REQUESTS


@pytest.mark.parametrize("method", METHODS, ids=str)
@seed(SEED)
@settings(
    max_examples=EXAMPLES_PER_METHOD,
    deadline=None,
    database=None,
    phases=[Phase.generate],
    suppress_health_check=list(HealthCheck),
)
@given(data=st.data())
def test_fuzzed_calls_get_a_precise_answer_and_rejected_ones_change_no_row(
    fuzzer: Fuzzer, method: PublicMethod, data: st.DataObject
) -> None:
    batch = data.draw(
        st.lists(calls(method, fuzzer.strategies, fuzzer.credentials), min_size=BATCH_SIZE, max_size=BATCH_SIZE),
        label="batch",
    )
    fuzzer.run_batch(batch)
    fuzzer.tally.methods_done.add(str(method))


def test_oversize_messages_are_refused_without_harm(fuzzer: Fuzzer) -> None:
    """One message over the 16 MiB limit per service (a valid message plus a huge unknown field): refused
    RESOURCE_EXHAUSTED, nothing stored, every process alive."""
    first_of_each = {m.descriptor.containing_service.full_name: m for m in reversed(METHODS)}.values()
    huge_unknown_field = b"\xc2\x3e" + _varint(OVERSIZE_BYTES) + b"\x00" * OVERSIZE_BYTES  # field 1000, bytes
    batch = [
        FuzzCall(
            method,
            huge_unknown_field,
            bearer(fuzzer.credentials.admin_token if method.admin else fuzzer.credentials.tenant_key),
            lambda: f"<{OVERSIZE_BYTES} bytes of unknown field 1000>",
        )
        for method in first_of_each
    ]
    before = fuzzer.settled()
    answers = fuzzer.send(batch)
    assert {a.code for a in answers} == {StatusCode.RESOURCE_EXHAUSTED}, [(str(a.call.method), a.code) for a in answers]
    fuzzer._check_unchanged(before, answers, "oversize messages")
    fuzzer.check_processes(health=True)


def _varint(number: int) -> bytes:
    out = bytearray()
    while True:
        low, number = number & 0x7F, number >> 7
        out.append(low | (0x80 if number else 0))
        if not number:
            return bytes(out)


def test_the_run_made_enough_requests_and_every_process_survived(fuzzer: Fuzzer) -> None:
    """The figures of the run (printed), at least MIN_REQUESTS requests, and three healthy processes."""
    fuzzer.check_processes(health=True)
    report = fuzzer.tally.report()
    print("\n" + report)
    if len(fuzzer.tally.methods_done) < len(METHODS):
        pytest.skip(f"only {len(fuzzer.tally.methods_done)} of {len(METHODS)} methods were fuzzed in this run")
    assert fuzzer.tally.generated >= MIN_REQUESTS, report
