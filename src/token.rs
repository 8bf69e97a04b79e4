//! The gateway's Bearer tokens: compact JWS (RFC 7515) JWTs signed with Ed25519 (`EdDSA`,
//! RFC 8037).
//!
//! The control plane holds the signing key and issues a token at login; the filter holds only
//! public keys, named by `kid` so keys can rotate (publish the new public key, sign with the
//! new key, drop the old one after the longest token lifetime). Verification accepts exactly
//! one algorithm and one header shape: everything a JWT library could be talked into (`none`,
//! HMAC with the public key as secret, keys embedded in the header) is refused up front.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

/// The `iss` of every token the gateway issues.
pub const ISSUER: &str = "mtlsgate";

/// The only `alg` accepted.
pub const ALGORITHM: &str = "EdDSA";

/// The longest token accepted. A real one is a few hundred bytes; this bounds the work an
/// unauthenticated caller can cause.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// How far in the future `iat` may be: clock skew between the control plane and Envoy.
pub const MAX_IAT_SKEW_SECS: u64 = 60;

/// What a token says about its holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Always [`ISSUER`].
    pub iss: String,
    /// The user id.
    pub sub: String,
    /// The account the user belongs to.
    pub acc: String,
    /// The login name.
    pub name: String,
    /// Whether the user is an administrator.
    pub adm: bool,
    /// Privileges, by name.
    #[serde(rename = "priv")]
    pub privileges: Vec<String>,
    /// Issued at, unix seconds.
    pub iat: u64,
    /// Expires at, unix seconds: the token is refused from this second on.
    pub exp: u64,
    /// The token's id, for revocation and audit.
    pub jti: String,
}

/// The JOSE header. `deny_unknown_fields`: `crit`, `jwk`, `jku`, `x5u` and friends are
/// refused rather than ignored, so no header can bring its own key or extension.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
    kid: String,
}

/// The public keys a token may be signed with, by key id.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<(String, VerifyingKey)>,
}

/// Why a token was refused. Never carries the token or any part of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is longer than {MAX_TOKEN_LEN} bytes")]
    TooLarge,
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token's algorithm is not EdDSA")]
    UnsupportedAlgorithm,
    #[error("the token is signed with an unknown key")]
    UnknownKey,
    #[error("the token's signature is not valid")]
    BadSignature,
    #[error("the token was not issued by mtlsgate")]
    WrongIssuer,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
}

impl KeySet {
    pub fn new() -> Self {
        KeySet::default()
    }

    /// Adds a key, replacing any key with the same id.
    pub fn insert(&mut self, kid: impl Into<String>, key: VerifyingKey) {
        let kid = kid.into();
        self.keys.retain(|(k, _)| *k != kid);
        self.keys.push((kid, key));
    }

    pub fn get(&self, kid: &str) -> Option<&VerifyingKey> {
        self.keys.iter().find(|(k, _)| k == kid).map(|(_, key)| key)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl<K: Into<String>> FromIterator<(K, VerifyingKey)> for KeySet {
    fn from_iter<I: IntoIterator<Item = (K, VerifyingKey)>>(iter: I) -> Self {
        let mut set = KeySet::new();
        for (kid, key) in iter {
            set.insert(kid, key);
        }
        set
    }
}

/// Signs `claims` as a compact JWS with header `{"alg":"EdDSA","typ":"JWT","kid":kid}`.
/// Ed25519 signing is deterministic: no randomness needed.
pub fn sign(claims: &Claims, kid: &str, key: &SigningKey) -> String {
    let header = serde_json::json!({ "alg": ALGORITHM, "typ": "JWT", "kid": kid });
    // why: a `Value` prints infallibly, where `to_string(&claims)` returns a `Result` this
    // function would have nothing to do with. The destructuring keeps this list in step with
    // the struct: a new field is a compile error here.
    let Claims {
        iss,
        sub,
        acc,
        name,
        adm,
        privileges,
        iat,
        exp,
        jti,
    } = claims;
    let payload = serde_json::json!({
        "iss": iss, "sub": sub, "acc": acc, "name": name, "adm": adm,
        "priv": privileges, "iat": iat, "exp": exp, "jti": jti,
    });
    let mut token = URL_SAFE_NO_PAD.encode(header.to_string());
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(payload.to_string()));
    let signature = key.sign(token.as_bytes());
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(signature.to_bytes()));
    token
}

/// Verifies a token against `keys` at `now` (unix seconds) and returns its claims.
///
/// The payload is parsed only after the signature checks out, so nothing an attacker writes
/// reaches the JSON parser but a header of at most [`MAX_TOKEN_LEN`] bytes.
pub fn verify(token: &str, keys: &KeySet, now: u64) -> Result<Claims, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TooLarge);
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let header: Header = decode_json(header_b64)?;
    if header.alg != ALGORITHM {
        return Err(TokenError::UnsupportedAlgorithm);
    }
    if header.typ.as_deref().is_some_and(|t| t != "JWT") {
        return Err(TokenError::Malformed);
    }
    let key = keys.get(&header.kid).ok_or(TokenError::UnknownKey)?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature_b64)
        .ok()
        .and_then(|bytes| Signature::from_slice(&bytes).ok())
        .ok_or(TokenError::Malformed)?;
    let signed_len = header_b64.len() + 1 + payload_b64.len();
    let signed = token.get(..signed_len).ok_or(TokenError::Malformed)?;
    // why: strict verification refuses malleable signatures and small-order keys, so one
    // token has exactly one valid encoding.
    key.verify_strict(signed.as_bytes(), &signature)
        .map_err(|_| TokenError::BadSignature)?;
    let claims: Claims = decode_json(payload_b64)?;
    if claims.iss != ISSUER {
        return Err(TokenError::WrongIssuer);
    }
    if claims.exp <= now {
        return Err(TokenError::Expired);
    }
    if claims.iat > now.saturating_add(MAX_IAT_SKEW_SECS) {
        return Err(TokenError::NotYetValid);
    }
    Ok(claims)
}

fn decode_json<T: serde::de::DeserializeOwned>(part: &str) -> Result<T, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)
}

#[cfg(test)]
mod tests;
