//! Replays the golden transcripts in fixtures/transcripts against a real relay.
//! The format and matching rules are described in fixtures/README.md.

use std::collections::HashMap;

use serde_json::{Map, Value};
use tokio_tungstenite::tungstenite::protocol::Message;

use crate::harness::{Relay, Sse, TokenIn, Ws, fixtures, http, token_with};

enum Client {
    Ws(Ws),
    Sse(Sse),
}

impl Client {
    async fn next(&mut self) -> (Value, Option<String>) {
        match self {
            Client::Ws(ws) => (ws.next().await, None),
            Client::Sse(sse) => {
                let ev = sse.next_event().await.expect("SSE stream ended");
                (ev.data, ev.id)
            }
        }
    }
}

/// Variables bound while matching (`$name`).
type Vars = HashMap<String, Value>;

/// Matches `actual` against `pattern`, binding `$vars`. Objects match as
/// subsets, arrays element by element, `"*"` matches any value.
fn matches(pattern: &Value, actual: &Value, vars: &mut Vars) -> Result<(), String> {
    match pattern {
        Value::String(s) if s == "*" => Ok(()),
        Value::String(s) if s.starts_with('$') => match vars.get(s) {
            Some(bound) if bound == actual => Ok(()),
            Some(bound) => Err(format!("{s} is {bound}, got {actual}")),
            None => {
                vars.insert(s.clone(), actual.clone());
                Ok(())
            }
        },
        Value::Object(p) => {
            let Value::Object(a) = actual else {
                return Err(format!("expected an object, got {actual}"));
            };
            for (k, v) in p {
                let got = a
                    .get(k)
                    .ok_or_else(|| format!("missing field {k:?} in {actual}"))?;
                matches(v, got, vars).map_err(|e| format!("{k}: {e}"))?;
            }
            Ok(())
        }
        Value::Array(p) => {
            let Value::Array(a) = actual else {
                return Err(format!("expected an array, got {actual}"));
            };
            if p.len() != a.len() {
                return Err(format!("expected {} items, got {actual}", p.len()));
            }
            for (i, (pv, av)) in p.iter().zip(a).enumerate() {
                matches(pv, av, vars).map_err(|e| format!("[{i}]: {e}"))?;
            }
            Ok(())
        }
        other if other == actual => Ok(()),
        other => Err(format!("expected {other}, got {actual}")),
    }
}

/// Replaces bound `$vars` inside a value to send.
fn substitute(value: &Value, vars: &Vars) -> Value {
    match value {
        Value::String(s) if s.starts_with('$') => vars
            .get(s)
            .cloned()
            .unwrap_or_else(|| panic!("unbound {s}")),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), substitute(v, vars)))
                .collect::<Map<_, _>>(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(|v| substitute(v, vars)).collect()),
        other => other.clone(),
    }
}

fn token_for(spec: &Value) -> String {
    let grants: Vec<String> = spec["rooms"]
        .as_object()
        .expect("rooms")
        .iter()
        .map(|(p, r)| {
            let rights: Vec<&str> = r
                .as_array()
                .expect("rights")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            format!("{p}={}", rights.join(","))
        })
        .collect();
    let grants: Vec<&str> = grants.iter().map(String::as_str).collect();
    let meta = spec.get("meta").cloned();
    token_with(
        spec["sub"].as_str().expect("sub"),
        &grants,
        std::time::Duration::from_secs(3600),
        meta,
    )
}

async fn replay(relay: &Relay, transcript: &Value) {
    let name = transcript["name"].as_str().unwrap_or("?");
    let room = transcript["room"].as_str().expect("room");
    let specs = transcript["clients"].as_object().expect("clients");
    let tokens: HashMap<&str, String> = specs
        .iter()
        .map(|(n, s)| (n.as_str(), token_for(s)))
        .collect();
    let mut clients: HashMap<String, Client> = HashMap::new();
    let mut vars = Vars::new();
    for (i, step) in transcript["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .enumerate()
    {
        let at = format!("{name}, step {i}: {step}");
        if let Some(who) = step["connect"].as_str() {
            let spec = &specs[who];
            let default_path = format!("/rooms/{room}");
            let path = spec["path"].as_str().unwrap_or(&default_path);
            let client = match spec["transport"].as_str() {
                Some("sse") => Client::Sse(
                    Sse::open(
                        &relay.http(path),
                        &[
                            ("authorization", &format!("Bearer {}", tokens[who])),
                            ("accept", "text/event-stream"),
                        ],
                    )
                    .await,
                ),
                _ => Client::Ws(Ws::connect(relay, path, &tokens[who], TokenIn::Header).await),
            };
            clients.insert(who.to_owned(), client);
        } else if let Some(who) = step["send"].as_str() {
            let op = substitute(&step["op"], &vars);
            match clients.get_mut(who) {
                Some(Client::Ws(ws)) => ws.send(op).await,
                _ => panic!("{at}: send needs a WebSocket client"),
            }
        } else if let Some(who) = step["send_text"].as_str() {
            if let Some(Client::Ws(ws)) = clients.get_mut(who) {
                ws.send_raw(Message::Text(step["text"].as_str().unwrap_or("").into()))
                    .await;
            }
        } else if let Some(who) = step["send_binary"].as_str() {
            if let Some(Client::Ws(ws)) = clients.get_mut(who) {
                ws.send_raw(Message::Binary(vec![1u8, 2, 3].into())).await;
            }
        } else if let Some(who) = step["close"].as_str() {
            match clients.remove(who) {
                Some(Client::Ws(mut ws)) => {
                    let _ = ws.stream.close(None).await;
                }
                Some(Client::Sse(sse)) => drop(sse),
                None => panic!("{at}: no client {who}"),
            }
        } else if let Some(who) = step["post"].as_str().or(step["http"].as_str()) {
            let method = step["method"].as_str().unwrap_or("POST");
            let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
            let default_path = format!("/rooms/{room}");
            let path = step["path"].as_str().unwrap_or(&default_path);
            let mut req = http()
                .request(method, relay.http(path))
                .bearer_auth(&tokens[who]);
            if let Some(q) = step["query"].as_object() {
                let pairs: Vec<(String, String)> = q
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            substitute(v, &vars)
                                .as_str()
                                .map(str::to_owned)
                                .unwrap_or_else(|| v.to_string()),
                        )
                    })
                    .collect();
                req = req.query(&pairs);
            }
            req = match (&step["json"], &step["body"]) {
                (Value::Null, body) => req.body(body.as_str().unwrap_or("").to_owned()),
                (json, _) => req
                    .header("content-type", "application/json")
                    .body(json.to_string()),
            };
            let response = req.send().await.expect("post");
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            assert_eq!(
                Some(u64::from(status)),
                step["status"].as_u64(),
                "{at}: status, body {body}"
            );
            matches(&step["response"], &body, &mut vars).unwrap_or_else(|e| panic!("{at}: {e}"));
        } else if let Some(who) = step["expect"].as_str() {
            let client = clients
                .get_mut(who)
                .unwrap_or_else(|| panic!("{at}: no client {who}"));
            if let Some(pattern) = step.get("event") {
                let (event, sse_id) = client.next().await;
                matches(pattern, &event, &mut vars)
                    .unwrap_or_else(|e| panic!("{at}: {e}\n got {event}"));
                if let Some(id_pattern) = step.get("sse_id") {
                    let id = sse_id.map(Value::String).unwrap_or(Value::Null);
                    matches(id_pattern, &id, &mut vars)
                        .unwrap_or_else(|e| panic!("{at}: sse id: {e}"));
                }
            } else if let Some(patterns) = step["unordered"].as_array() {
                let mut events = Vec::new();
                for _ in patterns {
                    events.push(client.next().await.0);
                }
                for pattern in patterns {
                    let found = events.iter().position(|e| {
                        let mut trial = vars.clone();
                        if matches(pattern, e, &mut trial).is_ok() {
                            vars = trial;
                            true
                        } else {
                            false
                        }
                    });
                    match found {
                        Some(pos) => {
                            events.remove(pos);
                        }
                        None => panic!("{at}: no event matches {pattern} among {events:?}"),
                    }
                }
            } else if let Some(pattern) = step.get("skip_until") {
                loop {
                    let (event, _) = client.next().await;
                    if let Some(forbidden) = step.get("forbid") {
                        let mut trial = vars.clone();
                        assert!(
                            matches(forbidden, &event, &mut trial).is_err(),
                            "{at}: forbidden event {event}"
                        );
                    }
                    let mut trial = vars.clone();
                    if matches(pattern, &event, &mut trial).is_ok() {
                        vars = trial;
                        break;
                    }
                }
            }
        } else {
            panic!("{at}: unknown step");
        }
    }
}

#[tokio::test]
async fn golden_transcripts_replay() {
    let dir = fixtures().join("transcripts");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("transcripts")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    paths.sort();
    assert!(
        paths.len() >= 4,
        "expected the golden transcripts in {}",
        dir.display()
    );
    for path in paths {
        let text = std::fs::read_to_string(&path).expect("read");
        let transcript: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let relay = Relay::start(&[]).await;
        replay(&relay, &transcript).await;
    }
}

#[test]
fn matcher_can_fail() {
    let mut vars = Vars::new();
    assert!(
        matches(
            &serde_json::json!({"a": 1}),
            &serde_json::json!({"a": 2}),
            &mut vars
        )
        .is_err()
    );
    assert!(
        matches(
            &serde_json::json!({"a": "$x"}),
            &serde_json::json!({"a": 2}),
            &mut vars
        )
        .is_ok()
    );
    assert!(
        matches(
            &serde_json::json!({"b": "$x"}),
            &serde_json::json!({"b": 3}),
            &mut vars
        )
        .is_err()
    );
    assert!(
        matches(
            &serde_json::json!([1]),
            &serde_json::json!([1, 2]),
            &mut vars
        )
        .is_err()
    );
    assert!(
        matches(
            &serde_json::json!({"c": "*"}),
            &serde_json::json!({}),
            &mut vars
        )
        .is_err()
    );
}
