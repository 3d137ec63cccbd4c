/**
 * Kalcifer's TypeScript client: `createKalciferClient` and `KalciferError`, plus every message, enum and service of
 * the public contract (`kalcifer.v1`), generated from protos/ by `npm run build`.
 */
export { Code } from "@connectrpc/connect";
export {
  baseUrlOf,
  createKalciferClient,
  DEFAULT_TIMEOUT_MS,
  SERVICES,
  type KalciferClient,
  type KalciferClientOptions,
} from "./client.js";
export { KalciferError, type FieldViolation, type ResourceInfo } from "./errors.js";
export * from "./gen/kalcifer/v1/analytics_pb.js";
export * from "./gen/kalcifer/v1/channel_pb.js";
export * from "./gen/kalcifer/v1/common_pb.js";
export * from "./gen/kalcifer/v1/customer_pb.js";
export * from "./gen/kalcifer/v1/delivery_pb.js";
export * from "./gen/kalcifer/v1/event_pb.js";
export * from "./gen/kalcifer/v1/flow_pb.js";
export * from "./gen/kalcifer/v1/instance_pb.js";
export * from "./gen/kalcifer/v1/journey_pb.js";
export * from "./gen/kalcifer/v1/node_type_pb.js";
export * from "./gen/kalcifer/v1/segment_pb.js";
export * from "./gen/kalcifer/v1/template_pb.js";
export * from "./gen/kalcifer/v1/tenant_pb.js";
export * from "./gen/kalcifer/v1/trigger_pb.js";
