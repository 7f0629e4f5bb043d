//! Redis failures as the broker reports them: at start-up (with what to
//! check) and per write (stored, unknown or refused).

use std::time::Duration;

use crate::broker::BrokerError;

/// Redis could not be used at start-up: which URL (password hidden) and why.
#[derive(Debug, thiserror::Error)]
#[error("cannot reach Redis at {url} (EDGEWIRE_REDIS_URL): {cause}")]
pub struct StartError {
    /// The configured URL with its password replaced.
    pub url: String,
    /// What went wrong, with what to check.
    pub cause: StartCause,
}

/// The cause of a [`StartError`], each with the thing an operator should check.
#[derive(Debug, thiserror::Error)]
pub enum StartCause {
    /// Nothing listens at the host and port.
    #[error(
        "connection refused; check that redis-server is running and listens on that host and port"
    )]
    Refused,
    /// No answer in time.
    #[error(
        "no answer within {0:?} (EDGEWIRE_REDIS_TIMEOUT); check the host, the port, firewalls, \
         and whether the server expects TLS (rediss://)"
    )]
    Timeout(Duration),
    /// The server refused the credentials, or wants some.
    #[error("authentication failed ({0}); check the user and password in the URL")]
    Auth(String),
    /// The TLS handshake failed.
    #[error(
        "TLS failed ({0}); check that the server speaks TLS on that port and that its certificate is valid for the host"
    )]
    Tls(String),
    /// The URL itself is wrong.
    #[error(
        "the URL is not valid ({0}); expected redis://[user:password@]host:port[/db], or rediss:// for TLS"
    )]
    BadUrl(String),
    /// Anything else, such as a host name that does not resolve.
    #[error("{0}; check the host name and the network")]
    Other(String),
}

impl StartCause {
    /// Sorts a Redis client error into a cause; `url` is only used to keep its
    /// password out of the text, `timeout` to say how long was waited.
    pub(super) fn of(e: &redis::RedisError, url: &str, timeout: Duration) -> StartCause {
        let mut text = e.to_string();
        if let Some(password) = crate::redact::password_of(url) {
            text = text.replace(password, "REDACTED");
        }
        let lower = text.to_ascii_lowercase();
        if e.is_connection_refusal() {
            StartCause::Refused
        } else if e.is_timeout() {
            StartCause::Timeout(timeout)
        } else if e.kind() == redis::ErrorKind::AuthenticationFailed
            || lower.contains("noauth")
            || lower.contains("wrongpass")
            || lower.contains("invalid password")
            || lower.contains("auth")
        {
            StartCause::Auth(text)
        } else if lower.contains("tls")
            || lower.contains("certificate")
            || lower.contains("handshake")
        {
            StartCause::Tls(text)
        } else if e.kind() == redis::ErrorKind::InvalidClientConfig {
            StartCause::BadUrl(text)
        } else {
            StartCause::Other(text)
        }
    }
}

/// A write that failed: with no answer in time, stored or not (the outcome is
/// unknown, though never applied after the relay answered); refused as `late`
/// or for any other reason, not stored.
pub(super) fn write_failed(e: redis::RedisError) -> BrokerError {
    // Scripts answer `{err = '<code>'}`: matched by the error's code.
    if e.code() == Some("key_reused") {
        return BrokerError::KeyReused;
    }
    if e.is_timeout() {
        tracing::debug!(error = %e, "redis write outcome unknown");
        return BrokerError::OutcomeUnknown;
    }
    unavailable(e)
}

pub(super) fn unavailable(e: redis::RedisError) -> BrokerError {
    tracing::debug!(error = %e, "redis call failed");
    BrokerError::Unavailable
}
