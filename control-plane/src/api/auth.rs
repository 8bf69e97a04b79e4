//! Who is calling the management API: a Bearer token from the login method, an OAuth1 AppKey
//! signature, or (development only) the dev admin token.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use mtlsgate_filter::oauth1::{self, Authorization, OAuthError};
use mtlsgate_filter::privilege;
use mtlsgate_filter::token::TokenError;

use super::error::ApiError;
use super::AppState;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The development admin token: admin of every account.
    DevAdmin,
    /// The operator (`--operator-token-file`): deployment-wide actions, nothing of a
    /// tenant's.
    Operator,
    /// A user who logged in (Bearer token).
    User {
        account: String,
        user_id: i64,
        name: String,
        admin: bool,
        privileges: Vec<String>,
    },
    /// An AppKey (OAuth1 signature).
    AppKey {
        account: String,
        id: i64,
        privileges: Vec<String>,
    },
}

/// The scheme a request was made with, as its OAuth1 signature covers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// Set by the gateway's Envoy (overwriting whatever a caller sent) on every management
/// request it proxies here, so the control plane knows the request came through the public
/// gateway listener. A direct caller who sends it only restricts itself.
pub(crate) const VIA_HEADER: &str = "x-mtlsgate-via";

/// Whether the request came through the gateway (see [`VIA_HEADER`]).
fn via_gateway(parts: &Parts) -> bool {
    parts
        .headers
        .get(VIA_HEADER)
        .is_some_and(|v| v.as_bytes() == b"gateway")
}

/// The header the gateway's Envoy sets (overwriting what a caller sent) to the scheme its
/// listener is reached with: `https` when it terminates TLS (or sits behind a load balancer
/// that does), else `http`.
pub(crate) const SCHEME_HEADER: &str = "x-mtlsgate-scheme";

/// The scheme the caller signed for: through the gateway, the gateway's (see
/// [`SCHEME_HEADER`]; `http` when absent); a direct call to the API uses the API's public
/// scheme, `https` when it serves TLS or sits behind TLS.
fn signed_scheme(parts: &Parts, api: Scheme) -> Scheme {
    if via_gateway(parts) {
        match parts.headers.get(SCHEME_HEADER).map(|v| v.as_bytes()) {
            Some(b"https") => Scheme::Https,
            _ => Scheme::Http,
        }
    } else {
        api
    }
}

fn forbidden(message: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
}

impl Principal {
    fn account(&self) -> Option<&str> {
        match self {
            Principal::DevAdmin | Principal::Operator => None,
            Principal::User { account, .. } | Principal::AppKey { account, .. } => Some(account),
        }
    }

    /// 403 when the caller belongs to another account.
    fn same_account(&self, account: &str) -> Result<(), ApiError> {
        match self.account() {
            Some(own) if own != account => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden_account",
                "the credential belongs to another account",
            )),
            _ => Ok(()),
        }
    }

    /// May manage certificates and mappings of `account`: an admin, or a holder of the
    /// `MTLS_MANAGE` privilege (users and AppKeys alike).
    pub fn require_manage(&self, account: &str) -> Result<(), ApiError> {
        self.same_account(account)?;
        match self {
            Principal::DevAdmin | Principal::User { admin: true, .. } => Ok(()),
            Principal::User { privileges, .. } | Principal::AppKey { privileges, .. }
                if privileges.iter().any(|p| p == privilege::MANAGE) =>
            {
                Ok(())
            }
            _ => Err(forbidden(
                "managing certificates and mappings needs an admin or the MTLS_MANAGE privilege",
            )),
        }
    }

    /// Like [`Self::require_manage`], for the methods LivePerson's mTLS API opens to Bearer tokens only
    /// (by-file uploads, the P12 tester).
    pub fn require_bearer_manage(&self, account: &str) -> Result<(), ApiError> {
        if matches!(self, Principal::AppKey { .. }) {
            self.same_account(account)?;
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "bearer_required",
                "this method accepts Bearer tokens only",
            ));
        }
        self.require_manage(account)
    }

    /// An admin of `account` (managing users and AppKeys).
    pub fn require_admin(&self, account: &str) -> Result<(), ApiError> {
        self.same_account(account)?;
        match self {
            Principal::DevAdmin | Principal::User { admin: true, .. } => Ok(()),
            _ => Err(forbidden("only an admin of the account may do this")),
        }
    }

    /// The operator, and only the operator: deployment-wide actions.
    pub fn require_operator(&self) -> Result<(), ApiError> {
        match self {
            Principal::Operator => Ok(()),
            _ => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "operator_required",
                "only the operator's credential may do this",
            )),
        }
    }

    /// Who did it, for logs and `createdBy` fields: never a secret.
    pub fn describe(&self) -> String {
        match self {
            Principal::DevAdmin => "dev-admin".into(),
            Principal::Operator => "operator".into(),
            Principal::User { user_id, name, .. } => format!("user:{user_id}:{name}"),
            Principal::AppKey { id, .. } => format!("appkey:{id}"),
        }
    }
}

fn unauthorized(code: &'static str, message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, code, message)
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| unauthorized("unauthorized", "an Authorization header is required"))?;
        let value = value
            .to_str()
            .map_err(|_| unauthorized("unauthorized", "the Authorization header is not text"))?;
        if let Some(token) = value.strip_prefix("Bearer ") {
            return bearer(state, token.trim(), via_gateway(parts)).await;
        }
        if value.len() > 6 && value[..6].eq_ignore_ascii_case("OAuth ") {
            return appkey(state, parts, value);
        }
        Err(unauthorized(
            "unauthorized",
            "expected a Bearer token or an OAuth1 signature",
        ))
    }
}

async fn bearer(state: &AppState, token: &str, via_gateway: bool) -> Result<Principal, ApiError> {
    if let Some(operator) = &state.operator_token {
        if operator.matches(token.as_bytes()) {
            // why: as the development token, never through the gateway listener every
            // internal service reaches.
            if via_gateway {
                return Err(unauthorized(
                    "operator_token_not_accepted",
                    "the operator's credential is accepted on the control plane's API only, \
                     never through the gateway",
                ));
            }
            return Ok(Principal::Operator);
        }
    }
    if let Some(dev) = &state.dev_admin_token {
        if dev.matches(token.as_bytes()) {
            // why: the development token is admin of every account; the public gateway
            // listener is what every internal service reaches, so it is never honoured there.
            if via_gateway {
                return Err(unauthorized(
                    "dev_token_not_accepted",
                    "the development admin token is accepted on the control plane's API only, \
                     never through the gateway",
                ));
            }
            return Ok(Principal::DevAdmin);
        }
    }
    let claims = state.login_tokens.verify(token).map_err(|e| match e {
        TokenError::Expired => unauthorized("token_expired", "the token has expired; log in again"),
        _ => unauthorized("invalid_token", "the token is not valid"),
    })?;
    let user_id: i64 = claims
        .sub
        .parse()
        .map_err(|_| unauthorized("invalid_token", "the token is not valid"))?;
    // A deleted user's tokens stop working at once, not when they expire.
    let user = state
        .store
        .user(&claims.acc, user_id)
        .await?
        .ok_or_else(|| unauthorized("invalid_token", "the token's user no longer exists"))?;
    Ok(Principal::User {
        account: user.account,
        user_id: user.id,
        name: user.username,
        admin: user.is_admin,
        privileges: user.privileges,
    })
}

fn appkey(state: &AppState, parts: &Parts, value: &str) -> Result<Principal, ApiError> {
    let invalid = |e: OAuthError| unauthorized("invalid_signature", &e.to_string());
    let auth = Authorization::parse(value).map_err(invalid)?;
    let authority = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))
        .ok_or_else(|| {
            unauthorized(
                "invalid_signature",
                "a Host header is required to check the signature",
            )
        })?;
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let req = oauth1::Request {
        method: parts.method.as_str(),
        scheme: signed_scheme(parts, state.api_scheme).as_str(),
        authority,
        path,
        form_body: None,
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let mut found = None;
    let verified = oauth1::verify(
        &req,
        &auth,
        now,
        oauth1::DEFAULT_MAX_SKEW_SECS,
        |key, token| {
            let k = state.appkeys.get(key, token.unwrap_or_default())?;
            let secrets = k.secrets();
            found = Some(k);
            Some(secrets)
        },
    )
    .map_err(|e| match e {
        OAuthError::UnknownCredentials => {
            unauthorized("unknown_appkey", "unknown or revoked AppKey")
        }
        other => invalid(other),
    })?;
    let key = found.ok_or_else(|| unauthorized("unknown_appkey", "unknown or revoked AppKey"))?;
    state
        .nonces
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .check_and_insert(&verified, now)
        .map_err(|_| unauthorized("replayed_nonce", "this oauth_nonce was already used"))?;
    Ok(Principal::AppKey {
        account: key.row.account,
        id: key.row.id,
        privileges: key.row.privileges,
    })
}

#[cfg(test)]
mod scheme_tests {
    use super::*;

    fn parts(via: Option<&str>) -> Parts {
        let mut b = axum::http::Request::builder().uri("/api/account/a/appkeys");
        if let Some(v) = via {
            b = b.header(VIA_HEADER, v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn the_signed_scheme_is_the_one_the_caller_used() {
        assert_eq!(signed_scheme(&parts(None), Scheme::Https), Scheme::Https);
        assert_eq!(signed_scheme(&parts(None), Scheme::Http), Scheme::Http);
        assert_eq!(
            signed_scheme(&parts(Some("gateway")), Scheme::Https),
            Scheme::Http
        );
        assert!(!via_gateway(&parts(Some("something else"))));
        // A gateway with a TLS listener says so; a direct caller's header means nothing.
        let with_scheme = |via: Option<&str>, scheme: &str| {
            let mut p = parts(via);
            p.headers.insert(SCHEME_HEADER, scheme.parse().unwrap());
            p
        };
        assert_eq!(
            signed_scheme(&with_scheme(Some("gateway"), "https"), Scheme::Http),
            Scheme::Https
        );
        assert_eq!(
            signed_scheme(&with_scheme(Some("gateway"), "gopher"), Scheme::Https),
            Scheme::Http
        );
        assert_eq!(
            signed_scheme(&with_scheme(None, "https"), Scheme::Http),
            Scheme::Http
        );
    }
}
