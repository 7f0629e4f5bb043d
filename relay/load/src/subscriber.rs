//! One subscriber connection (WebSocket or SSE) that counts the stamped
//! messages of its room into a [`Tally`] until the run stops it.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

use crate::payload;
use crate::stats::Tally;
use crate::target::{Sources, Template, connect};
use crate::{LoadError, Transport};

/// When a subscription counts as established.
#[derive(Debug, Clone)]
pub enum Ready {
    /// Once the handshake answered (101 or 200): Nchan subscribes before it
    /// answers.
    Handshake,
    /// Once a frame or line containing this text arrived (Edgewire's
    /// `welcome`: it joins the room after the upgrade).
    Marker(String),
}

/// State every subscriber of a run shares.
#[derive(Debug)]
pub struct Shared {
    /// The run's clock: stamps are µs since this instant.
    pub epoch: Instant,
    /// Messages received by all subscribers.
    pub received: AtomicU64,
    /// Subscribers whose subscription is established.
    pub ready: AtomicU64,
    /// Subscribers that failed to connect or were dropped.
    pub failed: AtomicU64,
    /// The first failure, for the report.
    pub first_error: Mutex<Option<String>>,
    /// Ends every subscriber.
    pub stop: CancellationToken,
    /// Limits connection attempts in flight.
    pub opening: Semaphore,
    /// When a subscription counts as established.
    pub ready_when: Ready,
    /// Whether subscribers follow their room's presence (connect runs).
    pub track_presence: bool,
    /// Subscribers that have seen every other peer of their room.
    pub presence_complete: AtomicU64,
}

impl Shared {
    /// Shared state for a run allowing `concurrency` connection attempts at once.
    pub fn new(ready_when: Ready, concurrency: usize) -> Arc<Shared> {
        Shared::with_presence(ready_when, concurrency, false)
    }

    /// The same, with subscribers that follow their room's presence.
    pub fn with_presence(
        ready_when: Ready,
        concurrency: usize,
        track_presence: bool,
    ) -> Arc<Shared> {
        Arc::new(Shared {
            epoch: Instant::now(),
            received: AtomicU64::new(0),
            ready: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            first_error: Mutex::new(None),
            stop: CancellationToken::new(),
            opening: Semaphore::new(concurrency.max(1)),
            ready_when,
            track_presence,
            presence_complete: AtomicU64::new(0),
        })
    }

    /// Waits until `wanted` subscribers have seen everyone in their room,
    /// or `deadline` passes (the report then says how many did).
    pub async fn wait_presence(&self, wanted: u64, deadline: Duration) {
        let started = Instant::now();
        while self.presence_complete.load(Ordering::Relaxed) < wanted
            && started.elapsed() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// µs since the epoch.
    pub fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    fn fail(&self, error: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
        first.get_or_insert(error);
    }

    /// The first failure seen, or an empty string.
    pub fn first_error(&self) -> String {
        self.first_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_default()
    }

    /// Waits until every one of `wanted` subscribers is ready or failed, or
    /// `deadline` passed; returns the number ready.
    pub async fn wait_ready(&self, wanted: u64, deadline: Duration) -> Result<u64, LoadError> {
        let started = Instant::now();
        loop {
            let ready = self.ready.load(Ordering::Relaxed);
            let failed = self.failed.load(Ordering::Relaxed);
            if ready + failed >= wanted || started.elapsed() > deadline {
                if ready == 0 || started.elapsed() > deadline {
                    return Err(LoadError::NotReady {
                        ready,
                        wanted,
                        failed,
                        seconds: started.elapsed().as_secs(),
                        first_error: self.first_error(),
                    });
                }
                return Ok(ready);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// One subscriber to start.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Its server.
    pub target: Arc<Template>,
    /// WebSocket or SSE.
    pub transport: Transport,
    /// The room's name in URLs.
    pub room_name: String,
    /// The room's index in stamps.
    pub room: u32,
    /// Local address to connect from.
    pub source: Option<IpAddr>,
    /// How many other subscribers share its room (for presence).
    pub others: usize,
}

impl Spec {
    /// `count` subscribers spread round-robin over `rooms`, `targets` and
    /// `sources`.
    pub fn spread(
        count: u64,
        rooms: &[String],
        targets: &[Arc<Template>],
        transport: Transport,
        sources: &Sources,
    ) -> Vec<Spec> {
        let count = count as usize;
        (0..count)
            .map(|n| {
                let room = n % rooms.len();
                // Round-robin: the first `count % rooms` rooms get one more.
                let in_room = count / rooms.len() + usize::from(room < count % rooms.len());
                Spec {
                    target: targets[n % targets.len()].clone(),
                    transport,
                    room_name: rooms[room].clone(),
                    room: room as u32,
                    source: sources.pick(n),
                    others: in_room.saturating_sub(1),
                }
            })
            .collect()
    }
}

/// Starts every subscriber in `specs`.
pub fn spawn_all(specs: Vec<Spec>, shared: &Arc<Shared>) -> Vec<tokio::task::JoinHandle<Tally>> {
    specs
        .into_iter()
        .map(|spec| tokio::spawn(run(spec, shared.clone())))
        .collect()
}

/// Stops every subscriber and collects their tallies.
pub async fn stop_all(shared: &Shared, tasks: Vec<tokio::task::JoinHandle<Tally>>) -> Vec<Tally> {
    shared.stop.cancel();
    let mut tallies = Vec::with_capacity(tasks.len());
    for task in tasks {
        if let Ok(tally) = task.await {
            tallies.push(tally);
        }
    }
    tallies
}

/// Runs one subscriber until the run stops; returns what it saw.
pub async fn run(spec: Spec, shared: Arc<Shared>) -> Tally {
    let mut tally = Tally::new(spec.room);
    if shared.track_presence {
        tally.presence = Some(Box::default());
    }
    let result = match spec.transport {
        Transport::Ws => ws(&spec, &shared, &mut tally).await,
        Transport::Sse => sse(&spec, &shared, &mut tally).await,
    };
    if let Err(e) = result {
        tally.dropped = true;
        shared.fail(e.to_string());
    } else if !shared.stop.is_cancelled() {
        tally.dropped = true;
        shared.fail("the server closed the subscription".into());
    }
    tally
}

/// Feeds one frame or line to the tally; marks the subscriber ready on its
/// marker, and follows presence when the run asks for it.
fn take(text: &[u8], shared: &Shared, tally: &mut Tally, others: usize) {
    if let Some(stamp) = payload::find(text) {
        tally.record(stamp, shared.now_us());
        shared.received.fetch_add(1, Ordering::Relaxed);
        return;
    }
    if let Some(view) = tally.presence.as_mut() {
        view.count(text);
        if view.complete_at_us.is_none() {
            view.take(text, others, shared.now_us());
            if view.complete_at_us.is_some() {
                shared.presence_complete.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    if !tally.ready
        && let Ready::Marker(marker) = &shared.ready_when
        && contains(text, marker.as_bytes())
    {
        mark_ready(shared, tally);
    }
}

fn mark_ready(shared: &Shared, tally: &mut Tally) {
    if !tally.ready {
        tally.ready = true;
        shared.ready.fetch_add(1, Ordering::Relaxed);
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

async fn ws(spec: &Spec, shared: &Shared, tally: &mut Tally) -> Result<(), LoadError> {
    let permit = shared.opening.acquire().await.ok();
    let stream = connect(spec.target.addr(), spec.source)
        .await
        .map_err(|e| LoadError::Connect(e.to_string()))?;
    // Small buffers: the generator holds up to 20 000 of these.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (mut socket, _) = tokio_tungstenite::client_async_with_config(
        spec.target.url(&spec.room_name),
        stream,
        Some(config),
    )
    .await
    .map_err(|e| LoadError::Request(e.to_string()))?;
    if matches!(shared.ready_when, Ready::Handshake) {
        mark_ready(shared, tally);
    }
    let mut permit = permit;
    loop {
        if tally.ready {
            permit.take();
        }
        tokio::select! {
            _ = shared.stop.cancelled() => return Ok(()),
            next = socket.next() => match next {
                Some(Ok(Message::Text(text))) => take(text.as_bytes(), shared, tally, spec.others),
                Some(Ok(Message::Binary(data))) => take(&data, shared, tally, spec.others),
                Some(Ok(Message::Close(frame))) => {
                    return Err(LoadError::Request(format!("closed by the server: {frame:?}")));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(LoadError::Request(e.to_string())),
                None => return Ok(()),
            }
        }
    }
}

async fn sse(spec: &Spec, shared: &Shared, tally: &mut Tally) -> Result<(), LoadError> {
    let permit = shared.opening.acquire().await.ok();
    let stream = connect(spec.target.addr(), spec.source)
        .await
        .map_err(|e| LoadError::Connect(e.to_string()))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(|e| LoadError::Request(e.to_string()))?;
    let connection = tokio::spawn(connection);
    let request = Request::get(spec.target.path(&spec.room_name))
        .header(hyper::header::HOST, spec.target.host())
        .header(hyper::header::ACCEPT, "text/event-stream")
        .body(Empty::new())
        .map_err(|e| LoadError::Request(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| LoadError::Request(e.to_string()))?;
    if !response.status().is_success() {
        connection.abort();
        return Err(LoadError::Status(response.status().as_u16()));
    }
    if matches!(shared.ready_when, Ready::Handshake) {
        mark_ready(shared, tally);
    }
    let mut permit = permit;
    let mut body = response.into_body();
    let mut line: Vec<u8> = Vec::new();
    let result = loop {
        if tally.ready {
            permit.take();
        }
        tokio::select! {
            _ = shared.stop.cancelled() => break Ok(()),
            frame = body.frame() => match frame {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        feed_lines(&mut line, &data, |l| take(l, shared, tally, spec.others));
                    }
                }
                Some(Err(e)) => break Err(LoadError::Request(e.to_string())),
                None => break Ok(()),
            }
        }
    };
    connection.abort();
    result
}

/// Splits a chunk of an SSE stream into lines, carrying a partial line over
/// in `pending` to the next chunk.
fn feed_lines(pending: &mut Vec<u8>, chunk: &[u8], mut each: impl FnMut(&[u8])) {
    let mut rest = chunk;
    while let Some(end) = rest.iter().position(|b| *b == b'\n') {
        if pending.is_empty() {
            each(&rest[..end]);
        } else {
            pending.extend_from_slice(&rest[..end]);
            each(pending);
            pending.clear();
        }
        rest = &rest[end + 1..];
    }
    pending.extend_from_slice(rest);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_across_chunks() {
        let mut pending = Vec::new();
        let mut lines = Vec::new();
        for chunk in [&b"data: a"[..], b"bc\n\nda", b"ta: x\n"] {
            feed_lines(&mut pending, chunk, |l| lines.push(l.to_vec()));
        }
        assert_eq!(
            lines,
            vec![b"data: abc".to_vec(), vec![], b"data: x".to_vec()]
        );
        assert!(pending.is_empty());
    }
}
