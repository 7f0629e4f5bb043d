//! The settings table: every operator setting once, with its environment
//! variable, its `serve` flag, its default and its help.

/// One operator setting: environment variable, flag, default and meaning.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// Environment variable name (the lookup key).
    pub env: &'static str,
    /// Long flag of `edgewire serve`, without dashes.
    pub flag: &'static str,
    /// Default value as text, if any.
    pub default: Option<&'static str>,
    /// One-line meaning, shown by `--help`.
    pub help: &'static str,
}

const fn s(
    env: &'static str,
    flag: &'static str,
    default: Option<&'static str>,
    help: &'static str,
) -> Setting {
    Setting {
        env,
        flag,
        default,
        help,
    }
}

/// Every setting, in the order `--help` shows them. The names are part of the
/// contract: deploy files, docs and tests use them.
pub const SETTINGS: &[Setting] = &[
    s(
        "EDGEWIRE_LISTEN",
        "listen",
        Some("0.0.0.0:8080"),
        "address to bind",
    ),
    s(
        "EDGEWIRE_REDIS_URL",
        "redis-url",
        None,
        "Redis for fan-out across instances, retained topics, history, presence (unset: in-memory broker)",
    ),
    s(
        "EDGEWIRE_REDIS_PREFIX",
        "redis-prefix",
        Some("edgewire"),
        "prefix of every Redis key and channel (several deployments can share one Redis)",
    ),
    s(
        "EDGEWIRE_REDIS_TIMEOUT",
        "redis-timeout",
        Some("3s"),
        "longest wait for one Redis reply or connection; beyond it the request fails with 503",
    ),
    s(
        "EDGEWIRE_INSTANCE_TTL",
        "instance-ttl",
        Some("10s"),
        "with Redis: an instance that stops beating for this long is dead; its peers leave (reason timeout) within this plus 1 s",
    ),
    s(
        "EDGEWIRE_JWT_SECRET",
        "jwt-secret",
        None,
        "HMAC secret for HS256/384/512 tokens",
    ),
    s(
        "EDGEWIRE_JWT_PUBLIC_KEY",
        "jwt-public-key",
        None,
        "path to a PEM public key (RSA, EC P-256/P-384 or Ed25519)",
    ),
    s(
        "EDGEWIRE_JWKS_URL",
        "jwks-url",
        None,
        "JWKS document URL; keys are picked by `kid`",
    ),
    s(
        "EDGEWIRE_JWT_AUDIENCE",
        "jwt-audience",
        None,
        "required `aud` claim (comma-separated: any of them)",
    ),
    s(
        "EDGEWIRE_JWT_ISSUER",
        "jwt-issuer",
        None,
        "required `iss` claim (comma-separated: any of them)",
    ),
    s(
        "EDGEWIRE_JWT_LEEWAY",
        "jwt-leeway",
        Some("30s"),
        "clock skew allowed on exp/nbf",
    ),
    s(
        "EDGEWIRE_PUBLIC_ROOMS",
        "public-rooms",
        None,
        "comma-separated room patterns open to anyone with read+write, no token",
    ),
    s(
        "EDGEWIRE_ALLOWED_ORIGINS",
        "allowed-origins",
        None,
        "comma-separated origins allowed for CORS and WebSocket Origin (unset: any)",
    ),
    s(
        "EDGEWIRE_MAX_CONNECTIONS",
        "max-connections",
        Some("10000"),
        "live WebSocket+SSE sessions; beyond it, 503",
    ),
    s(
        "EDGEWIRE_MAX_CONNECTIONS_PER_ADDRESS",
        "max-connections-per-address",
        Some("100"),
        "live sessions per client address; beyond it, 503",
    ),
    s(
        "EDGEWIRE_MAX_CONNECTIONS_PER_USER",
        "max-connections-per-user",
        Some("50"),
        "live sessions per user (token sub); beyond it, 503",
    ),
    s(
        "EDGEWIRE_NEW_CONNECTIONS_PER_SECOND",
        "new-connections-per-second",
        Some("500"),
        "new sessions accepted per second (absorbs a reconnect storm); beyond it, 503 with Retry-After",
    ),
    s(
        "EDGEWIRE_AUTH_FAILURE_LIMIT",
        "auth-failure-limit",
        Some("20"),
        "failed authentications per client address per minute; then, for the rest of the minute, 429 for its requests without a token that verifies (valid tokens still pass)",
    ),
    s(
        "EDGEWIRE_PUBLISH_RATE",
        "publish-rate",
        Some("100"),
        "writes per second (publish, topic writes, state, will, refresh) per WebSocket session or per user over HTTP (bursts of twice that); beyond it, rate_limited",
    ),
    s(
        "EDGEWIRE_TRUST_PROXY",
        "trust-proxy",
        Some("false"),
        "take the client address from Fly-Client-IP (only behind Fly's proxy, which sets it)",
    ),
    s(
        "EDGEWIRE_HANDSHAKE_TIMEOUT",
        "handshake-timeout",
        Some("10s"),
        "longest time a client may take to send its request head (a WebSocket or SSE handshake included)",
    ),
    s(
        "EDGEWIRE_WRITE_TIMEOUT",
        "write-timeout",
        Some("5s"),
        "a client whose socket takes no bytes for this long is cut (its peer leaves with reason timeout, its will fires)",
    ),
    s(
        "EDGEWIRE_MAX_MESSAGE_BYTES",
        "max-message-bytes",
        Some("65536"),
        "largest WebSocket frame or POST body",
    ),
    s(
        "EDGEWIRE_HISTORY_SIZE",
        "history-size",
        Some("1000"),
        "messages kept per room for resume",
    ),
    s(
        "EDGEWIRE_HISTORY_BYTES",
        "history-bytes",
        Some("4MiB"),
        "bytes of messages kept per room for resume (with HISTORY_SIZE and HISTORY_TTL: whichever bound is reached first drops the oldest)",
    ),
    s(
        "EDGEWIRE_HISTORY_BYTES_TOTAL",
        "history-bytes-total",
        Some("128MiB"),
        "bytes of history kept by this relay across all rooms (in-memory broker; with Redis, bound Redis with maxmemory)",
    ),
    s(
        "EDGEWIRE_HISTORY_TTL",
        "history-ttl",
        Some("10m"),
        "how long messages are kept for resume",
    ),
    s(
        "EDGEWIRE_PING_INTERVAL",
        "ping-interval",
        Some("20s"),
        "WebSocket ping period",
    ),
    s(
        "EDGEWIRE_IDLE_TIMEOUT",
        "idle-timeout",
        Some("60s"),
        "close a WebSocket (4408) after this long with no frame or pong",
    ),
    s(
        "EDGEWIRE_SSE_HEARTBEAT",
        "sse-heartbeat",
        Some("15s"),
        "period of SSE `: ping` comments",
    ),
    s(
        "EDGEWIRE_SHUTDOWN_GRACE",
        "shutdown-grace",
        Some("10s"),
        "drain time on SIGTERM before the process exits",
    ),
    s(
        "EDGEWIRE_PRESENCE_WINDOW",
        "presence-window",
        Some("50ms"),
        "presence changes of a room within this window go out as one `presence` event (0: each alone)",
    ),
    s(
        "EDGEWIRE_MAX_TOPICS",
        "max-topics",
        Some("10000"),
        "retained topics per room; setting one more is refused (413 too_large)",
    ),
    s(
        "EDGEWIRE_OUTBOUND_QUEUE",
        "outbound-queue",
        Some("1024"),
        "events a subscriber may fall behind its room before it is closed as a slow consumer (4508)",
    ),
    s(
        "EDGEWIRE_LOG",
        "log",
        Some("info"),
        "tracing filter (e.g. info, edgewire=debug)",
    ),
    s(
        "EDGEWIRE_LOG_FORMAT",
        "log-format",
        Some("text"),
        "`text` or `json` (JSON lines for log shippers)",
    ),
];
