//! The crate's layers: every top-level module may use only modules of a
//! lower layer, so the `use crate::` graph has no circle and no arrow
//! pointing up. Read from the source, so a new import that breaks the
//! picture fails here, naming the file and line.

use std::collections::BTreeMap;
use std::path::Path;

/// The layers, lowest first. A module uses only modules listed before its
/// own row (never one of its own row: that is how a circle would start).
const LAYERS: &[&[&str]] = &[
    // Bytes and names with no crate dependency.
    &["clock", "redact", "metrics"],
    // The wire contract: events, ops, names.
    &["protocol"],
    // Small shared pieces over the protocol.
    &["error", "topic", "idempotency", "pattern", "random"],
    // Settings and the shutdown clock.
    &["config", "shutdown"],
    // Who may connect, and how events reach local sessions.
    &["auth", "guard", "delivery"],
    // Shared state (memory or Redis), and token minting.
    &["broker", "token"],
    // Sessions, presence, rights: the room hub.
    &["hub"],
    // WebSocket, SSE and HTTP over the hub.
    &["transport"],
    // The router.
    &["routes"],
    // The process: listener and command line.
    &["server", "cli"],
];

/// Each module's layer.
fn layer_of() -> BTreeMap<&'static str, usize> {
    LAYERS
        .iter()
        .enumerate()
        .flat_map(|(i, row)| row.iter().map(move |m| (*m, i)))
        .collect()
}

/// Every `crate::<module>` a source file names outside comments, with its line.
fn uses(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.push((n + 1, name));
            }
        }
    }
    out
}

/// The arrows that break the layers: `(file:line, from, to)`.
fn violations(files: &[(String, String)], layers: &BTreeMap<&str, usize>) -> Vec<String> {
    let mut bad = Vec::new();
    for (path, text) in files {
        let module = path.split('/').next().unwrap_or("").trim_end_matches(".rs");
        let Some(&from) = layers.get(module) else {
            bad.push(format!("{path}: module {module} is in no layer"));
            continue;
        };
        for (line, used) in uses(text) {
            if used == module {
                continue;
            }
            match layers.get(used.as_str()) {
                Some(&to) if to < from => {}
                Some(_) => bad.push(format!("{path}:{line}: {module} uses {used}, not below it")),
                None => bad.push(format!("{path}:{line}: {used} is in no layer")),
            }
        }
    }
    bad
}

/// Every source file of the library, by its path under `src/`.
fn sources() -> Vec<(String, String)> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, root, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                if rel == "lib.rs" || rel == "main.rs" {
                    continue;
                }
                out.push((rel, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    walk(&root, &root, &mut out);
    out.sort();
    out
}

#[test]
fn no_module_uses_one_above_or_beside_it() {
    let files = sources();
    assert!(files.len() > 40, "found the sources: {}", files.len());
    let bad = violations(&files, &layer_of());
    assert!(bad.is_empty(), "layer violations:\n{}", bad.join("\n"));
}

#[test]
fn the_check_catches_a_circle_and_an_upward_arrow() {
    let layers = layer_of();
    let files = vec![
        (
            "broker/memory.rs".to_owned(),
            "use crate::hub::Fanout;\n// crate::routes in a comment is fine\n".to_owned(),
        ),
        (
            "auth/mod.rs".to_owned(),
            "use crate::guard::Guard;\n".to_owned(),
        ),
        (
            "protocol/event.rs".to_owned(),
            "let x = crate::clock::now_ms();\n".to_owned(),
        ),
    ];
    let bad = violations(&files, &layers);
    assert_eq!(bad.len(), 2, "{bad:?}");
    assert!(bad[0].starts_with("broker/memory.rs:1: broker uses hub"));
    assert!(bad[1].starts_with("auth/mod.rs:1: auth uses guard"));
}
