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
