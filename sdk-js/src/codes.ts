/** Close codes and error codes of the Edgewire wire contract, mirrored from the
 * relay (a test checks them against `fixtures/codes.json`). */

/** WebSocket close codes, by name. */
export const CLOSE_CODES = {
  normal: 1000,
  going_away: 1001,
  protocol_error: 1002,
  invalid_payload: 1007,
  protocol_violation: 1008,
  message_too_big: 1009,
  internal_error: 1011,
  unauthorized: 4401,
  forbidden: 4403,
  idle_timeout: 4408,
  replaced: 4409,
  rate_limited: 4429,
  slow_consumer: 4508,
} as const;

/** Error codes carried by `error` events and HTTP errors, with their HTTP status. */
export const ERROR_CODES = {
  bad_request: 400,
  token_missing: 401,
  token_invalid: 401,
  token_expired: 401,
  forbidden: 403,
  not_found: 404,
  too_large: 413,
  unsupported_media: 415,
  key_reused: 409,
  unsupported: 400,
  rate_limited: 429,
  over_capacity: 503,
  draining: 503,
  backend_unavailable: 503,
  outcome_unknown: 503,
  internal: 500,
  slow_consumer: 503,
} as const;

/** What the client does after a close. */
export type ClosePolicy = "stop" | "reconnect" | "refresh-token" | "retry-after";

/** The contract's policy for a close code: stop on 1000, 1002, 1007, 1008, 4403 and 4409;
 * fetch a new token at once on 4401; obey `retry_after` on 4429; otherwise
 * (1001, 1006, 1009, 1011, 4408, 4508 and anything unknown) reconnect with
 * backoff. */
export function closePolicy(code: number): ClosePolicy {
  switch (code) {
    case CLOSE_CODES.normal:
    case CLOSE_CODES.protocol_error:
    case CLOSE_CODES.invalid_payload:
    case CLOSE_CODES.protocol_violation:
    case CLOSE_CODES.forbidden:
    case CLOSE_CODES.replaced:
      return "stop";
    case CLOSE_CODES.unauthorized:
      return "refresh-token";
    case CLOSE_CODES.rate_limited:
      return "retry-after";
    default:
      return "reconnect";
  }
}
