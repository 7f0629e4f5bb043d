/** Errors the SDK hands the app. */
import type { ErrorEvent } from "./protocol.js";

/** An error answered by the relay (its contract code), or one of the SDK's
 * own: `unreachable` when no relay answered at all, `timeout` when it did
 * not answer in time. */
export class RelayError extends Error {
  /** The contract's error code (`forbidden`, `rate_limited`, ...), `unreachable` or `timeout`. */
  readonly code: string;
  /** Seconds to wait before retrying, when given. */
  readonly retryAfter?: number;

  constructor(code: string, message: string, retryAfter?: number) {
    super(`${code}: ${message}`);
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

/** The error an `error` event carries. */
export function relayError(event: ErrorEvent): RelayError {
  return new RelayError(event.code, event.message, event.retry_after);
}

/** The SDK's error for a relay that did not answer at all. */
export function unreachable(url: string): RelayError {
  return new RelayError("unreachable", `cannot reach the relay at ${url}; check the URL and that it is running`);
}

/** Answers after which a keyed write is retried: it was not done, or its outcome is unknown. */
export const RETRIABLE = new Set(["backend_unavailable", "outcome_unknown", "draining", "over_capacity"]);

/** An op was cut off by its connection closing (it may or may not have been
 * applied; a publish is resent with its key instead). The SDK's own joins
 * and re-declarations are redone on the next connection, so such a failure
 * of theirs is not reported to the app. */
export class ClosedError extends Error {}
