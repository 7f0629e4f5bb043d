//! Authentication and room rights. A JWT comes from `Authorization: Bearer`, the
//! WebSocket subprotocol pair `edgewire, bearer.<jwt>`, or `?token=` (in that
//! order); it is verified against exactly the configured keys and turned into a
//! [`Principal`] whose rights handlers check per room.

mod cache;
mod jwks;
mod keys;
mod rights;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRef, FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Uri, header};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use serde_json::value::RawValue;

pub use crate::pattern::RoomPattern;
pub use jwks::{Jwks, REFETCH_INTERVAL};
pub use keys::{KeyError, VerifyKey};
pub use rights::{Grants, Rights};

use crate::config::Config;
use crate::error::ApiError;
use crate::protocol::{Payload, RoomName, null_payload, payload_from_raw};

/// Largest `meta` claim accepted, in bytes of JSON: presence entries are sent to
/// every peer of a room, so they stay small.
pub const MAX_META_BYTES: usize = 1024;
/// Longest `sub` accepted; it is part of every peer id.
pub const MAX_SUB_BYTES: usize = 128;
/// The subprotocol the relay answers with when a client offers it.
pub const SUBPROTOCOL: &str = "edgewire";
/// The `sub` of a client without a token on a public room.
pub const ANONYMOUS_SUB: &str = "anonymous";

/// Who is calling: the verified token's subject, meta and rights, or an
/// anonymous caller limited to the operator's public rooms.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The token's `sub` (the peer's `user`).
    pub sub: Arc<str>,
    /// The token's `meta` claim, or `null`.
    pub meta: Payload,
    /// Rights from the token's `rooms` claim.
    pub grants: Arc<Grants>,
    /// Rooms open to anyone (read+write).
    pub public: Arc<Vec<RoomPattern>>,
    /// Unix seconds at which the token expires (`None` for anonymous callers).
    pub expires_at: Option<u64>,
}

impl Principal {
    /// True for a caller without a token.
    pub fn is_anonymous(&self) -> bool {
        self.expires_at.is_none()
    }

    /// The rights on `room`: the token's plus read+write on public rooms.
    pub fn rights(&self, room: &RoomName) -> Rights {
        let public = if self.public.iter().any(|p| p.matches(room.as_str())) {
            Rights::READ.union(Rights::WRITE)
        } else {
            Rights::NONE
        };
        self.grants.rights(room.as_str()).union(public)
    }

    /// Fails unless the caller holds `right` on `room`: `token_missing` for an
    /// anonymous caller (a token might help), `forbidden` otherwise.
    pub fn require(&self, room: &RoomName, right: Rights) -> Result<(), ApiError> {
        if self.rights(room).contains(right) {
            return Ok(());
        }
        if self.is_anonymous() {
            return Err(ApiError::TokenMissing);
        }
        Err(ApiError::Forbidden(format!(
            "this token lacks the {right} right on room {room}"
        )))
    }
}

/// Verifies tokens against the configured keys.
pub struct Authenticator {
    hmac: Option<Arc<VerifyKey>>,
    public_key: Option<Arc<VerifyKey>>,
    jwks: Option<Jwks>,
    audience: Vec<String>,
    issuer: Vec<String>,
    leeway: Duration,
    public: Arc<Vec<RoomPattern>>,
    verified: cache::VerifiedTokens,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    /// Not valid before (Unix seconds); a token not valid yet is refused.
    nbf: Option<u64>,
    #[serde(default)]
    rooms: HashMap<String, RightsClaim>,
    meta: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RightsClaim {
    List(Vec<String>),
    Text(String),
}

impl Claims {
    /// Refuses a token past `exp` or before `nbf` at `now` (Unix seconds),
    /// allowing `leeway` seconds either way, as jsonwebtoken would.
    fn check_times(&self, now: u64, leeway: u64) -> Result<(), ApiError> {
        if self.exp.saturating_add(leeway) < now {
            return Err(ApiError::TokenExpired);
        }
        if self.nbf.is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
            return Err(ApiError::TokenInvalid("not valid yet (nbf)".into()));
        }
        Ok(())
    }
}

impl Authenticator {
    /// Loads the configured keys.
    pub fn from_config(config: &Config) -> Result<Authenticator, KeyError> {
        let hmac = config
            .jwt_secret
            .as_deref()
            .map(|s| Arc::new(VerifyKey::hmac(s.as_bytes())));
        let public_key = match &config.jwt_public_key {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|source| KeyError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                Some(Arc::new(VerifyKey::from_pem(&pem)?))
            }
            None => None,
        };
        Ok(Authenticator {
            hmac,
            public_key,
            jwks: config.jwks_url.clone().map(Jwks::new),
            audience: config.jwt_audience.clone(),
            issuer: config.jwt_issuer.clone(),
            leeway: config.jwt_leeway,
            public: Arc::new(config.public_rooms.clone()),
            verified: cache::VerifiedTokens::default(),
        })
    }

    /// Fetches the JWKS document, when one is configured.
    pub async fn prime(&self) {
        if let Some(jwks) = &self.jwks {
            jwks.prime().await;
        }
    }

    /// The caller for a request that presented no token.
    pub fn anonymous(&self) -> Principal {
        Principal {
            sub: Arc::from(ANONYMOUS_SUB),
            meta: null_payload(),
            grants: Arc::new(Grants::default()),
            public: self.public.clone(),
            expires_at: None,
        }
    }

    /// Authenticates a request: its token if any, else anonymous.
    pub async fn authenticate(&self, token: Option<&str>) -> Result<Principal, ApiError> {
        match token {
            None => Ok(self.anonymous()),
            Some(token) => self.verify(token).await,
        }
    }

    /// Verifies a token and builds its principal; a token verified in the
    /// last minute is taken from the cache (its `exp` still checked).
    pub async fn verify(&self, token: &str) -> Result<Principal, ApiError> {
        self.verify_with(token, KeyFetch::Allowed).await
    }

    /// True when `token` was verified within the last minute and has not
    /// expired: checking it again costs a map lookup.
    pub fn is_cached(&self, token: &str) -> bool {
        let now = crate::clock::now_secs();
        self.verified
            .get(token, now, self.leeway.as_secs())
            .is_some()
    }

    async fn verify_with(&self, token: &str, fetch: KeyFetch) -> Result<Principal, ApiError> {
        let now = crate::clock::now_secs();
        if let Some(principal) = self.verified.get(token, now, self.leeway.as_secs()) {
            return Ok(principal);
        }
        let principal = self.verify_uncached(token, fetch).await?;
        self.verified.put(token, &principal);
        Ok(principal)
    }

    async fn verify_uncached(&self, token: &str, fetch: KeyFetch) -> Result<Principal, ApiError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| ApiError::TokenInvalid("malformed token".into()))?;
        let key = self
            .key_for(header.alg, header.kid.as_deref(), fetch)
            .await?;
        let mut validation = Validation::new(header.alg);
        validation.algorithms = key.algorithms.clone();
        // `exp` and `nbf` are checked below against the relay's clock, not
        // jsonwebtoken's reading of the system's, so tests can pause time.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        let mut required = vec!["exp", "sub"];
        if !self.audience.is_empty() {
            validation.set_audience(&self.audience);
            required.push("aud");
        } else {
            validation.validate_aud = false;
        }
        if !self.issuer.is_empty() {
            validation.set_issuer(&self.issuer);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        let data = jsonwebtoken::decode::<Claims>(token, &key.key, &validation)
            .map_err(|e| map_jwt_error(e.kind()))?;
        data.claims
            .check_times(crate::clock::now_secs(), self.leeway.as_secs())?;
        self.principal(data.claims)
    }

    async fn key_for(
        &self,
        alg: Algorithm,
        kid: Option<&str>,
        fetch: KeyFetch,
    ) -> Result<Arc<VerifyKey>, ApiError> {
        let rejected = || ApiError::TokenInvalid(format!("algorithm {alg:?} is not accepted"));
        if let Some(k) = [&self.hmac, &self.public_key]
            .into_iter()
            .flatten()
            .find(|k| k.algorithms.contains(&alg))
        {
            return Ok(k.clone());
        }
        let Some(jwks) = &self.jwks else {
            return Err(rejected());
        };
        let found = match fetch {
            KeyFetch::Allowed => jwks.find(kid, alg).await,
            KeyFetch::KnownKeysOnly => jwks.lookup(kid, alg),
        };
        match found {
            Some(k) if k.algorithms.contains(&alg) => Ok(k),
            Some(_) => Err(rejected()),
            None => Err(ApiError::TokenInvalid(
                "no key matches the token's kid".into(),
            )),
        }
    }

    fn principal(&self, claims: Claims) -> Result<Principal, ApiError> {
        if claims.sub.is_empty()
            || claims.sub.len() > MAX_SUB_BYTES
            || claims.sub.chars().any(char::is_control)
        {
            return Err(ApiError::TokenInvalid(format!(
                "sub must be 1 to {MAX_SUB_BYTES} bytes with no control characters"
            )));
        }
        let mut grants = Vec::with_capacity(claims.rooms.len());
        for (pattern, rights) in &claims.rooms {
            let pattern = RoomPattern::parse(pattern)
                .map_err(|e| ApiError::TokenInvalid(format!("rooms claim: {}", e.0)))?;
            let rights = match rights {
                RightsClaim::Text(list) => Rights::parse_list(list),
                RightsClaim::List(names) => names
                    .iter()
                    .try_fold(Rights::NONE, |acc, n| Ok(acc.union(Rights::parse_one(n)?))),
            }
            .map_err(|e| ApiError::TokenInvalid(format!("rooms claim: {}", e.0)))?;
            grants.push((pattern, rights));
        }
        let meta = match &claims.meta {
            Some(raw) if raw.get().len() > MAX_META_BYTES => {
                return Err(ApiError::TokenInvalid(format!(
                    "meta claim is over {MAX_META_BYTES} bytes"
                )));
            }
            Some(raw) => payload_from_raw(raw),
            None => null_payload(),
        };
        Ok(Principal {
            sub: Arc::from(claims.sub),
            meta,
            grants: Arc::new(Grants::new(grants)),
            public: self.public.clone(),
            expires_at: Some(claims.exp),
        })
    }

    /// The configured leeway on `exp`.
    pub fn leeway(&self) -> Duration {
        self.leeway
    }
}

fn map_jwt_error(kind: &ErrorKind) -> ApiError {
    let reason = match kind {
        ErrorKind::ExpiredSignature => return ApiError::TokenExpired,
        ErrorKind::InvalidSignature => "bad signature".to_owned(),
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
            "algorithm not accepted".to_owned()
        }
        ErrorKind::MissingRequiredClaim(c) => format!("missing claim {c}"),
        ErrorKind::InvalidClaimFormat(c) => format!("claim {c} has the wrong type"),
        ErrorKind::InvalidAudience => "wrong audience".to_owned(),
        ErrorKind::InvalidIssuer => "wrong issuer".to_owned(),
        ErrorKind::ImmatureSignature => "not valid yet (nbf)".to_owned(),
        ErrorKind::Json(_) => "claims are malformed or of the wrong type".to_owned(),
        _ => "malformed token".to_owned(),
    };
    ApiError::TokenInvalid(reason)
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// Finds the token of a request: `Authorization: Bearer` first, then the
/// WebSocket subprotocol `bearer.<jwt>`, then `?token=`.
pub fn token_from(headers: &HeaderMap, uri: &Uri) -> Result<Option<String>, ApiError> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value
            .to_str()
            .map_err(|_| ApiError::TokenInvalid("malformed Authorization header".into()))?;
        return match value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
        {
            Some(token) if !token.trim().is_empty() => Ok(Some(token.trim().to_owned())),
            _ => Err(ApiError::TokenInvalid(
                "Authorization must be `Bearer <jwt>`".into(),
            )),
        };
    }
    for value in headers.get_all(header::SEC_WEBSOCKET_PROTOCOL) {
        let Ok(value) = value.to_str() else { continue };
        if let Some(token) = value
            .split(',')
            .map(str::trim)
            .find_map(|p| p.strip_prefix("bearer."))
        {
            return Ok(Some(token.to_owned()));
        }
    }
    match Query::<TokenQuery>::try_from_uri(uri) {
        Ok(Query(q)) => Ok(q.token.filter(|t| !t.is_empty())),
        Err(_) => Ok(None),
    }
}

/// Whether verifying a token may fetch keys (a JWKS refetch on an unknown
/// `kid`), the one expensive step of authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyFetch {
    Allowed,
    KnownKeysOnly,
}

/// Request extension set by admission for an address locked out for failed
/// authentications: its token is checked against the keys already held, with
/// no fetch, and an anonymous request is refused with `LockedOut`.
#[derive(Debug, Clone, Copy)]
pub struct LockedOut {
    /// Seconds until the lockout ends.
    pub seconds: u64,
}

/// Extractor result: the caller, already authenticated (anonymous without a token).
impl<S> FromRequestParts<S> for Principal
where
    Arc<Authenticator>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let auth = Arc::<Authenticator>::from_ref(state);
        let token = token_from(&parts.headers, &parts.uri)?;
        match (parts.extensions.get::<LockedOut>(), token) {
            (None, token) => auth.authenticate(token.as_deref()).await,
            (Some(locked), None) => Err(ApiError::LockedOut(locked.seconds)),
            (Some(_), Some(token)) => auth.verify_with(&token, KeyFetch::KnownKeysOnly).await,
        }
    }
}
