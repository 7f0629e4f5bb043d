//! The contract's WebSocket close codes, defined once.

/// A WebSocket close code of the contract, defined once here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCode {
    /// Normal close.
    Normal,
    /// Relay going away (shutdown, deploy).
    GoingAway,
    /// Policy violation: a session refused for a reason without a code of
    /// its own.
    Protocol,
    /// The client broke WebSocket framing (RFC 6455 protocol error).
    ProtocolError,
    /// A text message or close reason that is not UTF-8 (invalid payload data).
    InvalidPayload,
    /// Message too big.
    TooBig,
    /// Internal error.
    Internal,
    /// Token missing, invalid or expired.
    Unauthorized,
    /// Forbidden.
    Forbidden,
    /// Idle timeout.
    IdleTimeout,
    /// Replaced by a newer connection of the same peer.
    Replaced,
    /// Rate limited.
    RateLimited,
    /// Slow consumer: fell too far behind.
    SlowConsumer,
}

impl CloseCode {
    /// Every close code, for the shared fixture test.
    pub const ALL: [CloseCode; 13] = [
        CloseCode::Normal,
        CloseCode::GoingAway,
        CloseCode::ProtocolError,
        CloseCode::InvalidPayload,
        CloseCode::Protocol,
        CloseCode::TooBig,
        CloseCode::Internal,
        CloseCode::Unauthorized,
        CloseCode::Forbidden,
        CloseCode::IdleTimeout,
        CloseCode::Replaced,
        CloseCode::RateLimited,
        CloseCode::SlowConsumer,
    ];

    /// The numeric code sent in the close frame.
    pub fn code(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::GoingAway => 1001,
            CloseCode::ProtocolError => 1002,
            CloseCode::InvalidPayload => 1007,
            CloseCode::Protocol => 1008,
            CloseCode::TooBig => 1009,
            CloseCode::Internal => 1011,
            CloseCode::Unauthorized => 4401,
            CloseCode::Forbidden => 4403,
            CloseCode::IdleTimeout => 4408,
            CloseCode::Replaced => 4409,
            CloseCode::RateLimited => 4429,
            CloseCode::SlowConsumer => 4508,
        }
    }

    /// A short stable name, used in logs and the fixtures table.
    pub fn name(self) -> &'static str {
        match self {
            CloseCode::Normal => "normal",
            CloseCode::GoingAway => "going_away",
            CloseCode::ProtocolError => "protocol_error",
            CloseCode::InvalidPayload => "invalid_payload",
            CloseCode::Protocol => "protocol_violation",
            CloseCode::TooBig => "message_too_big",
            CloseCode::Internal => "internal_error",
            CloseCode::Unauthorized => "unauthorized",
            CloseCode::Forbidden => "forbidden",
            CloseCode::IdleTimeout => "idle_timeout",
            CloseCode::Replaced => "replaced",
            CloseCode::RateLimited => "rate_limited",
            CloseCode::SlowConsumer => "slow_consumer",
        }
    }
}
