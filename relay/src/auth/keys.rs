//! Verification keys: which algorithms each configured key accepts. Keys are
//! grouped by algorithm family so an RSA public key can never be used as an HMAC
//! secret (algorithm confusion), and `none` is never accepted.

use jsonwebtoken::{Algorithm, DecodingKey};

/// Why a configured key could not be loaded; stops start-up.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The PEM file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The PEM holds no supported key.
    #[error("{0}")]
    Unsupported(String),
}

/// A verification key and the algorithms it may verify.
#[derive(Clone)]
pub struct VerifyKey {
    /// The key.
    pub key: DecodingKey,
    /// Algorithms accepted with it, all of one family.
    pub algorithms: Vec<Algorithm>,
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyKey")
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

/// HMAC algorithms accepted with a shared secret.
pub const HMAC_ALGORITHMS: [Algorithm; 3] = [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
/// RSA algorithms accepted with an RSA public key (the contract's RS*).
pub const RSA_ALGORITHMS: [Algorithm; 3] = [Algorithm::RS256, Algorithm::RS384, Algorithm::RS512];

impl VerifyKey {
    /// An HMAC secret.
    pub fn hmac(secret: &[u8]) -> VerifyKey {
        VerifyKey {
            key: DecodingKey::from_secret(secret),
            algorithms: HMAC_ALGORITHMS.to_vec(),
        }
    }

    /// A PEM public key; its type (RSA, EC P-256/P-384, Ed25519) picks the algorithms.
    pub fn from_pem(pem: &[u8]) -> Result<VerifyKey, KeyError> {
        let text = std::str::from_utf8(pem)
            .map_err(|_| KeyError::Unsupported("the key file is not PEM text".into()))?;
        let unsupported = |what: &str| {
            KeyError::Unsupported(format!(
                "{what}: expected a PEM public key (RSA, EC P-256/P-384 or Ed25519)"
            ))
        };
        if text.contains("-----BEGIN RSA PUBLIC KEY-----") {
            return rsa(pem).map_err(|_| unsupported("bad RSA key"));
        }
        if !text.contains("-----BEGIN PUBLIC KEY-----") {
            return Err(unsupported("no `BEGIN PUBLIC KEY` block"));
        }
        let der = pem_body(text).ok_or_else(|| unsupported("bad base64 in the PEM block"))?;
        if contains(&der, OID_RSA) {
            rsa(pem).map_err(|_| unsupported("bad RSA key"))
        } else if contains(&der, OID_EC) {
            let alg = if contains(&der, OID_P256) {
                Algorithm::ES256
            } else if contains(&der, OID_P384) {
                Algorithm::ES384
            } else {
                return Err(unsupported("EC key on an unsupported curve"));
            };
            let key = DecodingKey::from_ec_pem(pem).map_err(|_| unsupported("bad EC key"))?;
            Ok(VerifyKey {
                key,
                algorithms: vec![alg],
            })
        } else if contains(&der, OID_ED25519) {
            let key = DecodingKey::from_ed_pem(pem).map_err(|_| unsupported("bad Ed25519 key"))?;
            Ok(VerifyKey {
                key,
                algorithms: vec![Algorithm::EdDSA],
            })
        } else {
            Err(unsupported("unknown key type"))
        }
    }
}

fn rsa(pem: &[u8]) -> Result<VerifyKey, jsonwebtoken::errors::Error> {
    Ok(VerifyKey {
        key: DecodingKey::from_rsa_pem(pem)?,
        algorithms: RSA_ALGORITHMS.to_vec(),
    })
}

// DER encodings of the algorithm and curve object identifiers in a SubjectPublicKeyInfo.
const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
const OID_ED25519: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn pem_body(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let body: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}
