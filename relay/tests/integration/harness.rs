//! Test harness: a real relay on 127.0.0.1:0, tokens signed with the fixture
//! keys, and real WebSocket (tokio-tungstenite) and SSE (reqwest) clients that
//! wait for events with deadlines, never fixed sleeps.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use edgewire::config::Config;
use edgewire::token::{SigningKey, TokenSpec, mint, parse_room_grant};
use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::Algorithm;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

/// How long a test waits for any one event before failing.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// The fixtures folder at the repository root.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

/// The shared HMAC test secret.
pub fn secret() -> String {
    std::fs::read_to_string(fixtures().join("keys/hs.secret")).expect("fixture secret")
}

/// A relay running in this process.
pub struct Relay {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<Result<(), edgewire::ServeError>>>,
}

impl Relay {
    /// A relay with the fixture secret and `extra` settings (env names).
    pub async fn start(extra: &[(&str, &str)]) -> Relay {
        let mut map: HashMap<String, String> = HashMap::new();
        map.insert("EDGEWIRE_JWT_SECRET".into(), secret());
        map.insert("EDGEWIRE_LISTEN".into(), "127.0.0.1:0".into());
        // Tests that flood on purpose must not meet the publish limit; the
        // guard tests set their own.
        map.insert("EDGEWIRE_PUBLISH_RATE".into(), "1000000".into());
        for (k, v) in extra {
            map.insert(k.to_string(), v.to_string());
        }
        Relay::with_map(map).await
    }

    /// A relay configured exactly by `map`.
    pub async fn with_map(map: HashMap<String, String>) -> Relay {
        let config = Config::from_lookup(|k| map.get(k).cloned()).expect("valid test config");
        let listener = edgewire::server::bind(([127, 0, 0, 1], 0).into()).expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(edgewire::serve(listener, config, shutdown.clone()));
        Relay {
            addr,
            shutdown,
            task: Some(task),
        }
    }

    /// Waits for `serve` to return (after the shutdown token was cancelled).
    pub async fn stopped(&mut self) -> Result<(), edgewire::ServeError> {
        let task = self.task.take().expect("relay task");
        tokio::time::timeout(DEADLINE, task)
            .await
            .expect("serve returns before the deadline")
            .expect("serve task did not panic")
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A token for `sub` with `grants` like `["t-*=read,write"]`, signed with the fixture secret.
pub fn token(sub: &str, grants: &[&str]) -> String {
    token_with(sub, grants, Duration::from_secs(3600), None)
}

/// A token with a lifetime and meta.
pub fn token_with(sub: &str, grants: &[&str], ttl: Duration, meta: Option<Value>) -> String {
    let spec = TokenSpec {
        sub: sub.into(),
        rooms: grants
            .iter()
            .map(|g| parse_room_grant(g).expect("grant"))
            .collect(),
        ttl,
        meta,
        audience: None,
        issuer: None,
    };
    mint(
        &spec,
        &SigningKey::Secret(secret().into_bytes(), Algorithm::HS256),
    )
    .expect("mint")
}

/// An HTTP client for tests.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(DEADLINE)
        .build()
        .expect("client")
}

/// How a WebSocket client presents its token.
#[derive(Clone, Copy)]
pub enum TokenIn {
    Header,
    Subprotocol,
    Query,
    None,
}

/// A WebSocket client.
pub struct Ws {
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub protocol: Option<String>,
    /// The rest of a `presence` event's events, handed out one by one.
    unpacked: std::collections::VecDeque<Value>,
}

impl Ws {
    pub async fn connect(relay: &Relay, path: &str, token: &str, how: TokenIn) -> Ws {
        Ws::connect_url(&relay.ws_url(path), token, how).await
    }

    /// Connects to a full `ws://` URL.
    pub async fn connect_url(url: &str, token: &str, how: TokenIn) -> Ws {
        let url = match how {
            TokenIn::Query => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}token={token}")
            }
            _ => url.to_owned(),
        };
        let mut request = url.into_client_request().expect("request");
        match how {
            TokenIn::Header => {
                request.headers_mut().insert(
                    "authorization",
                    HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
                );
            }
            TokenIn::Subprotocol => {
                request.headers_mut().insert(
                    "sec-websocket-protocol",
                    HeaderValue::from_str(&format!("edgewire, bearer.{token}")).expect("header"),
                );
            }
            TokenIn::Query | TokenIn::None => {}
        }
        let (stream, response) =
            tokio::time::timeout(DEADLINE, tokio_tungstenite::connect_async(request))
                .await
                .expect("connect deadline")
                .expect("websocket handshake");
        let protocol = response
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ws {
            stream,
            protocol,
            unpacked: Default::default(),
        }
    }

    pub async fn send(&mut self, op: Value) {
        self.stream
            .send(Message::Text(op.to_string().into()))
            .await
            .expect("send");
    }

    pub async fn send_raw(&mut self, message: Message) {
        self.stream.send(message).await.expect("send");
    }

    /// The next event (text frame as JSON); panics on close or deadline.
    pub async fn next(&mut self) -> Value {
        match self.next_frame().await {
            Frame::Event(v) => v,
            Frame::Closed(code, reason) => {
                panic!("socket closed ({code:?} {reason}) while waiting for an event")
            }
        }
    }

    /// The next event or close; a `presence` event's events come one by
    /// one, as a client applies them.
    pub async fn next_frame(&mut self) -> Frame {
        if let Some(event) = self.unpacked.pop_front() {
            return Frame::Event(event);
        }
        loop {
            let msg = tokio::time::timeout(DEADLINE, self.stream.next())
                .await
                .expect("no frame before the deadline");
            match msg {
                Some(Ok(Message::Text(t))) => {
                    let event: Value = serde_json::from_str(&t).expect("event is JSON");
                    let Some(events) = presence_events(&event) else {
                        return Frame::Event(event);
                    };
                    self.unpacked.extend(events);
                    if let Some(first) = self.unpacked.pop_front() {
                        return Frame::Event(first);
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    return Frame::Closed(
                        frame.as_ref().map(|f| u16::from(f.code)),
                        frame.map(|f| f.reason.to_string()).unwrap_or_default(),
                    );
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Frame::Closed(None, String::new()),
            }
        }
    }

    /// Reads until the socket closes; returns the events seen and the close code.
    pub async fn until_close(&mut self) -> (Vec<Value>, Option<u16>) {
        let mut events = Vec::new();
        loop {
            match self.next_frame().await {
                Frame::Event(v) => events.push(v),
                Frame::Closed(code, _) => return (events, code),
            }
        }
    }

    /// Skips events until one of `kind` arrives.
    pub async fn next_kind(&mut self, kind: &str) -> Value {
        loop {
            let ev = self.next().await;
            if ev["kind"] == kind {
                return ev;
            }
        }
    }
}

/// The events a `presence` event carries (`None` for any other event).
pub fn presence_events(event: &Value) -> Option<Vec<Value>> {
    if event["kind"] != "presence" {
        return None;
    }
    let events = event["events"].as_array().expect("presence carries events");
    assert!(!events.is_empty(), "a presence event carries events");
    for inner in events {
        assert_eq!(inner["room"], event["room"], "one room per presence event");
        assert!(
            matches!(inner["kind"].as_str(), Some("join" | "leave" | "state")),
            "only presence changes in a presence event: {inner}"
        );
    }
    Some(events.clone())
}

/// A frame from the relay.
#[derive(Debug)]
pub enum Frame {
    Event(Value),
    Closed(Option<u16>, String),
}

/// An SSE client reading a real HTTP response body.
pub struct Sse {
    pub response_headers: reqwest::header::HeaderMap,
    /// The rest of a `presence` event's events, handed out one by one.
    unpacked: std::collections::VecDeque<SseEvent>,
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
    /// Every raw block seen so far (frames and comments), for tests of the framing.
    pub raw: Vec<String>,
}

/// One SSE event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<String>,
    pub data: Value,
}

impl Sse {
    /// Opens `url` with extra headers; panics unless the answer is 200.
    pub async fn open(url: &str, headers: &[(&str, &str)]) -> Sse {
        match Sse::try_open(url, headers).await {
            Ok(s) => s,
            Err((status, body)) => panic!("SSE open failed: {status} {body}"),
        }
    }

    /// Opens `url`; on a non-200 answer returns its status and JSON body.
    pub async fn try_open(url: &str, headers: &[(&str, &str)]) -> Result<Sse, (u16, Value)> {
        let client = reqwest::Client::new();
        let mut req = client.get(url);
        // As every browser's EventSource asks (and so through the relay's
        // direct stream path), unless the test asks otherwise.
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("accept"))
        {
            req = req.header("accept", "text/event-stream");
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let response = tokio::time::timeout(DEADLINE, req.send())
            .await
            .expect("deadline")
            .expect("request");
        let status = response.status().as_u16();
        if status != 200 {
            let body = response.json::<Value>().await.unwrap_or(Value::Null);
            return Err((status, body));
        }
        Ok(Sse {
            unpacked: Default::default(),
            response_headers: response.headers().clone(),
            body: Box::pin(response.bytes_stream()),
            buffer: String::new(),
            raw: Vec::new(),
        })
    }

    /// The next raw block (up to a blank line), or None at the end of the stream.
    pub async fn next_block(&mut self) -> Option<String> {
        loop {
            if let Some(pos) = self.buffer.find("\n\n") {
                let block = self.buffer[..pos].to_owned();
                self.buffer.drain(..pos + 2);
                self.raw.push(block.clone());
                return Some(block);
            }
            let chunk = tokio::time::timeout(DEADLINE, self.body.next())
                .await
                .expect("no SSE data before the deadline");
            match chunk {
                Some(Ok(bytes)) => self
                    .buffer
                    .push_str(std::str::from_utf8(&bytes).expect("utf-8")),
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// The next event, skipping comments and `retry:`; None at the end of
    /// the stream. A `presence` event's events come one by one.
    pub async fn next_event(&mut self) -> Option<SseEvent> {
        if let Some(event) = self.unpacked.pop_front() {
            return Some(event);
        }
        loop {
            let block = self.next_block().await?;
            let mut event = None;
            let mut id = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    event = Some(v.to_owned());
                } else if let Some(v) = line.strip_prefix("id: ") {
                    id = Some(v.to_owned());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    assert!(
                        data.is_none(),
                        "an event has more than one data line: {block}"
                    );
                    data = Some(serde_json::from_str::<Value>(v).expect("data is JSON"));
                }
            }
            if let (Some(event), Some(data)) = (event, data) {
                assert_eq!(
                    data["kind"],
                    Value::String(event.clone()),
                    "event name matches kind"
                );
                let Some(events) = presence_events(&data) else {
                    return Some(SseEvent { event, id, data });
                };
                self.unpacked
                    .extend(events.into_iter().map(|data| SseEvent {
                        event: data["kind"].as_str().unwrap_or_default().to_owned(),
                        id: None,
                        data,
                    }));
                if let Some(first) = self.unpacked.pop_front() {
                    return Some(first);
                }
            }
        }
    }

    /// The next event's data; panics at the end of the stream.
    pub async fn next(&mut self) -> Value {
        self.next_event().await.expect("SSE stream ended").data
    }

    /// Skips events until one of `kind`.
    pub async fn next_kind(&mut self, kind: &str) -> Value {
        loop {
            let ev = self.next().await;
            if ev["kind"] == kind {
                return ev;
            }
        }
    }
}

/// GETs `path` as JSON (`Accept: application/json`) with a bearer token;
/// returns the JSON answer.
pub async fn get_json(relay: &Relay, path: &str, token: &str) -> Value {
    http()
        .get(relay.http(path))
        .bearer_auth(token)
        .header("accept", "application/json")
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("a JSON answer")
}

/// POSTs `body` as text to `path` with a bearer token.
pub async fn post_text(relay: &Relay, path: &str, token: &str, body: &str) -> (u16, Value) {
    let response = http()
        .post(relay.http(path))
        .bearer_auth(token)
        .body(body.to_owned())
        .send()
        .await
        .expect("post");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// POSTs `bodies` to `path` one after another; returns the ids the relay gave them.
pub async fn publish_all(
    relay: &Relay,
    path: &str,
    token: &str,
    bodies: impl IntoIterator<Item = String>,
) -> Vec<String> {
    let client = http();
    let mut ids = Vec::new();
    for body in bodies {
        let response = client
            .post(relay.http(path))
            .bearer_auth(token)
            .body(body)
            .send()
            .await
            .expect("post");
        assert_eq!(response.status(), 202);
        let answer: Value = response.json().await.expect("json answer");
        ids.push(answer["id"].as_str().expect("an id").to_owned());
    }
    ids
}

/// A relay as a separate process (for SIGKILL, its own memory, its own logs).
pub struct RelayProcess {
    pub child: std::process::Child,
    pub base: String,
}

/// The address in a relay's `edgewire listening` log line, in either log
/// format (text: `… edgewire listening addr=…`; JSON: its `fields`); `None`
/// for any other line.
pub fn listening_addr(line: &str) -> Option<String> {
    if let Ok(json) = serde_json::from_str::<Value>(line) {
        let fields = &json["fields"];
        return (fields["message"] == "edgewire listening")
            .then(|| fields["addr"].as_str().map(str::to_owned))
            .flatten();
    }
    line.split("edgewire listening")
        .nth(1)
        .and_then(|rest| rest.split("addr=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
}

impl RelayProcess {
    /// Starts `edgewire serve` with the fixture secret and `env`, once ready.
    /// It binds port 0 itself and the harness reads the address from its
    /// `edgewire listening` log line: no window between picking a free port
    /// and taking it.
    pub async fn start(env: &[(&str, &str)]) -> RelayProcess {
        use std::io::BufRead;
        let mut command = RelayProcess::command("127.0.0.1:0");
        command
            .env("EDGEWIRE_LOG", "warn,edgewire=info")
            .stderr(std::process::Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("spawn edgewire");
        let stderr = child.stderr.take().expect("piped stderr");
        let (found, address) = std::sync::mpsc::channel();
        // Reads the log to its end, so the pipe never fills.
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(addr) = listening_addr(&line) {
                    let _ = found.send(addr);
                }
            }
        });
        let base = tokio::task::spawn_blocking(move || address.recv_timeout(DEADLINE))
            .await
            .expect("reader")
            .expect("the relay process said where it listens");
        RelayProcess::ready(child, base).await
    }

    /// Starts it on `port` (a restart where the last one ran), once ready.
    pub async fn start_on(port: u16, env: &[(&str, &str)]) -> RelayProcess {
        let mut command = RelayProcess::command(&format!("127.0.0.1:{port}"));
        command
            .env("EDGEWIRE_LOG", "warn")
            .stderr(std::process::Stdio::null());
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command.spawn().expect("spawn edgewire");
        RelayProcess::ready(child, format!("127.0.0.1:{port}")).await
    }

    /// `edgewire serve` on `listen` with the fixture secret (the caller's
    /// settings go on after its own defaults, and win).
    fn command(listen: &str) -> std::process::Command {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_edgewire"));
        command
            .arg("serve")
            .env("EDGEWIRE_LISTEN", listen)
            .env("EDGEWIRE_JWT_SECRET", secret())
            .stdout(std::process::Stdio::null());
        command
    }

    /// Waits until the relay at `base` answers `/readyz`.
    async fn ready(child: std::process::Child, base: String) -> RelayProcess {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Ok(r) = http().get(format!("http://{base}/readyz")).send().await
                && r.status() == 200
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "relay process never ready"
            );
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        RelayProcess { child, base }
    }

    /// Kills it with SIGKILL: no cleanup at all.
    pub fn kill9(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM (a drain) and waits for the process to exit.
    pub async fn terminate(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = tokio::time::Instant::now() + DEADLINE * 2;
        while !matches!(self.child.try_wait(), Ok(Some(_))) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the relay did not exit after SIGTERM"
            );
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.base
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
    }

    /// Its open file descriptors.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Its resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(0)
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
