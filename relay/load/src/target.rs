//! Where connections go: URL templates with `{room}` and `{token}`, resolved
//! once, and TCP connections from a rotating set of loopback source addresses
//! (each source address has its own ~28 000 ephemeral ports).

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use tokio::net::{TcpSocket, TcpStream};

use crate::LoadError;

/// A URL template, e.g. `ws://127.0.0.1:8080/rooms/{room}?token={token}`.
#[derive(Debug, Clone)]
pub struct Template {
    text: String,
    addr: SocketAddr,
    host: String,
}

impl Template {
    /// Parses `text` and resolves its host once.
    pub async fn new(text: &str, token: &str) -> Result<Template, LoadError> {
        let text = text.replace("{token}", token);
        let bad = || LoadError::Url(text.clone());
        let (scheme, rest) = text.split_once("://").ok_or_else(bad)?;
        let authority = rest.split(['/', '?']).next().ok_or_else(bad)?;
        let default_port = match scheme {
            "ws" | "http" => 80,
            _ => return Err(bad()),
        };
        let with_port = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            authority.to_string()
        } else {
            format!("{authority}:{default_port}")
        };
        let addr = tokio::net::lookup_host(&with_port)
            .await
            .map_err(|e| LoadError::Connect(format!("{with_port}: {e}")))?
            .next()
            .ok_or_else(bad)?;
        Ok(Template {
            host: authority.to_string(),
            text,
            addr,
        })
    }

    /// The URL for one room.
    pub fn url(&self, room: &str) -> String {
        self.text.replace("{room}", room)
    }

    /// The path and query for one room (the request target of HTTP/1.1).
    pub fn path(&self, room: &str) -> String {
        let url = self.url(room);
        let after_scheme = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
        match after_scheme.find(['/', '?']) {
            Some(i) if after_scheme[i..].starts_with('/') => after_scheme[i..].to_string(),
            Some(i) => format!("/{}", &after_scheme[i..]),
            None => "/".to_string(),
        }
    }

    /// The `Host` header value.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The server's socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Loopback source addresses to spread connections over.
#[derive(Debug, Clone)]
pub struct Sources {
    count: u32,
}

impl Sources {
    /// `count` addresses, 127.0.0.1 upwards; 0 lets the kernel choose.
    pub fn new(count: u32) -> Sources {
        Sources { count }
    }

    /// The source address of the `n`th connection.
    pub fn pick(&self, n: usize) -> Option<IpAddr> {
        (self.count > 0).then(|| {
            let i = (n as u32 % self.count) + 1;
            IpAddr::V4(Ipv4Addr::new(127, 0, (i >> 8) as u8, (i & 0xff) as u8))
        })
    }
}

/// Opens a TCP connection to `addr` from `source` (with Nagle off: latency
/// is measured).
pub async fn connect(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn templates_fill_in_room_and_token() {
        let t = Template::new("ws://127.0.0.1:9/rooms/{room}?token={token}", "abc")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.url("r1"), "ws://127.0.0.1:9/rooms/r1?token=abc");
        assert_eq!(t.path("r1"), "/rooms/r1?token=abc");
        assert_eq!(t.host(), "127.0.0.1:9");
        assert_eq!(t.addr().port(), 9);
    }

    #[test]
    fn sources_rotate() {
        let s = Sources::new(3);
        assert_eq!(s.pick(0), Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1))));
        assert_eq!(s.pick(4), Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))));
        assert_eq!(Sources::new(0).pick(1), None);
    }
}
