//! Operator configuration. One table ([`SETTINGS`]) names every setting once: its
//! environment variable, its `serve` flag, its default and its help. [`Config`] is
//! built from a lookup function so `main` can layer flags over the environment
//! and tests can feed a map.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::pattern::RoomPattern;

mod read;
mod settings;

use self::read::{Reader, positive, positive_duration, positive_u32, whole};
pub use self::read::{parse_bytes, parse_duration};
pub use self::settings::{SETTINGS, Setting};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The relay's validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to bind.
    pub listen: SocketAddr,
    /// Redis URL; `None` selects the in-memory broker.
    pub redis_url: Option<String>,
    /// Prefix of Redis keys and channels.
    pub redis_prefix: String,
    /// Redis reply and connect timeout.
    pub redis_timeout: Duration,
    /// Lifetime of an instance's heartbeat in Redis.
    pub instance_ttl: Duration,
    /// HMAC secret.
    pub jwt_secret: Option<String>,
    /// PEM public key path.
    pub jwt_public_key: Option<PathBuf>,
    /// JWKS URL.
    pub jwks_url: Option<String>,
    /// Accepted audiences; empty means `aud` is not checked.
    pub jwt_audience: Vec<String>,
    /// Accepted issuers; empty means `iss` is not checked.
    pub jwt_issuer: Vec<String>,
    /// Clock skew allowed on exp/nbf.
    pub jwt_leeway: Duration,
    /// Rooms open to anyone with read+write.
    pub public_rooms: Vec<RoomPattern>,
    /// Allowed browser origins; `None` allows any.
    pub allowed_origins: Option<Vec<String>>,
    /// Cap on live sessions.
    pub max_connections: usize,
    /// Cap on live sessions per client address.
    pub max_connections_per_address: usize,
    /// Cap on live sessions per user.
    pub max_connections_per_user: usize,
    /// New sessions per second.
    pub new_connections_per_second: u32,
    /// Auth failures per address per minute.
    pub auth_failure_limit: u32,
    /// Publishes per second per session or user.
    pub publish_rate: u32,
    /// Read the client address from `Fly-Client-IP`.
    pub trust_proxy: bool,
    /// Longest time to receive a request head.
    pub handshake_timeout: Duration,
    /// Longest a write may make no progress before the client is cut.
    pub write_timeout: Duration,
    /// Largest frame or body, in bytes.
    pub max_message_bytes: usize,
    /// Messages kept per room.
    pub history_size: usize,
    /// Age limit of kept messages.
    pub history_ttl: Duration,
    /// Byte limit of one room's history.
    pub history_bytes: usize,
    /// Byte limit of all rooms' history together (memory broker).
    pub history_bytes_total: usize,
    /// WebSocket ping period.
    pub ping_interval: Duration,
    /// WebSocket idle limit.
    pub idle_timeout: Duration,
    /// SSE heartbeat period.
    pub sse_heartbeat: Duration,
    /// Drain time on shutdown.
    pub shutdown_grace: Duration,
    /// Window within which a room's presence changes are coalesced (zero: none).
    pub presence_window: Duration,
    /// Retained topics per room.
    pub max_topics: usize,
    /// Per-room ring of undelivered events a subscriber may lag by.
    pub outbound_queue: usize,
    /// Tracing filter.
    pub log: String,
    /// Log line format.
    pub log_format: LogFormat,
}

/// Start-up configuration errors: one line per bad key, all reported at once.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  {}", .problems.join("\n  "))]
pub struct ConfigError {
    /// One `KEY: problem` line per bad setting.
    pub problems: Vec<String>,
}

impl Config {
    /// Builds the configuration from `lookup(ENV_NAME)`, applying defaults and
    /// reporting every invalid key.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let mut reader = Reader {
            lookup: &lookup,
            problems: Vec::new(),
        };
        let config = Config {
            // A bad value makes the whole result an error, so the placeholder is never used.
            listen: reader
                .parsed("EDGEWIRE_LISTEN", |v| {
                    v.parse::<SocketAddr>()
                        .map(Some)
                        .map_err(|_| "expected host:port such as 0.0.0.0:8080".into())
                })
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
            redis_url: reader.text("EDGEWIRE_REDIS_URL"),
            redis_prefix: reader.parsed("EDGEWIRE_REDIS_PREFIX", |v| {
                if v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
                {
                    Ok(v.to_owned())
                } else {
                    Err("may hold only A-Z a-z 0-9 _ - . :".into())
                }
            }),
            redis_timeout: reader.parsed("EDGEWIRE_REDIS_TIMEOUT", positive_duration),
            instance_ttl: reader.parsed("EDGEWIRE_INSTANCE_TTL", positive_duration),
            jwt_secret: reader.text("EDGEWIRE_JWT_SECRET"),
            jwt_public_key: reader.text("EDGEWIRE_JWT_PUBLIC_KEY").map(PathBuf::from),
            jwks_url: reader.text("EDGEWIRE_JWKS_URL"),
            jwt_audience: reader.list("EDGEWIRE_JWT_AUDIENCE").unwrap_or_default(),
            jwt_issuer: reader.list("EDGEWIRE_JWT_ISSUER").unwrap_or_default(),
            jwt_leeway: reader.parsed("EDGEWIRE_JWT_LEEWAY", parse_duration),
            public_rooms: reader
                .list("EDGEWIRE_PUBLIC_ROOMS")
                .unwrap_or_default()
                .iter()
                .filter_map(|p| match RoomPattern::parse(p) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        reader.problems.push(format!("EDGEWIRE_PUBLIC_ROOMS: {e}"));
                        None
                    }
                })
                .collect(),
            allowed_origins: reader.list("EDGEWIRE_ALLOWED_ORIGINS"),
            max_connections: reader.parsed("EDGEWIRE_MAX_CONNECTIONS", positive),
            max_connections_per_address: reader
                .parsed("EDGEWIRE_MAX_CONNECTIONS_PER_ADDRESS", positive),
            max_connections_per_user: reader.parsed("EDGEWIRE_MAX_CONNECTIONS_PER_USER", positive),
            new_connections_per_second: reader
                .parsed("EDGEWIRE_NEW_CONNECTIONS_PER_SECOND", positive_u32),
            auth_failure_limit: reader.parsed("EDGEWIRE_AUTH_FAILURE_LIMIT", positive_u32),
            publish_rate: reader.parsed("EDGEWIRE_PUBLISH_RATE", positive_u32),
            trust_proxy: reader.parsed("EDGEWIRE_TRUST_PROXY", |v| match v {
                "true" | "1" | "yes" => Ok(true),
                "false" | "0" | "no" => Ok(false),
                _ => Err("expected true or false".into()),
            }),
            handshake_timeout: reader.parsed("EDGEWIRE_HANDSHAKE_TIMEOUT", positive_duration),
            write_timeout: reader.parsed("EDGEWIRE_WRITE_TIMEOUT", positive_duration),
            max_message_bytes: reader.parsed("EDGEWIRE_MAX_MESSAGE_BYTES", |v| {
                let n = positive(v)?;
                if n < 256 {
                    return Err("must be at least 256 bytes".into());
                }
                Ok(n)
            }),
            history_size: reader.parsed("EDGEWIRE_HISTORY_SIZE", whole),
            history_ttl: reader.parsed("EDGEWIRE_HISTORY_TTL", parse_duration),
            history_bytes: reader.parsed("EDGEWIRE_HISTORY_BYTES", parse_bytes),
            history_bytes_total: reader.parsed("EDGEWIRE_HISTORY_BYTES_TOTAL", parse_bytes),
            ping_interval: reader.parsed("EDGEWIRE_PING_INTERVAL", positive_duration),
            idle_timeout: reader.parsed("EDGEWIRE_IDLE_TIMEOUT", positive_duration),
            sse_heartbeat: reader.parsed("EDGEWIRE_SSE_HEARTBEAT", positive_duration),
            shutdown_grace: reader.parsed("EDGEWIRE_SHUTDOWN_GRACE", parse_duration),
            presence_window: reader.parsed("EDGEWIRE_PRESENCE_WINDOW", parse_duration),
            max_topics: reader.parsed("EDGEWIRE_MAX_TOPICS", positive),
            outbound_queue: reader.parsed("EDGEWIRE_OUTBOUND_QUEUE", positive),
            log: reader.text("EDGEWIRE_LOG").unwrap_or_else(|| "info".into()),
            log_format: reader.parsed("EDGEWIRE_LOG_FORMAT", |v| match v {
                "text" => Ok(LogFormat::Text),
                "json" => Ok(LogFormat::Json),
                _ => Err("expected `text` or `json`".into()),
            }),
        };
        if config.jwt_public_key.is_some() && config.jwks_url.is_some() {
            reader.problems.push(
                "EDGEWIRE_JWT_PUBLIC_KEY and EDGEWIRE_JWKS_URL: configure one public-key source, not both"
                    .into(),
            );
        }
        if !config.ping_interval.is_zero() && config.idle_timeout <= config.ping_interval {
            reader
                .problems
                .push("EDGEWIRE_IDLE_TIMEOUT: must be longer than EDGEWIRE_PING_INTERVAL".into());
        }
        if reader.problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError {
                problems: reader.problems,
            })
        }
    }

    /// The configuration with every default, as tests start from.
    pub fn defaults() -> Config {
        // Every default in SETTINGS parses; an empty lookup cannot fail.
        match Config::from_lookup(|_| None) {
            Ok(c) => c,
            Err(e) => panic!("built-in defaults are invalid: {e}"),
        }
    }

    /// True when no key is configured: the relay makes a random secret (dev mode).
    pub fn needs_dev_secret(&self) -> bool {
        self.jwt_secret.is_none() && self.jwt_public_key.is_none() && self.jwks_url.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = Config::defaults();
        assert_eq!(c.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(c.max_connections, 10_000);
        assert_eq!(c.max_message_bytes, 65_536);
        assert_eq!(c.history_size, 1000);
        assert_eq!(c.history_ttl, Duration::from_secs(600));
        assert_eq!(c.jwt_leeway, Duration::from_secs(30));
        assert_eq!(c.ping_interval, Duration::from_secs(20));
        assert_eq!(c.idle_timeout, Duration::from_secs(60));
        assert_eq!(c.sse_heartbeat, Duration::from_secs(15));
        assert_eq!(c.shutdown_grace, Duration::from_secs(10));
        assert!(c.needs_dev_secret());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_bytes("65536"), Ok(65_536));
        assert_eq!(parse_bytes("4MiB"), Ok(4 << 20));
        assert_eq!(parse_bytes("512 KiB"), Ok(512 << 10));
        assert_eq!(parse_bytes("1G"), Ok(1 << 30));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("4XB").is_err());
    }

    #[test]
    fn every_bad_key_is_named() {
        let err = from(&[
            ("EDGEWIRE_LISTEN", "nowhere"),
            ("EDGEWIRE_MAX_CONNECTIONS", "lots"),
            ("EDGEWIRE_PING_INTERVAL", "soon"),
            ("EDGEWIRE_PUBLIC_ROOMS", "ok-*,bad/room"),
        ])
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        for key in [
            "EDGEWIRE_LISTEN",
            "EDGEWIRE_MAX_CONNECTIONS",
            "EDGEWIRE_PING_INTERVAL",
            "EDGEWIRE_PUBLIC_ROOMS",
        ] {
            assert!(err.contains(key), "{key} missing from: {err}");
        }
    }

    #[test]
    fn values_are_read() {
        let c = from(&[
            ("EDGEWIRE_JWT_SECRET", "s3cret"),
            ("EDGEWIRE_PUBLIC_ROOMS", "lobby, demo-*"),
            ("EDGEWIRE_JWT_AUDIENCE", "a,b"),
        ]);
        let c = c.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.public_rooms.len(), 2);
        assert_eq!(c.jwt_audience, vec!["a", "b"]);
        assert!(!c.needs_dev_secret());
    }
}
