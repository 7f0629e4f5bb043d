//! A small run of the load generator (`edgewire-load`) against a real relay:
//! a few hundred messages over WebSocket and over SSE must all arrive, once,
//! in one order per room. The benchmarks proper are not tests.

use std::time::Duration;

use edgewire_load::subscriber::Ready;
use edgewire_load::{Transport, connect, fanout, publish};

use crate::harness::{Relay, token};

fn fanout_options(relay: &Relay, transport: Transport, token: &str) -> fanout::Options {
    let sub = match transport {
        Transport::Ws => format!("ws://{}/rooms/{{room}}?token={{token}}", relay.addr),
        Transport::Sse => format!("http://{}/rooms/{{room}}?token={{token}}", relay.addr),
    };
    fanout::Options {
        name: format!("smoke {transport:?}"),
        label: "edgewire".into(),
        sub_urls: vec![sub],
        pub_urls: vec![format!(
            "http://{}/rooms/{{room}}?token={{token}}",
            relay.addr
        )],
        token: token.into(),
        transport,
        rooms: 3,
        subscribers: 12,
        messages: 300,
        size: 128,
        rate: None,
        publishers: 3,
        sources: 2,
        server_pids: vec![std::process::id()],
        ready: Ready::Marker("welcome".into()),
        concurrency: 8,
        settle: Duration::ZERO,
        drain_timeout: Duration::from_secs(10),
        room_prefix: fanout::fresh_prefix(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_smoke_run_delivers_every_message_once_in_order() {
    let relay = Relay::start(&[]).await;
    let token = token("bench", &["*=read,write"]);
    for transport in [Transport::Ws, Transport::Sse] {
        let report = fanout::run(fanout_options(&relay, transport, &token))
            .await
            .expect("fanout run");
        let what = format!("{transport:?}: {}", report.json());
        assert_eq!((report.connected, report.failed), (12, 0), "{what}");
        assert_eq!(
            (report.published, report.publish_errors),
            (300, 0),
            "{what}"
        );
        // 4 subscribers in each of 3 rooms, 100 messages per room.
        assert_eq!(report.expected, 1200, "{what}");
        assert_eq!(report.delivered, 1200, "{what}");
        assert_eq!(
            (
                report.lost,
                report.duplicates,
                report.wrong_room,
                report.order_mismatches
            ),
            (0, 0, 0, 0),
            "{what}"
        );
        assert!(report.latency.max_us > 0, "{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_and_publish_smoke_runs_complete() {
    let relay = Relay::start(&[]).await;
    let token = token("bench", &["*=read,write"]);
    let report = connect::run(connect::Options {
        name: "smoke connect".into(),
        label: "edgewire".into(),
        sub_urls: vec![format!(
            "http://{}/rooms/{{room}}?token={{token}}",
            relay.addr
        )],
        token: token.clone(),
        transport: Transport::Sse,
        connections: 40,
        rooms: 4,
        sources: 4,
        server_pids: vec![std::process::id()],
        ready: Ready::Marker("welcome".into()),
        concurrency: 16,
        settle: Duration::ZERO,
        room_prefix: fanout::fresh_prefix(),
        follow_presence: true,
    })
    .await
    .expect("connect run");
    assert_eq!(
        (report.connected, report.failed, report.full_presence),
        (40, 0, 40),
        "every subscriber connected and saw its room's 9 others: {}",
        report.json()
    );

    let report = publish::run(publish::Options {
        name: "smoke publish".into(),
        label: "edgewire".into(),
        pub_urls: vec![format!(
            "http://{}/rooms/{{room}}?token={{token}}",
            relay.addr
        )],
        token,
        rooms: 5,
        messages: 200,
        size: 128,
        publishers: 4,
        sources: 1,
        server_pids: vec![std::process::id()],
        room_prefix: fanout::fresh_prefix(),
    })
    .await
    .expect("publish run");
    assert_eq!(
        (report.published, report.publish_errors),
        (200, 0),
        "{}",
        report.json()
    );
}
