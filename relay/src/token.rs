//! Minting tokens, for `edgewire token`, dev mode and tests: the same claims a
//! backend would sign (`sub`, `exp`, `iat`, `rooms`, optional `meta`, `aud`, `iss`).

use std::collections::BTreeMap;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use crate::auth::{Rights, RoomPattern};
use crate::protocol::NameError;

/// What a token grants.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    /// The user (`sub`).
    pub sub: String,
    /// Room patterns and their rights.
    pub rooms: Vec<(String, Rights)>,
    /// Lifetime from now.
    pub ttl: Duration,
    /// Optional `meta` claim.
    pub meta: Option<serde_json::Value>,
    /// Optional `aud`.
    pub audience: Option<String>,
    /// Optional `iss`.
    pub issuer: Option<String>,
}

/// A signing key.
pub enum SigningKey {
    /// An HMAC secret with HS256/384/512.
    Secret(Vec<u8>, Algorithm),
    /// A PEM private key (RSA, EC or Ed25519) with a matching algorithm and optional `kid`.
    Pem {
        /// PEM text.
        pem: Vec<u8>,
        /// Algorithm.
        alg: Algorithm,
        /// Key id to put in the header.
        kid: Option<String>,
    },
}

/// Why a token could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// A `--room` argument was malformed.
    #[error("{0}")]
    Room(#[from] NameError),
    /// The key or algorithm was refused.
    #[error("cannot sign: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// Parses `PATTERN=RIGHTS`, e.g. `game-*=read,write`.
pub fn parse_room_grant(arg: &str) -> Result<(String, Rights), NameError> {
    let (pattern, rights) = arg.split_once('=').ok_or_else(|| {
        NameError(format!(
            "expected PATTERN=RIGHTS such as 'game-*=read,write', got {arg:?}"
        ))
    })?;
    RoomPattern::parse(pattern)?;
    Ok((pattern.trim().to_owned(), Rights::parse_list(rights)?))
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    iat: u64,
    exp: u64,
    rooms: BTreeMap<&'a str, Vec<&'static str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    meta: Option<&'a serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
}

/// Signs a token for `spec` with `key`.
pub fn mint(spec: &TokenSpec, key: &SigningKey) -> Result<String, TokenError> {
    let now = crate::protocol::now_ms() / 1000;
    let claims = Claims {
        sub: &spec.sub,
        iat: now,
        exp: now + spec.ttl.as_secs(),
        rooms: spec
            .rooms
            .iter()
            .map(|(p, r)| (p.as_str(), r.names()))
            .collect(),
        meta: spec.meta.as_ref(),
        aud: spec.audience.as_deref(),
        iss: spec.issuer.as_deref(),
    };
    let (header, key) = match key {
        SigningKey::Secret(secret, alg) => (Header::new(*alg), EncodingKey::from_secret(secret)),
        SigningKey::Pem { pem, alg, kid } => {
            let key = match alg {
                Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(pem)?,
                Algorithm::EdDSA => EncodingKey::from_ed_pem(pem)?,
                _ => EncodingKey::from_rsa_pem(pem)?,
            };
            let mut header = Header::new(*alg);
            header.kid = kid.clone();
            (header, key)
        }
    };
    Ok(jsonwebtoken::encode(&header, &claims, &key)?)
}

/// A random HMAC secret for dev mode: 32 bytes as 64 lowercase hex digits, so
/// it never starts with `-` (which would read as a flag in `--jwt-secret $S`)
/// and needs no quoting in a shell.
pub fn random_secret() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod secret_tests {
    #[test]
    fn dev_secrets_are_hex_and_never_look_like_flags() {
        for _ in 0..200 {
            let secret = super::random_secret().unwrap_or_default();
            assert_eq!(secret.len(), 64);
            assert!(
                secret
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            );
            assert!(!secret.starts_with('-'));
        }
    }
}

#[cfg(test)]
mod expiry_tests {
    use std::time::Duration;

    use super::{SigningKey, TokenSpec, mint};
    use crate::auth::{Authenticator, Rights};
    use crate::config::Config;
    use crate::error::ApiError;

    /// A token stops verifying when the relay's clock passes its `exp` plus
    /// the leeway, cached or not: run under paused time, no real waiting.
    #[tokio::test(start_paused = true)]
    async fn a_token_expires_by_the_relays_clock() {
        let mut config = Config::defaults();
        config.jwt_secret = Some("s3cret".into());
        config.jwt_leeway = Duration::from_secs(5);
        let auth = Authenticator::from_config(&config).unwrap_or_else(|e| panic!("{e}"));
        let spec = TokenSpec {
            sub: "alice".into(),
            rooms: vec![("r".into(), Rights::READ)],
            ttl: Duration::from_secs(60),
            meta: None,
            audience: None,
            issuer: None,
        };
        let key = SigningKey::Secret(b"s3cret".to_vec(), jsonwebtoken::Algorithm::HS256);
        let token = mint(&spec, &key).unwrap_or_else(|e| panic!("{e}"));
        assert!(auth.verify(&token).await.is_ok());
        tokio::time::sleep(Duration::from_secs(64)).await;
        assert!(auth.verify(&token).await.is_ok(), "within the leeway");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            auth.verify(&token).await.err(),
            Some(ApiError::TokenExpired)
        );
        // A fresh token, never cached, is checked against the same clock.
        let token = mint(&spec, &key).unwrap_or_else(|e| panic!("{e}"));
        assert!(auth.verify(&token).await.is_ok());
    }
}
