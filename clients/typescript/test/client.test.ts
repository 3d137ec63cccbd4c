/**
 * The client's own behaviour, against an in-process gRPC server (connect-node over HTTP/2, no Kalcifer needed):
 * the API key on every call, deadlines, and statuses whose `grpc-status-details-bin` the running suite cannot be
 * made to send on demand (RATE_LIMITED with RetryInfo), decoded into KalciferError.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import http2 from "node:http2";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import type { DescService } from "@bufbuild/protobuf";
import { ConnectError, type ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import * as sdk from "../src/index.js";
import {
  baseUrlOf,
  Code,
  createKalciferClient,
  FlowService,
  InstanceService,
  KalciferError,
  SERVICES,
  type KalciferClient,
} from "../src/index.js";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  ResourceInfoSchema,
  RetryInfoSchema,
} from "../src/gen/google/rpc/error_details_pb.js";

const seenAuthorization: (string | null)[] = [];

function routes(router: ConnectRouter): void {
  router.service(FlowService, {
    listFlows(_request, context) {
      seenAuthorization.push(context.requestHeader.get("authorization"));
      throw new ConnectError("tenant over its budget", Code.ResourceExhausted, undefined, [
        { desc: ErrorInfoSchema, value: { reason: "RATE_LIMITED", domain: "kalcifer.dev" } },
        { desc: RetryInfoSchema, value: { retryDelay: { seconds: 1n, nanos: 250_000_000 } } },
      ]);
    },
    createFlow() {
      throw new ConnectError("invalid graph", Code.InvalidArgument, undefined, [
        {
          desc: BadRequestSchema,
          value: {
            fieldViolations: [
              { field: "nodes[1].config.duration", description: "not a duration" },
              { field: "edges[0].target", description: "no node 'x'" },
            ],
          },
        },
      ]);
    },
    async activateFlow(_request, context) {
      // Never answers by itself: the caller's deadline must end the call.
      await new Promise((resolve) => context.signal.addEventListener("abort", resolve));
      throw new ConnectError("gave up", Code.Canceled);
    },
  });
  router.service(InstanceService, {
    getInstance(request) {
      throw new ConnectError(`instance '${request.id}' not found`, Code.NotFound, undefined, [
        { desc: ResourceInfoSchema, value: { resourceType: "instance", resourceName: request.id } },
      ]);
    },
  });
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

describe("the client against an in-process gRPC server", { timeout: 30_000 }, () => {
  let server: http2.Http2Server;
  let client: KalciferClient;

  before(async () => {
    server = http2.createServer(connectNodeAdapter({ routes, grpc: true, connect: false, grpcWeb: false }));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { port } = server.address() as AddressInfo;
    client = createKalciferClient({ address: `127.0.0.1:${port}`, apiKey: "kal_test-key", timeoutMs: 5_000 });
  });

  after(async () => {
    client.close();
    await new Promise((resolve) => server.close(resolve));
  });

  test("every call carries the API key as a bearer token", async () => {
    seenAuthorization.length = 0;
    await rejection(client.flows.listFlows({}));
    assert.deepEqual(seenAuthorization, ["Bearer kal_test-key"]);
  });

  test("RATE_LIMITED arrives with its reason and the RetryInfo delay", async () => {
    const error = await rejection(client.flows.listFlows({}));
    assert.equal(error.code, Code.ResourceExhausted);
    assert.equal(error.rawMessage, "tenant over its budget");
    assert.equal(error.reason, "RATE_LIMITED");
    assert.equal(error.domain, "kalcifer.dev");
    assert.equal(error.retryDelayMs, 1250);
    assert.deepEqual(error.violations, []);
    assert.ok(error.cause instanceof ConnectError);
  });

  test("INVALID_ARGUMENT carries every field violation", async () => {
    const error = await rejection(client.flows.createFlow({ flow: { name: "x" } }));
    assert.equal(error.code, Code.InvalidArgument);
    assert.equal(error.reason, undefined);
    assert.equal(error.retryDelayMs, undefined);
    assert.deepEqual(error.violations, [
      { field: "nodes[1].config.duration", description: "not a duration" },
      { field: "edges[0].target", description: "no node 'x'" },
    ]);
  });

  test("NOT_FOUND names the resource", async () => {
    const error = await rejection(client.instances.getInstance({ id: "42" }));
    assert.equal(error.code, Code.NotFound);
    assert.deepEqual(error.resource, { resourceType: "instance", resourceName: "42" });
  });

  test("a call's own deadline ends a call the server never answers", async () => {
    const started = Date.now();
    const error = await rejection(client.flows.activateFlow({ id: "slow" }, { timeoutMs: 200 }));
    assert.equal(error.code, Code.DeadlineExceeded);
    assert.ok(Date.now() - started < 4_000, "ended by the 200 ms deadline, not the client's 5 s default");
  });

  test("an unimplemented method is UNIMPLEMENTED, not a crash", async () => {
    const error = await rejection(client.triggers.triggerFlow({ flowId: "f", participantId: "p" }));
    assert.equal(error.code, Code.Unimplemented);
  });

  test("the client has a property for every service the package exports", () => {
    const exported = (Object.values(sdk) as unknown[]).filter(
      (value): value is DescService =>
        typeof value === "object" && value !== null && "kind" in value && value.kind === "service",
    );
    assert.ok(exported.length >= 13, `only ${exported.length} services exported`);
    assert.deepEqual(
      Object.values(SERVICES)
        .map((service) => service.typeName)
        .sort(),
      exported.map((service) => service.typeName).sort(),
    );
    for (const name of Object.keys(SERVICES)) {
      assert.equal(typeof (client as unknown as Record<string, object>)[name], "object", name);
    }
  });

  test("a bare host:port means plaintext gRPC; a URL is kept", () => {
    assert.equal(baseUrlOf("localhost:4500"), "http://localhost:4500");
    assert.equal(baseUrlOf("https://api.example.com:443"), "https://api.example.com:443");
  });
});

/** A self-signed certificate for 127.0.0.1 made by the openssl CLI (as the Python suite's TLS tests make theirs). */
function selfSignedCertificate(): { key: string; cert: string } | undefined {
  const directory = mkdtempSync(join(tmpdir(), "kalcifer-sdk-tls-"));
  try {
    execFileSync(
      "openssl",
      [
        ...["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1"],
        ...["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        ...["-keyout", join(directory, "key.pem"), "-out", join(directory, "cert.pem")],
      ],
      { stdio: "ignore", timeout: 30_000 },
    );
    const read = (name: string): string => readFileSync(join(directory, name), "utf8");
    return { key: read("key.pem"), cert: read("cert.pem") };
  } catch {
    return undefined; // no openssl here: the TLS tests say so and skip
  } finally {
    rmSync(directory, { recursive: true, force: true });
  }
}

const certificate = selfSignedCertificate();

describe(
  "the client over TLS",
  { skip: certificate === undefined ? "needs the openssl CLI to make a certificate" : false, timeout: 30_000 },
  () => {
    let server: http2.Http2SecureServer;
    let address: string;

    before(async () => {
      assert.ok(certificate);
      server = http2.createSecureServer(
        certificate,
        connectNodeAdapter({ routes, grpc: true, connect: false, grpcWeb: false }),
      );
      await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
      address = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
    });

    after(async () => {
      await new Promise((resolve) => server.close(resolve));
    });

    test("an https:// address speaks gRPC over TLS to a server whose CA it is given", async () => {
      assert.ok(certificate);
      const client = createKalciferClient({ address, apiKey: "kal_tls-key", tlsCaPem: certificate.cert });
      try {
        seenAuthorization.length = 0;
        const error = await rejection(client.flows.listFlows({}));
        assert.equal(error.reason, "RATE_LIMITED", "the call reached the server's handler");
        assert.deepEqual(seenAuthorization, ["Bearer kal_tls-key"]);
      } finally {
        client.close();
      }
    });

    test("a certificate no trusted CA signed is refused before any call is sent", async () => {
      const client = createKalciferClient({ address, apiKey: "kal_tls-key", timeoutMs: 5_000 });
      try {
        seenAuthorization.length = 0;
        const error = await rejection(client.flows.listFlows({}));
        assert.match(error.rawMessage, /self-signed certificate/);
        assert.deepEqual(seenAuthorization, []);
      } finally {
        client.close();
      }
    });
  },
);
