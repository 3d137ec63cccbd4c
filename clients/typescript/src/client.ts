/**
 * `createKalciferClient`: one gRPC (HTTP/2) connection to the public API, carrying the API key on every call, with
 * a typed client per `kalcifer.v1` service whose failures are `KalciferError`s.
 */
import type { DescService } from "@bufbuild/protobuf";
import { createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { KalciferError } from "./errors.js";
import { AnalyticsService } from "./gen/kalcifer/v1/analytics_pb.js";
import { ChannelService } from "./gen/kalcifer/v1/channel_pb.js";
import { CustomerService } from "./gen/kalcifer/v1/customer_pb.js";
import { DeliveryService } from "./gen/kalcifer/v1/delivery_pb.js";
import { EventService } from "./gen/kalcifer/v1/event_pb.js";
import { FlowService } from "./gen/kalcifer/v1/flow_pb.js";
import { InstanceService } from "./gen/kalcifer/v1/instance_pb.js";
import { JourneyService } from "./gen/kalcifer/v1/journey_pb.js";
import { NodeTypeService } from "./gen/kalcifer/v1/node_type_pb.js";
import { SegmentService } from "./gen/kalcifer/v1/segment_pb.js";
import { TemplateService } from "./gen/kalcifer/v1/template_pb.js";
import { TenantService } from "./gen/kalcifer/v1/tenant_pb.js";
import { TriggerService } from "./gen/kalcifer/v1/trigger_pb.js";

/** The deadline of a call that names none: the same default as the services' own RPC_TIMEOUT_SECONDS. */
export const DEFAULT_TIMEOUT_MS = 10_000;

export interface KalciferClientOptions {
  /**
   * The public API: `host:port` or `http://host:port` for plaintext gRPC (what `make run` serves on
   * localhost:4500), `https://host:port` for TLS (the API started with TLS_CERT_FILE).
   */
  readonly address: string;
  /**
   * Sent as `authorization: Bearer <apiKey>` on every call: a tenant's raw API key, or, for `tenants`
   * (TenantService), the operator's KALCIFER_ADMIN_TOKEN.
   */
  readonly apiKey: string;
  /** Deadline of every call that passes no `timeoutMs` of its own; DEFAULT_TIMEOUT_MS when unset. */
  readonly timeoutMs?: number;
  /** For an `https://` address: PEM of the CA(s) to check the API's certificate against instead of the system's. */
  readonly tlsCaPem?: string;
}

/** The client's property for each public service, e.g. `client.flows` for FlowService. */
export const SERVICES = {
  tenants: TenantService,
  flows: FlowService,
  journeys: JourneyService,
  customers: CustomerService,
  segments: SegmentService,
  triggers: TriggerService,
  events: EventService,
  instances: InstanceService,
  nodeTypes: NodeTypeService,
  analytics: AnalyticsService,
  channels: ChannelService,
  templates: TemplateService,
  deliveries: DeliveryService,
} as const;

/** A typed client per public service (each method takes the request's fields and returns a Promise). */
export type KalciferClient = {
  readonly [Name in keyof typeof SERVICES]: Client<(typeof SERVICES)[Name]>;
} & {
  /** Closes the connection; calls made afterwards fail. */
  close(): void;
};

/** The base URL of `address`: a bare `host:port` means plaintext. */
export function baseUrlOf(address: string): string {
  return /^https?:\/\//.test(address) ? address : `http://${address}`;
}

function bearer(apiKey: string): Interceptor {
  return (next) => async (request) => {
    request.header.set("authorization", `Bearer ${apiKey}`);
    return next(request);
  };
}

/**
 * connect's client for `service`, with each unary method's failure re-thrown as a KalciferError. (Not in an
 * interceptor: the transport turns whatever an interceptor throws into a plain ConnectError, and a call past its
 * deadline into its own.)
 */
function serviceClient<S extends DescService>(service: S, transport: Transport): Client<S> {
  const client = createClient(service, transport) as Record<string, unknown>;
  for (const method of service.methods) {
    if (method.methodKind !== "unary") {
      continue; // kalcifer.v1 has none; a streaming method would keep connect's own errors
    }
    const call = client[method.localName] as (...args: unknown[]) => Promise<unknown>;
    client[method.localName] = (...args: unknown[]) =>
      call(...args).catch((error: unknown) => {
        throw KalciferError.from(error);
      });
  }
  return client as Client<S>;
}

/** A client of the API at `options.address`, authenticated with `options.apiKey`. */
export function createKalciferClient(options: KalciferClientOptions): KalciferClient {
  const baseUrl = baseUrlOf(options.address);
  const sessionManager = new Http2SessionManager(
    baseUrl,
    undefined,
    options.tlsCaPem === undefined ? undefined : { ca: options.tlsCaPem },
  );
  const transport = createGrpcTransport({
    baseUrl,
    sessionManager,
    interceptors: [bearer(options.apiKey)],
    defaultTimeoutMs: options.timeoutMs ?? DEFAULT_TIMEOUT_MS,
  });
  const clients = Object.fromEntries(
    Object.entries(SERVICES).map(([name, service]) => [name, serviceClient(service, transport)]),
  ) as Omit<KalciferClient, "close">;
  return {
    ...clients,
    close: () => sessionManager.abort(),
  };
}
