//! Who is calling the gateway: a Bearer token from the login method or an OAuth1 AppKey
//! signature, checked against the snapshot alone (no call to the control plane).

use crate::oauth1::{self, Authorization, OAuthError, Secrets, Verified};
use crate::privilege;
use crate::refusal::Refusal;
use crate::snapshot::Index;
use crate::token::{self, TokenError};

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub account: String,
    pub id: CallerId,
    /// Privileges held (an admin user holds them all).
    pub privileges: Vec<String>,
}

/// Which user or AppKey: what the audit log records (never a secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallerId {
    User { id: u64, name: String },
    AppKey { id: u64 },
}

impl std::fmt::Display for CallerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallerId::User { id, name } => write!(f, "user:{id}:{name}"),
            CallerId::AppKey { id } => write!(f, "appkey:{id}"),
        }
    }
}

impl Caller {
    /// 403 unless the caller belongs to `account` and holds `privilege`.
    pub fn require(&self, account: &str, privilege: &str) -> Result<(), Refusal> {
        if self.account != account {
            return Err(Refusal::new(
                403,
                "forbidden_account",
                "the credential belongs to another account",
            ));
        }
        if !self.privileges.iter().any(|p| p == privilege) {
            return Err(Refusal::new(
                403,
                "forbidden",
                format!("the credential lacks the {privilege} privilege"),
            ));
        }
        Ok(())
    }
}

/// Remembers OAuth1 nonces: `first_use` is false for a nonce already seen in the window.
pub trait NonceGuard {
    fn first_use(&mut self, verified: &Verified, now: u64) -> bool;
}

/// The signed parts of the request, as Envoy hands them over.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    /// The scheme the client used to reach the gateway, part of the OAuth1 base string:
    /// `http`, or `https` behind a TLS-terminating load balancer.
    pub scheme: &'a str,
    pub method: &'a str,
    pub authority: &'a str,
    pub path: &'a str,
}

/// Checks the `Authorization` header.
pub fn authenticate(
    authorization: Option<&str>,
    signed: Signed<'_>,
    index: &Index,
    now: u64,
    max_skew_secs: u64,
    nonces: &mut dyn NonceGuard,
) -> Result<Caller, Refusal> {
    let value = authorization.ok_or_else(|| {
        Refusal::unauthorized("unauthorized", "an Authorization header is required")
    })?;
    if let Some(bearer) = value.strip_prefix("Bearer ") {
        return bearer_caller(bearer.trim(), index, now);
    }
    if value.len() > 6 && value.is_char_boundary(6) && value[..6].eq_ignore_ascii_case("OAuth ") {
        return appkey_caller(value, signed, index, now, max_skew_secs, nonces);
    }
    Err(Refusal::unauthorized(
        "unauthorized",
        "expected an OAuth1 signature or a Bearer token",
    ))
}

fn bearer_caller(token: &str, index: &Index, now: u64) -> Result<Caller, Refusal> {
    let expired = || Refusal::unauthorized("token_expired", "the token has expired; log in again");
    let claims = match index.verified_claims(token) {
        Some(c) if c.exp <= now => return Err(expired()),
        Some(c) => c,
        None => {
            let c = token::verify(token, index.token_keys(), now).map_err(|e| match e {
                TokenError::Expired => expired(),
                _ => Refusal::unauthorized("invalid_token", "the token is not valid"),
            })?;
            index.remember_verified(token, &c);
            c
        }
    };
    let id: u64 = claims
        .sub
        .parse()
        .map_err(|_| Refusal::unauthorized("invalid_token", "the token is not valid"))?;
    if !index.user_is_live(&claims.acc, id) {
        return Err(Refusal::unauthorized(
            "invalid_token",
            "the token's user no longer exists",
        ));
    }
    let privileges = if claims.adm {
        privilege::ALL.iter().map(|p| p.to_string()).collect()
    } else {
        claims.privileges
    };
    Ok(Caller {
        account: claims.acc,
        id: CallerId::User {
            id,
            name: claims.name,
        },
        privileges,
    })
}

fn appkey_caller(
    value: &str,
    signed: Signed<'_>,
    index: &Index,
    now: u64,
    max_skew_secs: u64,
    nonces: &mut dyn NonceGuard,
) -> Result<Caller, Refusal> {
    let invalid = |e: OAuthError| Refusal::unauthorized("invalid_signature", e.to_string());
    let auth = Authorization::parse(value).map_err(invalid)?;
    let req = oauth1::Request {
        method: signed.method,
        scheme: signed.scheme,
        authority: signed.authority,
        path: signed.path,
        form_body: None,
    };
    let mut found = None;
    let verified = oauth1::verify(&req, &auth, now, max_skew_secs, |key, token| {
        let k = index.app_key(key, token.unwrap_or_default())?;
        found = Some(k);
        Some(Secrets::new(
            k.consumer_secret.as_str(),
            k.access_token_secret.as_str(),
        ))
    })
    .map_err(|e| match e {
        OAuthError::UnknownCredentials => {
            Refusal::unauthorized("unknown_appkey", "unknown or revoked AppKey")
        }
        OAuthError::StaleTimestamp | OAuthError::FutureTimestamp => {
            Refusal::unauthorized("timestamp_out_of_window", e.to_string())
        }
        other => invalid(other),
    })?;
    let key = found
        .ok_or_else(|| Refusal::unauthorized("unknown_appkey", "unknown or revoked AppKey"))?;
    if !nonces.first_use(&verified, now) {
        return Err(Refusal::unauthorized(
            "replayed_nonce",
            "this oauth_nonce was already used",
        ));
    }
    Ok(Caller {
        account: key.account.clone(),
        id: CallerId::AppKey { id: key.id },
        privileges: key.privileges.clone(),
    })
}
