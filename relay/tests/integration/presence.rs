//! Presence coalescing: a room's changes within a window reach each
//! subscriber as one `presence` frame, each change once and in order.

use std::time::Instant;

use futures_util::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::protocol::Message;

use crate::harness::{DEADLINE, Relay, TokenIn, Ws, presence_events, token};

/// A WebSocket peer `sub` joined to `room` (reading and writing).
async fn join(relay: &Relay, room: &str, sub: &str) -> Ws {
    let grant = format!("{room}=read,write");
    Ws::connect(
        relay,
        &format!("/rooms/{room}"),
        &token(sub, &[grant.as_str()]),
        TokenIn::Header,
    )
    .await
}

/// The next text frame as JSON, unpacked by nobody: what a client receives.
async fn raw_frame(ws: &mut Ws) -> Value {
    loop {
        match tokio::time::timeout(DEADLINE, ws.stream.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(&t).expect("JSON"),
            Ok(Some(Ok(_))) => continue,
            other => panic!("no frame: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_crowd_joining_at_once_reaches_an_observer_in_few_frames_each_join_once() {
    const WINDOW_MS: u64 = 2000;
    const CROWD: usize = 40;
    let relay = Relay::start(&[("EDGEWIRE_PRESENCE_WINDOW", "2s")]).await;
    let mut observer = join(&relay, "crowd", "observer").await;
    assert_eq!(raw_frame(&mut observer).await["kind"], "welcome");

    let started = Instant::now();
    let mut crowd = Vec::new();
    for i in 0..CROWD {
        let mut ws = join(&relay, "crowd", &format!("p{i}")).await;
        let welcome = ws.next_kind("welcome").await;
        crowd.push((
            welcome["peer"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            ws,
        ));
    }
    let joined_in = started.elapsed();

    let mut frames = 0;
    let mut joins = Vec::new();
    while joins.len() < CROWD {
        let frame = raw_frame(&mut observer).await;
        frames += 1;
        match presence_events(&frame) {
            Some(events) => joins.extend(events),
            None => joins.push(frame),
        }
    }
    let ids: Vec<String> = joins
        .iter()
        .map(|e| e["peer"]["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    let expected: Vec<String> = crowd.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(ids, expected, "every join once, in the order they joined");
    assert!(joins.iter().all(|e| e["kind"] == "join"));
    // The first change goes at once; the rest, one frame per window at most.
    let windows = joined_in.as_millis() as u64 / WINDOW_MS + 1;
    assert!(
        frames as u64 <= 1 + windows,
        "{frames} frames for {CROWD} joins over {joined_in:?} ({windows} windows)"
    );

    // A crowd leaving reaches the observer too, each leave once.
    drop(crowd);
    let mut leaves = Vec::new();
    while leaves.len() < CROWD {
        let frame = raw_frame(&mut observer).await;
        leaves.extend(presence_events(&frame).unwrap_or_else(|| vec![frame]));
    }
    let mut left: Vec<String> = leaves
        .iter()
        .map(|e| e["peer"]["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    left.sort_unstable();
    let mut all = expected.clone();
    all.sort_unstable();
    assert_eq!(left, all, "every leave once");
}

#[tokio::test]
async fn with_no_window_each_change_is_its_own_event() {
    let relay = Relay::start(&[("EDGEWIRE_PRESENCE_WINDOW", "0")]).await;
    let mut observer = join(&relay, "solo", "observer").await;
    assert_eq!(raw_frame(&mut observer).await["kind"], "welcome");
    let mut peers = Vec::new();
    for i in 0..5 {
        peers.push(join(&relay, "solo", &format!("p{i}")).await);
    }
    for _ in 0..5 {
        assert_eq!(raw_frame(&mut observer).await["kind"], "join");
    }
}

#[tokio::test]
async fn joiners_of_one_window_see_everyone_from_their_welcome_and_its_presence() {
    const JOINERS: usize = 6;
    let relay = Relay::start(&[("EDGEWIRE_PRESENCE_WINDOW", "300ms")]).await;
    let mut observer = join(&relay, "window", "observer").await;
    let welcome = raw_frame(&mut observer).await;
    let mut everyone = vec![
        welcome["peer"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    ];
    let mut joiners = Vec::new();
    for i in 0..JOINERS {
        let mut ws = join(&relay, "window", &format!("p{i}")).await;
        let welcome = raw_frame(&mut ws).await;
        assert_eq!(welcome["kind"], "welcome");
        let me = welcome["peer"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let seen: Vec<String> = welcome["peers"]
            .as_array()
            .expect("a welcome lists peers")
            .iter()
            .map(|p| p["id"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert!(!seen.contains(&me), "a welcome never lists its own peer");
        assert!(
            seen.iter().all(|id| everyone.contains(id)),
            "{seen:?} lists only peers that joined before {me}"
        );
        everyone.push(me.clone());
        joiners.push((me, seen, ws));
    }
    // The welcome and the presence events after it, applied as the SDK
    // applies them, give each joiner the whole room.
    for (me, mut seen, mut ws) in joiners {
        let others: Vec<&String> = everyone.iter().filter(|id| **id != me).collect();
        while !others.iter().all(|id| seen.contains(id)) {
            let frame = raw_frame(&mut ws).await;
            for event in presence_events(&frame).unwrap_or_else(|| vec![frame]) {
                let id = event["peer"]["id"].as_str().unwrap_or_default().to_owned();
                match event["kind"].as_str() {
                    Some("join") if id != me && !seen.contains(&id) => seen.push(id),
                    Some("leave") => panic!("nobody left: {event}"),
                    _ => {}
                }
            }
        }
    }
}
