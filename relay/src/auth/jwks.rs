//! A JWKS document fetched over HTTP(S): keys picked by `kid`, cached, and
//! refetched at most once a minute when a token names an unknown `kid` (key
//! rotation), so a flood of forged `kid`s cannot hammer the key server.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

use crate::clock::Instant;

use super::keys::{RSA_ALGORITHMS, VerifyKey};

/// Least time between two fetches of the document.
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(60);
/// Longest wait for the key server.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest JWKS document accepted.
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;

/// A cached JWKS document.
pub struct Jwks {
    url: String,
    refetch_interval: Duration,
    client: reqwest::Client,
    keys: RwLock<KeySet>,
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
}

#[derive(Default)]
struct KeySet {
    by_kid: HashMap<String, Arc<VerifyKey>>,
    all: Vec<Arc<VerifyKey>>,
}

impl Jwks {
    /// A cache for the document at `url`; nothing is fetched yet.
    pub fn new(url: String) -> Jwks {
        Jwks::with_refetch_interval(url, REFETCH_INTERVAL)
    }

    /// A cache that refetches at most once per `refetch_interval` (tests use a
    /// short one to show rotation without waiting a minute).
    pub fn with_refetch_interval(url: String, refetch_interval: Duration) -> Jwks {
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .build()
            .unwrap_or_default();
        Jwks {
            url,
            refetch_interval,
            client,
            keys: RwLock::new(KeySet::default()),
            last_fetch: tokio::sync::Mutex::new(None),
        }
    }

    /// Fetches the document now (at start-up); errors are logged, not fatal, so a
    /// key server that is briefly down does not stop the relay.
    pub async fn prime(&self) {
        let mut last = self.last_fetch.lock().await;
        *last = Some(Instant::now());
        self.refresh().await;
    }

    /// The key for a token's `kid` (or the only key, when the token has none),
    /// refetching once a minute at most when it is unknown.
    pub async fn find(&self, kid: Option<&str>, alg: Algorithm) -> Option<Arc<VerifyKey>> {
        if let Some(k) = self.lookup(kid, alg) {
            return Some(k);
        }
        let mut last = self.last_fetch.lock().await;
        // Another request may have refreshed while this one waited.
        if let Some(k) = self.lookup(kid, alg) {
            return Some(k);
        }
        if last.is_some_and(|t| t.elapsed() < self.refetch_interval) {
            return None;
        }
        *last = Some(Instant::now());
        self.refresh().await;
        self.lookup(kid, alg)
    }

    /// The key for a token's `kid` among the keys already held, never fetching.
    pub fn lookup(&self, kid: Option<&str>, alg: Algorithm) -> Option<Arc<VerifyKey>> {
        let keys = self.keys.read().ok()?;
        match kid {
            Some(kid) => keys.by_kid.get(kid).cloned(),
            None => {
                let mut fitting = keys.all.iter().filter(|k| k.algorithms.contains(&alg));
                match (fitting.next(), fitting.next()) {
                    (Some(only), None) => Some(only.clone()),
                    _ => None,
                }
            }
        }
    }

    async fn refresh(&self) {
        match self.fetch().await {
            Ok(set) => {
                tracing::info!(keys = set.all.len(), "JWKS loaded");
                if let Ok(mut keys) = self.keys.write() {
                    *keys = set;
                }
            }
            Err(e) => tracing::warn!(error = %e, "JWKS fetch failed; keeping the cached keys"),
        }
    }

    async fn fetch(&self) -> Result<KeySet, String> {
        let response = self
            .client
            .get(&self.url)
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| format!("read failed: {e}"))?;
        if body.len() > MAX_DOCUMENT_BYTES {
            return Err("document too large".into());
        }
        parse_jwks(&body)
    }
}

#[derive(Deserialize)]
struct Document {
    keys: Vec<serde_json::Value>,
}

/// Parses a JWKS document; keys of unsupported types (and symmetric `oct` keys,
/// which would let a public document sign tokens) are skipped.
fn parse_jwks(body: &[u8]) -> Result<KeySet, String> {
    let doc: Document = serde_json::from_slice(body).map_err(|e| format!("not a JWKS: {e}"))?;
    let mut set = KeySet::default();
    for value in doc.keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
            continue;
        };
        let Some(algorithms) = algorithms_for(&jwk) else {
            continue;
        };
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        let key = Arc::new(VerifyKey { key, algorithms });
        if let Some(kid) = &jwk.common.key_id {
            set.by_kid.insert(kid.clone(), key.clone());
        }
        set.all.push(key);
    }
    Ok(set)
}

fn algorithms_for(jwk: &Jwk) -> Option<Vec<Algorithm>> {
    let by_type = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => RSA_ALGORITHMS.to_vec(),
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            vec![Algorithm::EdDSA]
        }
        _ => return None,
    };
    match jwk.common.key_algorithm {
        None => Some(by_type),
        Some(declared) => {
            let declared = match declared {
                KeyAlgorithm::RS256 => Algorithm::RS256,
                KeyAlgorithm::RS384 => Algorithm::RS384,
                KeyAlgorithm::RS512 => Algorithm::RS512,
                KeyAlgorithm::ES256 => Algorithm::ES256,
                KeyAlgorithm::ES384 => Algorithm::ES384,
                KeyAlgorithm::EdDSA => Algorithm::EdDSA,
                _ => return None,
            };
            by_type.contains(&declared).then(|| vec![declared])
        }
    }
}
