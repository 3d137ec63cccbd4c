/**
 * The SDK against a running Kalcifer suite (its address and a tenant's key from the environment): a flow created,
 * activated, triggered and its instance read back with its steps; an instance resumed by an event; and the
 * server's errors arriving as typed KalciferErrors.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";
import {
  Code,
  createKalciferClient,
  FlowStatus,
  InstanceStatus,
  KalciferError,
  StepStatus,
  type FlowGraphSchema,
  type KalciferClient,
} from "../src/index.js";
import type { JsonObject, MessageInitShape } from "@bufbuild/protobuf";
import { eventually, NO_SUITE, suiteFromEnvironment } from "./support.js";

const suite = suiteFromEnvironment();
const FINISH_WITHIN_MS = 30_000;

/** A TriggerFlow entry, then a condition on the trigger context: `pro` participants get a greeting computed in CEL. */
const GREETING: MessageInitShape<typeof FlowGraphSchema> = {
  nodes: [
    { id: "entry", type: "webhook_entry", config: { webhook_path: `sdk-ts-${randomUUID()}` } },
    { id: "is_pro", type: "condition", config: { field: "plan", operator: "eq", value: "pro" } },
    { id: "greet", type: "custom_code", config: { expression: "'hello ' + name", output: "greeting" } },
    { id: "bye", type: "exit", config: {} },
  ],
  edges: [
    { source: "entry", target: "is_pro" },
    { source: "is_pro", target: "greet", branch: "true" },
    { source: "is_pro", target: "bye", branch: "false" },
  ],
};

/** An instance that parks on wait_for_event until the participant's `confirmed` event arrives. */
const CONFIRMATION: MessageInitShape<typeof FlowGraphSchema> = {
  nodes: [
    { id: "entry", type: "webhook_entry", config: { webhook_path: `sdk-ts-${randomUUID()}` } },
    { id: "await", type: "wait_for_event", config: { event_type: "confirmed", timeout: "1h" } },
    { id: "done", type: "custom_code", config: { expression: "event.code" } },
    { id: "late", type: "exit", config: {} },
  ],
  edges: [
    { source: "entry", target: "await" },
    { source: "await", target: "done", branch: "event_received" },
    { source: "await", target: "late", branch: "timed_out" },
  ],
};

function finished(status: InstanceStatus): boolean {
  return [InstanceStatus.COMPLETED, InstanceStatus.FAILED, InstanceStatus.EXITED].includes(status);
}

async function rejection(call: Promise<unknown>): Promise<KalciferError> {
  try {
    await call;
  } catch (error) {
    assert.ok(error instanceof KalciferError, `expected a KalciferError, got ${String(error)}`);
    return error;
  }
  assert.fail("the call succeeded");
}

describe("against the running suite", { skip: suite === undefined ? NO_SUITE : false, timeout: 120_000 }, () => {
  let client: KalciferClient;

  before(() => {
    assert.ok(suite);
    client = createKalciferClient({ address: suite.address, apiKey: suite.apiKey });
  });

  after(() => client.close());

  async function activeFlow(name: string, graph: MessageInitShape<typeof FlowGraphSchema>): Promise<string> {
    const created = await client.flows.createFlow({ flow: { name }, graph, requestId: randomUUID() });
    assert.equal(created.status, FlowStatus.DRAFT);
    assert.equal(created.latestVersionNumber, 1);
    const activated = await client.flows.activateFlow({ id: created.id });
    assert.equal(activated.status, FlowStatus.ACTIVE);
    assert.equal(activated.activeVersionNumber, 1);
    return created.id;
  }

  test("a flow is created, activated, triggered, and its instance is read back with its steps", async () => {
    const flowId = await activeFlow(`greeting ${randomUUID()}`, GREETING);
    const version = await client.flows.getFlowVersion({ flowId, versionNumber: 1 });
    assert.deepEqual(
      version.graph?.nodes.map((node) => node.id),
      ["entry", "is_pro", "greet", "bye"],
    );

    const participantId = `ada-${randomUUID()}`;
    const { instanceId } = await client.triggers.triggerFlow({
      flowId,
      participantId,
      context: { plan: "pro", name: "Ada" },
      requestId: randomUUID(),
    });
    assert.match(instanceId, /^[0-9a-f-]{36}$/);

    const instance = await eventually(
      () => client.instances.getInstance({ id: instanceId }),
      (seen) => finished(seen.status),
      { withinMs: FINISH_WITHIN_MS, what: `instance ${instanceId} finished` },
    );
    assert.equal(instance.status, InstanceStatus.COMPLETED, instance.exitReason);
    assert.equal(instance.flowId, flowId);
    assert.equal(instance.participantId, participantId);
    assert.equal(instance.versionNumber, 1);
    assert.equal(instance.context?.["plan"], "pro");
    const accumulated = instance.context?.["accumulated"] as JsonObject | undefined;
    assert.deepEqual(accumulated?.["greet"], { greeting: "hello Ada" }, "greet's result is in the context");
    assert.ok(instance.enterTime && instance.endTime, "a finished instance has its enter and end times");

    const { steps } = await client.instances.listExecutionSteps({ instanceId });
    assert.deepEqual(
      steps.map((step) => [step.nodeId, step.nodeType, step.status]),
      [
        ["entry", "webhook_entry", StepStatus.COMPLETED],
        ["is_pro", "condition", StepStatus.COMPLETED],
        ["greet", "custom_code", StepStatus.COMPLETED],
      ],
    );
    assert.equal(steps[1]?.branch, "true");
    assert.deepEqual(steps[2]?.output, { greeting: "hello Ada" });

    const listed = await client.instances.listInstances({ flowId, participantId });
    assert.deepEqual(
      listed.instances.map((seen) => seen.id),
      [instanceId],
    );
  });

  test("an instance waits for its participant's event and finishes when the event is ingested", async () => {
    const flowId = await activeFlow(`confirmation ${randomUUID()}`, CONFIRMATION);
    const participantId = `bob-${randomUUID()}`;
    const { instanceId } = await client.triggers.triggerFlow({ flowId, participantId });

    const waiting = await eventually(
      () => client.instances.getInstance({ id: instanceId }),
      (seen) => seen.status !== InstanceStatus.RUNNING,
      { withinMs: FINISH_WITHIN_MS, what: `instance ${instanceId} parked` },
    );
    assert.equal(waiting.status, InstanceStatus.WAITING);
    assert.deepEqual(waiting.currentNodes, ["await"]);

    const ingested = await client.events.ingestEvent({
      participantId,
      eventType: "confirmed",
      data: { code: "C-42" },
      requestId: randomUUID(),
    });
    assert.ok(ingested.eventId);

    const instance = await eventually(
      () => client.instances.getInstance({ id: instanceId }),
      (seen) => finished(seen.status),
      { withinMs: FINISH_WITHIN_MS, what: `instance ${instanceId} finished after the event` },
    );
    assert.equal(instance.status, InstanceStatus.COMPLETED, instance.exitReason);
    const { steps } = await client.instances.listExecutionSteps({ instanceId });
    assert.deepEqual(
      steps.map((step) => [step.nodeId, step.status, step.branch]),
      [
        ["entry", StepStatus.COMPLETED, ""],
        ["await", StepStatus.COMPLETED, "event_received"],
        ["done", StepStatus.COMPLETED, ""],
      ],
    );
    assert.deepEqual(steps[2]?.output, { result: "C-42" });
  });

  test("a draft flow refuses a trigger with FAILED_PRECONDITION and the reason FLOW_NOT_ACTIVE", async () => {
    const draft = await client.flows.createFlow({ flow: { name: `draft ${randomUUID()}` }, graph: GREETING });
    const error = await rejection(client.triggers.triggerFlow({ flowId: draft.id, participantId: "ada" }));
    assert.equal(error.code, Code.FailedPrecondition);
    assert.equal(error.reason, "FLOW_NOT_ACTIVE");
    assert.equal(error.domain, "kalcifer.dev");
  });

  test("an invalid graph is INVALID_ARGUMENT with one field violation per problem", async () => {
    const graph: MessageInitShape<typeof FlowGraphSchema> = {
      nodes: [
        { id: "entry", type: "webhook_entry", config: { webhook_path: "broken" } },
        { id: "nap", type: "wait", config: { duration: "30" } },
        { id: "orphan", type: "no_such_node", config: {} },
      ],
      edges: [{ source: "entry", target: "nap" }],
    };
    const error = await rejection(client.flows.createFlow({ flow: { name: `broken ${randomUUID()}` }, graph }));
    assert.equal(error.code, Code.InvalidArgument);
    assert.ok(error.violations.length >= 2, JSON.stringify(error.violations));
    const described = error.violations.map((violation) => `${violation.field}: ${violation.description}`).join("\n");
    assert.match(described, /nodes\[1\]/, "the bad duration of node `nap` is named");
    assert.match(described, /nodes\[2\]/, "the unknown type of node `orphan` is named");
  });

  test("an unknown instance is NOT_FOUND naming the resource", async () => {
    const missing = randomUUID();
    const error = await rejection(client.instances.getInstance({ id: missing }));
    assert.equal(error.code, Code.NotFound);
    assert.equal(error.resource?.resourceName, missing);
  });

  test("a wrong API key is UNAUTHENTICATED", async () => {
    assert.ok(suite);
    const stranger = createKalciferClient({ address: suite.address, apiKey: "kal_not-a-key" });
    try {
      const error = await rejection(stranger.flows.listFlows({}));
      assert.equal(error.code, Code.Unauthenticated);
      assert.equal(error.reason, "UNAUTHENTICATED");
    } finally {
      stranger.close();
    }
  });
});
