//! The `edgewire` binary itself: dev mode, the token command, config errors.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::harness::{DEADLINE, Sse, http, secret};

const BIN: &str = env!("CARGO_BIN_EXE_edgewire");

/// Runs `edgewire serve` in dev mode and reads its banner until the curl line.
fn start_dev() -> (std::process::Child, String, String) {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--shutdown-grace", "1s"])
        .env_remove("EDGEWIRE_JWT_SECRET")
        .env_remove("EDGEWIRE_JWT_PUBLIC_KEY")
        .env_remove("EDGEWIRE_JWKS_URL")
        .env("EDGEWIRE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn edgewire");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut banner = String::new();
    let curl = loop {
        let line = lines.next().expect("banner line").expect("utf-8");
        banner.push_str(&line);
        banner.push('\n');
        if line.starts_with("curl -N") {
            break line;
        }
    };
    assert!(banner.contains("DEV MODE"), "{banner}");
    // Keep reading what the relay prints, as a terminal would.
    std::thread::spawn(move || lines.for_each(drop));
    let url = curl
        .trim_start_matches("curl -N '")
        .trim_end_matches('\'')
        .to_owned();
    let token = url
        .split("token=")
        .nth(1)
        .expect("token in the curl line")
        .to_owned();
    (child, url, token)
}

#[tokio::test]
async fn dev_mode_token_works_with_plain_curl_and_sigterm_exits_cleanly() {
    let (mut child, url, token) = start_dev();
    // Exactly what the banner says to run: a GET with no headers streams the room.
    let mut sse = Sse::open(&url, &[]).await;
    let welcome = sse.next().await;
    assert_eq!(welcome["kind"], "welcome");
    assert_eq!(welcome["room"], "lobby");
    let base = url.split("/rooms/").next().unwrap();
    let response = http()
        .post(format!("{base}/rooms/lobby"))
        .bearer_auth(&token)
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let message = sse.next_kind("message").await;
    assert_eq!(message["data"], "hello");

    let ws_url = url.replace("http://", "ws://");
    let mut ws = crate::harness::Ws::connect_url(&ws_url, "", crate::harness::TokenIn::None).await;
    assert_eq!(ws.next().await["kind"], "welcome");

    let pid = child.id().to_string();
    let signalled = std::time::Instant::now();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let last = sse.next_kind("error").await;
    assert_eq!(last["code"], "draining");
    // retry_after is the suggested delay rounded up, never down.
    let ms: u64 = last["message"]
        .as_str()
        .and_then(|m| m.split("reconnect in ").nth(1))
        .and_then(|m| m.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no delay in {last}"));
    let secs = last["retry_after"].as_u64().unwrap();
    assert!(
        secs * 1000 >= ms && secs * 1000 < ms + 1000,
        "{ms} ms as {secs} s"
    );
    assert!(sse.next_event().await.is_none(), "the SSE stream ended");
    let (_, code) = ws.until_close().await;
    assert_eq!(code, Some(1001));
    let deadline = std::time::Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "edgewire did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "exit status {status}");
    assert!(
        signalled.elapsed() < Duration::from_secs(3),
        "exited within the 1 s grace plus margin: {:?}",
        signalled.elapsed()
    );
}

#[test]
fn bad_settings_stop_start_up_naming_each_key() {
    let output = Command::new(BIN)
        .args(["serve", "--listen", "nowhere", "--max-connections", "lots"])
        .env("EDGEWIRE_SSE_HEARTBEAT", "often")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for key in [
        "EDGEWIRE_LISTEN",
        "EDGEWIRE_MAX_CONNECTIONS",
        "EDGEWIRE_SSE_HEARTBEAT",
    ] {
        assert!(stderr.contains(key), "{key} not named in: {stderr}");
    }
}

#[test]
fn flags_win_over_the_environment() {
    // A bad value in the environment is overridden by a good flag.
    let output = Command::new(BIN)
        .args(["serve", "--max-connections", "lots"])
        .env("EDGEWIRE_MAX_CONNECTIONS", "10")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stderr).contains("EDGEWIRE_MAX_CONNECTIONS"));
}

#[test]
fn token_command_signs_with_the_configured_secret() {
    let output = Command::new(BIN)
        .args([
            "token",
            "--sub",
            "alice",
            "--room",
            "game-*=read,write",
            "--room",
            "status=retain",
            "--ttl",
            "2h",
            "--meta",
            r#"{"name":"Ada"}"#,
        ])
        .env("EDGEWIRE_JWT_SECRET", secret())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = String::from_utf8(output.stdout).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_required_spec_claims(&["exp", "sub"]);
    let data = jsonwebtoken::decode::<Value>(
        token.trim(),
        &jsonwebtoken::DecodingKey::from_secret(secret().as_bytes()),
        &validation,
    )
    .unwrap();
    let claims = data.claims;
    assert_eq!(claims["sub"], "alice");
    assert_eq!(
        claims["rooms"]["game-*"],
        serde_json::json!(["read", "write"])
    );
    assert_eq!(claims["rooms"]["status"], serde_json::json!(["retain"]));
    assert_eq!(claims["meta"]["name"], "Ada");
    let ttl = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
    assert_eq!(ttl, 7200);

    let output = Command::new(BIN)
        .args(["token", "--sub", "a", "--room", "bad/room=read"])
        .env("EDGEWIRE_JWT_SECRET", "s")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let output = Command::new(BIN)
        .args(["token", "--sub", "a"])
        .env_remove("EDGEWIRE_JWT_SECRET")
        .output()
        .unwrap();
    assert!(!output.status.success(), "no key: refused");
}

#[test]
fn help_is_readable() {
    let output = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    for setting in edgewire::config::SETTINGS {
        assert!(
            help.contains(&format!("--{}", setting.flag)),
            "--{} missing from --help",
            setting.flag
        );
        assert!(
            help.contains(setting.env),
            "{} missing from --help",
            setting.env
        );
    }
}

#[test]
fn readme_and_protocol_document_every_setting() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let protocol = std::fs::read_to_string(root.join("relay/docs/protocol.md")).unwrap();
    for setting in edgewire::config::SETTINGS {
        let row = format!("| `{}` | `--{}` |", setting.env, setting.flag);
        assert!(
            readme.contains(&row),
            "README lacks the row for {}",
            setting.env
        );
        assert!(
            protocol.contains(setting.env),
            "protocol.md does not mention {}",
            setting.env
        );
        if let Some(default) = setting.default {
            let line = readme.lines().find(|l| l.contains(&row)).unwrap();
            assert!(
                line.contains(&format!("`{default}`")),
                "README default of {} is not `{default}`",
                setting.env
            );
        }
    }
}

/// Starts `edgewire serve` with the fixture secret and `--log info` on a free
/// port; returns the child, its base URL and the first log line (read from a
/// pipe, as a log collector would).
fn start_logged(extra: &[&str]) -> (std::process::Child, String, String) {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--log", "info"])
        .args(extra)
        .env("EDGEWIRE_JWT_SECRET", secret())
        .env_remove("EDGEWIRE_REDIS_URL")
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn edgewire");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let first = lines.next().expect("a log line").expect("utf-8");
    std::thread::spawn(move || lines.for_each(drop));
    let addr = crate::harness::listening_addr(&first)
        .unwrap_or_else(|| panic!("no address in the first log line: {first:?}"));
    (child, format!("http://{addr}"), first)
}

fn wait_exit(child: &mut std::process::Child) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "edgewire did not exit"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn logs_to_a_pipe_carry_no_colour_codes() {
    let (mut child, _, first) = start_logged(&[]);
    assert!(first.contains("edgewire listening"), "{first:?}");
    assert!(
        !first.contains('\u{1b}'),
        "ANSI escape in a piped log: {first:?}"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn unreachable_redis_is_named_with_its_cause_before_anything_says_listening() {
    // A port nothing listens on: bind one, note it, let it go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let output = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--log", "info"])
        .env("EDGEWIRE_JWT_SECRET", secret())
        .env(
            "EDGEWIRE_REDIS_URL",
            format!("redis://default:hunter2@127.0.0.1:{port}/"),
        )
        .env("EDGEWIRE_REDIS_TIMEOUT", "2s")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "redis://default:REDACTED@127.0.0.1:{port}/ (EDGEWIRE_REDIS_URL)"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("connection refused"), "{stderr}");
    assert!(
        stderr.contains("check that redis-server is running"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "the password leaked: {stderr}");
    assert!(!stderr.contains("listening"), "said listening: {stderr}");
    assert!(
        String::from_utf8_lossy(&output.stdout).is_empty(),
        "no dev banner either"
    );
}

#[test]
fn token_help_says_tokens_live_for_the_leeway_past_exp() {
    let output = Command::new(BIN)
        .args(["token", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("EDGEWIRE_JWT_LEEWAY"), "{help}");
    assert!(help.contains("--ttl 1s still works"), "{help}");
}

#[test]
fn durations_read_alike_in_serve_and_token() {
    // `1h` is one format for both commands (humantime).
    let output = Command::new(BIN)
        .args(["serve", "--history-ttl", "1h", "--listen", "nowhere"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("EDGEWIRE_LISTEN"), "{stderr}");
    assert!(
        !stderr.contains("EDGEWIRE_HISTORY_TTL"),
        "1h refused: {stderr}"
    );
    let output = Command::new(BIN)
        .args(["token", "--sub", "a", "--ttl", "1h 30m"])
        .env("EDGEWIRE_JWT_SECRET", "s")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The drain as fly.toml relies on it: after SIGTERM the port stays open,
/// `/readyz` and new sessions answer `503 draining` with `Retry-After`, live
/// sessions are told `draining`, and the process exits 0 within the grace.
#[tokio::test]
async fn after_sigterm_readyz_and_new_sessions_answer_draining_until_exit() {
    let (mut child, base, _) = start_logged(&["--shutdown-grace", "4s"]);
    let token = crate::harness::token("drainer", &["*=read,write"]);
    // Five live sessions: each closes at its own random moment within 70% of
    // the grace, so some are still open while the test asks.
    let mut streams = Vec::new();
    for i in 0..5 {
        let mut sse = Sse::open(
            &format!("{base}/rooms/drain-{i}?token={token}"),
            &[("accept", "text/event-stream")],
        )
        .await;
        assert_eq!(sse.next().await["kind"], "welcome");
        streams.push(sse);
    }
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let deadline = std::time::Instant::now() + DEADLINE;
    let ready = loop {
        let response = http().get(format!("{base}/readyz")).send().await.unwrap();
        if response.status() == 503 {
            break response;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "readyz never turned 503"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert!(ready.headers().contains_key("retry-after"));
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["error"], "draining");
    // A new SSE session and a new WebSocket are refused before any upgrade.
    match Sse::try_open(
        &format!("{base}/rooms/late?token={token}"),
        &[("accept", "text/event-stream")],
    )
    .await
    {
        Err((status, body)) => {
            assert_eq!(status, 503);
            assert_eq!(body["error"], "draining");
        }
        Ok(_) => panic!("a new SSE session was opened while draining"),
    }
    let refused = http()
        .get(format!("{base}/rooms/late?token={token}"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    // Every live session is told, then its stream ends.
    for mut sse in streams {
        let last = sse.next_kind("error").await;
        assert_eq!(last["code"], "draining");
        assert!(sse.next_event().await.is_none());
    }
    let status = wait_exit(&mut child);
    assert!(status.success(), "exit status {status}");
}
