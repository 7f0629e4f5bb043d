//! Prometheus metrics: a few atomic counters and gauges rendered in the text
//! exposition format. Counters are bumped once per message or batch, never
//! under a lock.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// The relay's counters and gauges.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Live WebSocket sessions.
    pub ws_sessions: AtomicI64,
    /// Live SSE sessions.
    pub sse_sessions: AtomicI64,
    /// Messages accepted for publishing (all transports).
    pub messages_in: AtomicU64,
    /// Events written to clients.
    pub messages_out: AtomicU64,
    /// Requests and handshakes refused for a missing, invalid or expired token.
    pub auth_failures: AtomicU64,
    /// Sessions closed as slow consumers.
    pub slow_consumers: AtomicU64,
}

/// Which transport a session uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// WebSocket.
    WebSocket,
    /// Server-Sent Events.
    Sse,
}

impl Transport {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::WebSocket => "websocket",
            Transport::Sse => "sse",
        }
    }
}

impl Metrics {
    /// The gauge of live sessions for `transport`.
    pub fn sessions(&self, transport: Transport) -> &AtomicI64 {
        match transport {
            Transport::WebSocket => &self.ws_sessions,
            Transport::Sse => &self.sse_sessions,
        }
    }

    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Renders every metric; `rooms` is the number of rooms with local subscribers.
    pub fn render(&self, rooms: usize) -> String {
        let mut out = String::with_capacity(1024);
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let _ = writeln!(out, "# HELP edgewire_sessions Live sessions by transport.");
        let _ = writeln!(out, "# TYPE edgewire_sessions gauge");
        for t in [Transport::WebSocket, Transport::Sse] {
            let _ = writeln!(
                out,
                "edgewire_sessions{{transport=\"{}\"}} {}",
                t.as_str(),
                self.sessions(t).load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP edgewire_rooms Rooms with subscribers on this instance."
        );
        let _ = writeln!(out, "# TYPE edgewire_rooms gauge");
        let _ = writeln!(out, "edgewire_rooms {rooms}");
        for (name, help, value) in [
            (
                "edgewire_messages_in_total",
                "Messages accepted for publishing.",
                get(&self.messages_in),
            ),
            (
                "edgewire_messages_out_total",
                "Events written to clients.",
                get(&self.messages_out),
            ),
            (
                "edgewire_auth_failures_total",
                "Requests refused for a missing, invalid or expired token.",
                get(&self.auth_failures),
            ),
            (
                "edgewire_slow_consumers_total",
                "Sessions closed for falling too far behind.",
                get(&self.slow_consumers),
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {value}");
        }
        out
    }
}
