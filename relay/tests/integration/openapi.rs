//! The OpenAPI document (relay/docs/openapi.json, served at /openapi.json)
//! against the router: the same paths, and on each path exactly the
//! documented methods reach a handler.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::harness::{Relay, http, token};

fn document() -> Value {
    serde_json::from_str(edgewire::routes::OPENAPI).expect("openapi.json is JSON")
}

/// The route patterns the router registers, read from routes/mod.rs, in the
/// document's spelling (`{*filter}` is the `{topic}` path parameter).
fn router_paths() -> BTreeSet<String> {
    let source = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/routes/mod.rs"),
    )
    .unwrap();
    source
        .split(".route(")
        .skip(1)
        .filter_map(|rest| rest.trim_start().strip_prefix('"'))
        .filter_map(|rest| rest.split('"').next())
        .map(|p| p.replace("{*filter}", "{topic}"))
        .collect()
}

#[test]
fn the_document_names_every_route_of_the_router() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    let documented: BTreeSet<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(documented, router_paths());
}

#[tokio::test]
async fn documented_methods_reach_handlers_and_others_are_405() {
    let relay = Relay::start(&[]).await;
    let tok = token("doc", &["*=read,write,retain"]);
    let doc = document();
    let methods = ["get", "post", "put", "delete", "patch"];
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let url = relay.http(&path.replace("{room}", "r").replace("{topic}", "t"));
        for method in methods {
            let documented = item.get(method).is_some();
            let response = http()
                .request(method.to_uppercase().parse().unwrap(), &url)
                .bearer_auth(&tok)
                .header("accept", "application/json")
                .body("x")
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            if documented {
                assert_ne!(status, 405, "{method} {path} is documented: {body}");
                assert!(
                    !(status == 404 && body["message"] == "no such route"),
                    "{method} {path} is documented but not routed"
                );
                seen.entry(path.clone()).or_default().push(method.into());
            } else {
                assert_eq!(
                    status, 405,
                    "{method} {path} is not documented: {status} {body}"
                );
            }
        }
    }
    assert_eq!(
        seen.len(),
        doc["paths"].as_object().unwrap().len(),
        "{seen:?}"
    );
    // The relay serves the same document.
    let served: Value = http()
        .get(relay.http("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(served, doc);
}
