//! Publishers: a fixed number of keep-alive HTTP/1.1 connections POSTing
//! stamped messages round-robin over the rooms, flat out or at a target
//! rate. Concurrency is bounded by the number of connections.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use crate::LoadError;
use crate::payload::{self, Stamp};
use crate::stats::Histogram;
use crate::target::{Sources, Template, connect};

/// What to publish.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Servers to POST to; publisher `i` uses `targets[i % len]`.
    pub targets: Vec<Arc<Template>>,
    /// Room names, in stamp index order.
    pub rooms: Vec<String>,
    /// Messages in all, spread round-robin over the rooms.
    pub messages: u64,
    /// Body size in bytes.
    pub size: usize,
    /// Messages per second over all publishers; None: flat out.
    pub rate: Option<f64>,
    /// Concurrent connections.
    pub publishers: usize,
    /// Source addresses.
    pub sources: Sources,
}

/// What the publishers did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Messages each room's server accepted (2xx), by room index.
    pub accepted: Vec<u64>,
    /// Messages refused or failed.
    pub errors: u64,
    /// The first failure, if any.
    pub first_error: Option<String>,
    /// Request round-trip times, µs.
    pub latency: Histogram,
    /// From the first send to the last answer.
    pub elapsed: Duration,
}

/// Publishes `plan`, stamping send times against `epoch`.
pub async fn publish(plan: Plan, epoch: Instant) -> Outcome {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let plan = Arc::new(plan);
    let mut tasks = Vec::new();
    for worker in 0..plan.publishers.max(1) {
        let (plan, next) = (plan.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            publisher(worker, &plan, &next, started, epoch).await
        }));
    }
    let mut outcome = Outcome {
        accepted: vec![0; plan.rooms.len()],
        ..Outcome::default()
    };
    for task in tasks {
        match task.await {
            Ok(part) => {
                for (a, b) in outcome.accepted.iter_mut().zip(&part.accepted) {
                    *a += b;
                }
                outcome.errors += part.errors;
                outcome.latency.merge(&part.latency);
                if outcome.first_error.is_none() {
                    outcome.first_error = part.first_error;
                }
            }
            Err(e) => {
                outcome.errors += 1;
                outcome.first_error.get_or_insert(e.to_string());
            }
        }
    }
    outcome.elapsed = started.elapsed();
    outcome
}

async fn publisher(
    worker: usize,
    plan: &Plan,
    next: &AtomicU64,
    started: Instant,
    epoch: Instant,
) -> Outcome {
    let target = &plan.targets[worker % plan.targets.len()];
    let rooms = plan.rooms.len() as u64;
    let mut outcome = Outcome {
        accepted: vec![0; plan.rooms.len()],
        ..Outcome::default()
    };
    let paths: Vec<String> = plan.rooms.iter().map(|r| target.path(r)).collect();
    let mut sender: Option<SendRequest<Full<Bytes>>> = None;
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= plan.messages {
            return outcome;
        }
        if let Some(rate) = plan.rate {
            let due = started + Duration::from_secs_f64(i as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let room = (i % rooms) as usize;
        if sender.as_ref().is_none_or(|s| s.is_closed()) {
            match open(target, plan.sources.pick(worker)).await {
                Ok(s) => sender = Some(s),
                Err(e) => {
                    outcome.errors += 1;
                    outcome.first_error.get_or_insert(e.to_string());
                    continue;
                }
            }
        }
        let Some(s) = sender.as_mut() else { continue };
        let sent_us = epoch.elapsed().as_micros() as u64;
        let stamp = Stamp {
            room: room as u32,
            seq: (i / rooms) as u32,
            sent_us,
        };
        let body = Bytes::from(payload::encode(stamp, plan.size));
        let sent = Instant::now();
        match post(s, &paths[room], target.host(), body).await {
            Ok(()) => {
                outcome.accepted[room] += 1;
                outcome.latency.record(sent.elapsed().as_micros() as u64);
            }
            Err(e) => {
                outcome.errors += 1;
                if !matches!(e, LoadError::Status(_)) {
                    sender = None;
                }
                outcome.first_error.get_or_insert(e.to_string());
            }
        }
    }
}

/// Opens one keep-alive HTTP/1.1 connection.
async fn open(
    target: &Template,
    source: Option<std::net::IpAddr>,
) -> Result<SendRequest<Full<Bytes>>, LoadError> {
    let stream = connect(target.addr(), source)
        .await
        .map_err(|e| LoadError::Connect(e.to_string()))?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| LoadError::Request(e.to_string()))?;
    tokio::spawn(connection);
    Ok(sender)
}

async fn post(
    sender: &mut SendRequest<Full<Bytes>>,
    path: &str,
    host: &str,
    body: Bytes,
) -> Result<(), LoadError> {
    sender
        .ready()
        .await
        .map_err(|e| LoadError::Request(e.to_string()))?;
    let request = Request::post(path)
        .header(hyper::header::HOST, host)
        .header(hyper::header::CONTENT_TYPE, "text/plain")
        .body(Full::new(body))
        .map_err(|e| LoadError::Request(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| LoadError::Request(e.to_string()))?;
    let status = response.status();
    // Read the answer whole so the connection can carry the next request.
    response
        .into_body()
        .collect()
        .await
        .map_err(|e| LoadError::Request(e.to_string()))?;
    if status.is_success() {
        Ok(())
    } else {
        Err(LoadError::Status(status.as_u16()))
    }
}
