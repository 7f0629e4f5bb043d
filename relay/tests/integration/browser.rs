//! Browser safety: allowed origins for WebSocket upgrades, CORS preflights, and
//! tokens kept out of logs.

use std::process::{Command, Stdio};

use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::harness::{Relay, Sse, TokenIn, Ws, http, secret, token};

async fn upgrade_status(relay: &Relay, origin: Option<&str>) -> u16 {
    let mut request = relay
        .ws_url(&format!("/rooms/r?token={}", token("u", &["r=read"])))
        .into_client_request()
        .unwrap();
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", origin.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((_, response)) => response.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn websocket_upgrades_from_other_origins_are_refused() {
    let relay = Relay::start(&[(
        "EDGEWIRE_ALLOWED_ORIGINS",
        "https://app.example, https://admin.example",
    )])
    .await;
    assert_eq!(
        upgrade_status(&relay, Some("https://app.example")).await,
        101
    );
    assert_eq!(
        upgrade_status(&relay, None).await,
        101,
        "non-browser clients send no Origin"
    );
    assert_eq!(
        upgrade_status(&relay, Some("https://evil.example")).await,
        403
    );
    let open = Relay::start(&[]).await;
    assert_eq!(
        upgrade_status(&open, Some("https://anywhere.example")).await,
        101,
        "any origin when unset"
    );
}

#[tokio::test]
async fn cors_preflights_are_answered_only_for_allowed_origins() {
    let relay = Relay::start(&[("EDGEWIRE_ALLOWED_ORIGINS", "https://app.example")]).await;
    let preflight = |origin: &'static str| {
        http()
            .request(reqwest::Method::OPTIONS, relay.http("/rooms/r"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
    };
    let allowed = preflight("https://app.example").await.unwrap();
    assert_eq!(
        allowed
            .headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("https://app.example")
    );
    let methods = allowed
        .headers()
        .get("access-control-allow-methods")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_uppercase();
    for m in ["POST", "PUT", "DELETE"] {
        assert!(methods.contains(m), "{methods}");
    }
    let headers = allowed
        .headers()
        .get("access-control-allow-headers")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    assert!(
        headers.contains("authorization") && headers.contains("content-type"),
        "{headers}"
    );
    let refused = preflight("https://evil.example").await.unwrap();
    assert!(
        refused
            .headers()
            .get("access-control-allow-origin")
            .is_none(),
        "no CORS grant for other origins"
    );
    // A real request from the allowed origin carries the grant and exposes Retry-After.
    let response = http()
        .post(relay.http("/rooms/r"))
        .header("origin", "https://app.example")
        .bearer_auth(token("u", &["r=write"]))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response
            .headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("https://app.example")
    );
}

#[tokio::test]
async fn debug_logs_of_a_session_and_a_post_hold_no_token() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_edgewire"))
        .arg("serve")
        .env("EDGEWIRE_LISTEN", "127.0.0.1:0")
        .env("EDGEWIRE_JWT_SECRET", secret())
        .env("EDGEWIRE_LOG", "debug")
        .env("EDGEWIRE_LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The relay binds port 0 and says where in its log; every line is kept
    // for the checks below.
    let stderr = child.stderr.take().unwrap();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut logs = String::new();
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
            let Ok(line) = line else { break };
            if let Some(addr) = crate::harness::listening_addr(&line) {
                let _ = addr_tx.send(addr);
            }
            logs.push_str(&line);
            logs.push('\n');
        }
        logs
    });
    let base = addr_rx
        .recv_timeout(crate::harness::DEADLINE)
        .expect("the relay says where it listens");
    let tok = token("logged", &["r=read,write"]);
    let signature = tok.rsplit('.').next().unwrap().to_owned();
    // A WebSocket with the token in the query, another in the subprotocol, an
    // SSE stream with the header, a POST with the header and one with the query,
    // and a refused bad token.
    let mut ws = Ws::connect_url(&format!("ws://{base}/rooms/r"), &tok, TokenIn::Query).await;
    ws.next_kind("welcome").await;
    let mut ws2 =
        Ws::connect_url(&format!("ws://{base}/rooms/r"), &tok, TokenIn::Subprotocol).await;
    ws2.next_kind("welcome").await;
    let mut sse = Sse::open(
        &format!("http://{base}/rooms/r"),
        &[("authorization", &format!("Bearer {tok}"))],
    )
    .await;
    sse.next_kind("welcome").await;
    http()
        .post(format!("http://{base}/rooms/r"))
        .bearer_auth(&tok)
        .body("hello")
        .send()
        .await
        .unwrap();
    http()
        .post(format!("http://{base}/rooms/r?token={tok}"))
        .body("hello")
        .send()
        .await
        .unwrap();
    http()
        .post(format!("http://{base}/rooms/r?token={tok}x"))
        .body("hello")
        .send()
        .await
        .unwrap();
    ws.next_kind("message").await;
    drop((ws, ws2, sse));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let logs = reader.join().unwrap();
    assert!(logs.contains("request"), "debug logs were written:\n{logs}");
    assert!(logs.contains("REDACTED"), "the query token was redacted");
    // JSON lines with session spans: transport, peer, room and the close code.
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        !lines.is_empty() && lines.len() == logs.lines().count(),
        "every log line is JSON"
    );
    let closed = lines
        .iter()
        .find(|l| {
            l["fields"]["message"] == "session closed" && l["span"]["transport"] == "websocket"
        })
        .unwrap_or_else(|| panic!("a WebSocket session-closed line:\n{logs}"));
    assert_eq!(closed["span"]["room"], "r");
    assert!(
        closed["span"]["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("logged."))
    );
    // 0: the client went away without a close frame from the relay.
    assert!(closed["span"]["close_code"].is_u64(), "{closed}");
    assert!(
        !logs.contains(&signature),
        "a token reached the logs:\n{logs}"
    );
}
