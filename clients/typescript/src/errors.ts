/**
 * One error type for every failed call: the gRPC status, plus the `google.rpc` details Kalcifer's API puts in
 * `grpc-status-details-bin` (SPEC 4, "Errors"), decoded and typed so callers branch on `reason` rather than on
 * message text.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  ResourceInfoSchema,
  RetryInfoSchema,
} from "./gen/google/rpc/error_details_pb.js";

/** One problem of an `INVALID_ARGUMENT` request (`google.rpc.BadRequest.FieldViolation`), e.g. a bad graph node. */
export interface FieldViolation {
  /** Path of the offending field, e.g. `nodes[1].config.expression`. */
  readonly field: string;
  readonly description: string;
}

/** The resource a `NOT_FOUND` or `ABORTED` (etag mismatch) status names (`google.rpc.ResourceInfo`). */
export interface ResourceInfo {
  /** e.g. `flow`, `instance`. */
  readonly resourceType: string;
  readonly resourceName: string;
}

/**
 * A call that failed. `code` is the gRPC status code (connect's `Code`: `Code.FailedPrecondition`, ...); the
 * other fields are the status details, each empty when the server sent none of that kind.
 */
export class KalciferError extends Error {
  override readonly name = "KalciferError";
  /** The gRPC status code. */
  readonly code: Code;
  /** The server's message, without the `[code]` prefix that `message` carries. */
  readonly rawMessage: string;
  /** Response headers and trailers of the failed call. */
  readonly metadata: Headers;
  /**
   * `google.rpc.ErrorInfo.reason`: `FLOW_NOT_ACTIVE`, `NO_DRAFT_VERSION`, `ALREADY_IN_FLOW`, `RATE_LIMITED`,
   * `UNAUTHENTICATED`, ... (the SPEC's list); undefined when the status carried no ErrorInfo.
   */
  readonly reason: string | undefined;
  /** `google.rpc.ErrorInfo.domain` (`kalcifer.dev` for Kalcifer's own reasons). */
  readonly domain: string | undefined;
  /** `google.rpc.ErrorInfo.metadata`: what the reason is about, e.g. the flow's status. */
  readonly reasonMetadata: Readonly<Record<string, string>>;
  /** `google.rpc.RetryInfo.retry_delay` in milliseconds: how long to wait before retrying (`RATE_LIMITED`). */
  readonly retryDelayMs: number | undefined;
  /** `google.rpc.BadRequest.field_violations`: every problem of an `INVALID_ARGUMENT` request at once. */
  readonly violations: readonly FieldViolation[];
  /** `google.rpc.ResourceInfo`: what was not found (or changed under an etag). */
  readonly resource: ResourceInfo | undefined;
  /** The error as the transport reported it. */
  override readonly cause: ConnectError;

  /** The KalciferError of anything a call threw (a KalciferError is returned as is). */
  static from(error: unknown): KalciferError {
    return error instanceof KalciferError ? error : new KalciferError(ConnectError.from(error));
  }

  constructor(error: ConnectError) {
    super(error.message, { cause: error });
    this.cause = error;
    this.code = error.code;
    this.rawMessage = error.rawMessage;
    this.metadata = error.metadata;
    const info = error.findDetails(ErrorInfoSchema)[0];
    this.reason = info?.reason;
    this.domain = info?.domain;
    this.reasonMetadata = Object.freeze({ ...info?.metadata });
    const delay = error.findDetails(RetryInfoSchema)[0]?.retryDelay;
    this.retryDelayMs = delay === undefined ? undefined : Number(delay.seconds) * 1000 + delay.nanos / 1e6;
    this.violations = error
      .findDetails(BadRequestSchema)
      .flatMap((badRequest) => badRequest.fieldViolations)
      .map(({ field, description }) => ({ field, description }));
    const resource = error.findDetails(ResourceInfoSchema)[0];
    this.resource =
      resource === undefined
        ? undefined
        : { resourceType: resource.resourceType, resourceName: resource.resourceName };
  }
}
