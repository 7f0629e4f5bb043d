//! fly.toml and the Dockerfile agree with the relay's own defaults and routes,
//! so the deploy files cannot drift from the code.

use std::collections::HashMap;

use edgewire::config::{Config, SETTINGS};
use toml::Value;

use crate::harness::{Relay, http};

fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fly() -> Value {
    let text =
        std::fs::read_to_string(root().join("fly.toml")).expect("fly.toml at the repository root");
    Value::Table(toml::from_str::<toml::Table>(&text).expect("fly.toml parses"))
}

/// The configuration the deployed relay runs with: defaults plus fly.toml's [env].
fn deployed_config(fly: &Value) -> Config {
    let env: HashMap<String, String> = fly["env"]
        .as_table()
        .expect("[env]")
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_str().expect("env values are strings").to_owned(),
            )
        })
        .collect();
    for key in env.keys() {
        assert!(
            SETTINGS.iter().any(|s| s.env == key),
            "fly.toml sets unknown setting {key}"
        );
    }
    Config::from_lookup(|k| env.get(k).cloned()).expect("fly.toml's [env] is a valid configuration")
}

#[tokio::test]
async fn fly_toml_agrees_with_the_relay() {
    let fly = fly();
    let config = deployed_config(&fly);

    assert_eq!(
        fly["kill_signal"].as_str(),
        Some("SIGTERM"),
        "SIGTERM starts the drain"
    );
    let kill_timeout = fly["kill_timeout"]
        .as_integer()
        .expect("kill_timeout in seconds");
    assert!(
        kill_timeout as u64 > config.shutdown_grace.as_secs(),
        "kill_timeout {kill_timeout}s must exceed the shutdown grace"
    );
    assert!(kill_timeout <= 300, "Fly allows at most 300 s");

    let services = fly["services"].as_array().expect("[[services]]");
    assert_eq!(services.len(), 1);
    let service = &services[0];
    assert_eq!(
        service["internal_port"].as_integer(),
        Some(i64::from(config.listen.port())),
        "internal_port is the port the relay listens on"
    );
    assert_eq!(
        service["auto_stop_machines"].as_str(),
        Some("off"),
        "machines with live sockets are not stopped"
    );
    let concurrency = &service["concurrency"];
    assert_eq!(concurrency["type"].as_str(), Some("connections"));
    let hard = concurrency["hard_limit"].as_integer().unwrap();
    let soft = concurrency["soft_limit"].as_integer().unwrap();
    assert_eq!(
        hard as usize, config.max_connections,
        "hard_limit matches EDGEWIRE_MAX_CONNECTIONS"
    );
    assert!(
        soft < hard && soft > 20,
        "a soft limit below the hard one (not Fly's default 20)"
    );
    let ports: Vec<i64> = service["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["port"].as_integer().unwrap())
        .collect();
    assert!(ports.contains(&443) && ports.contains(&80));

    // The health paths exist and answer as the checks expect.
    let readiness = service["http_checks"].as_array().unwrap()[0]["path"]
        .as_str()
        .unwrap()
        .to_owned();
    let liveness = fly["checks"]["alive"]["path"].as_str().unwrap().to_owned();
    assert_eq!(
        fly["checks"]["alive"]["port"].as_integer(),
        Some(i64::from(config.listen.port()))
    );
    assert_eq!(
        (readiness.as_str(), liveness.as_str()),
        ("/readyz", "/healthz")
    );
    let relay = Relay::start(&[]).await;
    for path in [&readiness, &liveness] {
        assert_eq!(
            http().get(relay.http(path)).send().await.unwrap().status(),
            200,
            "{path}"
        );
    }

    // The image fly.toml builds exists, runs as a non-root user and exposes the port.
    let dockerfile_path = fly["build"]["dockerfile"].as_str().unwrap();
    let dockerfile = std::fs::read_to_string(root().join(dockerfile_path))
        .expect("the Dockerfile fly.toml names");
    assert!(dockerfile.contains(&format!("EXPOSE {}", config.listen.port())));
    let user = dockerfile
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER line");
    assert_ne!(user.trim(), "root");
    assert!(dockerfile.matches("FROM ").count() >= 2, "multi-stage");
}

/// True when `.dockerignore`'s `pattern` excludes `path` (relative, `/`-separated):
/// the forms the file uses, `name` or `a/b` from the root and `**/name` anywhere.
fn ignored_by(pattern: &str, path: &str) -> bool {
    match pattern.strip_prefix("**/") {
        Some(name) => path.split('/').any(|part| part == name),
        None => path == pattern || path.starts_with(&format!("{pattern}/")),
    }
}

#[test]
fn the_docker_build_context_holds_the_sources_and_no_build_outputs() {
    let text = std::fs::read_to_string(root().join(".dockerignore"))
        .expect(".dockerignore at the repository root");
    let patterns: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let ignored = |path: &str| patterns.iter().any(|p| ignored_by(p, path));
    for heavy in [
        "target/release/edgewire",
        "relay/target/debug",
        "sdk-js/node_modules/typescript",
        "relay/load/node_modules/x",
        ".git/objects",
    ] {
        assert!(ignored(heavy), "{heavy} would be uploaded to the builder");
    }
    // What relay/Dockerfile copies must stay in the context.
    let dockerfile = std::fs::read_to_string(root().join("relay/Dockerfile")).unwrap();
    for line in dockerfile
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let words: Vec<&str> = line.split_whitespace().collect();
        for source in &words[1..words.len() - 1] {
            assert!(!ignored(source), "{source} is copied but ignored");
        }
    }
    for kept in ["relay/src/main.rs", "relay/load/src/main.rs", "Cargo.lock"] {
        assert!(!ignored(kept), "{kept} is needed by the build");
    }
}
