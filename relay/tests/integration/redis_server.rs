//! A real `redis-server` process per test, on a free loopback port, with no
//! persistence; stopped when dropped. The test command installs redis-server.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::DEADLINE;

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    /// With persistence (`appendonly yes`), the folder its files go to.
    dir: Option<std::path::PathBuf>,
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        let mut server = RedisServer {
            child: None,
            port: free_port(),
            dir: None,
        };
        server.spawn().await;
        server
    }

    /// A server with `appendonly yes`: what was written survives a restart.
    pub async fn start_persistent() -> RedisServer {
        let dir = std::env::temp_dir().join(format!("edgewire-redis-{}", free_port()));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let mut server = RedisServer {
            child: None,
            port: free_port(),
            dir: Some(dir),
        };
        server.spawn().await;
        server
    }

    async fn spawn(&mut self) {
        let mut command = Command::new("redis-server");
        command.args([
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--protected-mode",
            "no",
        ]);
        match &self.dir {
            Some(dir) => command
                .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
                .arg(dir),
            None => command.args(["--appendonly", "no"]),
        };
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (the README's test command installs it)");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if self.ping().await {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server did not start on port {}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn ping(&self) -> bool {
        let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await else {
            return false;
        };
        if stream.write_all(b"PING\r\n").await.is_err() {
            return false;
        }
        let mut buf = [0u8; 16];
        matches!(stream.read(&mut buf).await, Ok(n) if buf[..n].starts_with(b"+PONG"))
    }

    /// Sends one command (words, inline) and returns the raw first reply.
    pub async fn command(&self, line: &str) -> String {
        let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await else {
            return String::new();
        };
        if stream
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .is_err()
        {
            return String::new();
        }
        let mut buf = [0u8; 1024];
        match tokio::time::timeout(DEADLINE, stream.read(&mut buf)).await {
            Ok(Ok(n)) => String::from_utf8_lossy(&buf[..n]).into_owned(),
            _ => String::new(),
        }
    }

    /// The ids of the connections in pub/sub mode (CLIENT LIST, flags P).
    pub async fn pubsub_client_ids(&self) -> Vec<String> {
        let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await else {
            return Vec::new();
        };
        if stream.write_all(b"CLIENT LIST\r\n").await.is_err() {
            return Vec::new();
        }
        // A bulk string: `$<len>\r\n<text>\r\n`.
        let mut reply = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => reply.extend_from_slice(&buf[..n]),
            }
            let text = String::from_utf8_lossy(&reply);
            if let Some((len, rest)) = text.strip_prefix('$').and_then(|t| t.split_once("\r\n"))
                && len.parse::<usize>().is_ok_and(|len| rest.len() >= len)
            {
                break;
            }
        }
        String::from_utf8_lossy(&reply)
            .lines()
            .filter(|l| {
                l.split(' ')
                    .any(|f| f.starts_with("flags=") && f.contains('P'))
            })
            .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
            .map(str::to_owned)
            .collect()
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing answers.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen server run again (SIGCONT); it then works through what
    /// queued up meanwhile.
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, which: &str) {
        if let Some(child) = &self.child {
            let _ = std::process::Command::new("kill")
                .args([which, &child.id().to_string()])
                .status();
        }
    }

    /// Kills the server (an outage).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (an empty server: no persistence).
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A key prefix no other test uses.
pub fn unique_prefix() -> String {
    format!("t{}", edgewire::hub::random_id(6).replace(['-', '_'], "x"))
}
