//! The OAuth 2.0 client side the control plane speaks to a credential's token endpoint
//! (RFC 6749 §4.1.3, §4.4, §6; PKCE RFC 7636): one request, one answer, no state. The token
//! lifecycle around it lives in the token keeper (`credential_tokens`).
//!
//! Nothing secret leaves this module in an error: errors carry the endpoint's status, its
//! `error` code and a bounded, sanitised `error_description`, never a request parameter.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::address_policy::Forbidden;
use crate::guarded_dns::{GuardedDns, LookupError};
use crate::secret::Secret;

/// How the client authenticates at the token endpoint (RFC 6749 §2.3.1), named as a
/// credential's `clientAuthentication` setting names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub(crate) enum ClientAuth {
    /// `Authorization: Basic base64(urlencode(id):urlencode(secret))`, which every server
    /// must support.
    #[default]
    #[serde(rename = "clientSecretBasic")]
    Basic,
    /// `client_id` and `client_secret` in the form body.
    #[serde(rename = "clientSecretPost")]
    Post,
}

/// A confidential client as registered at the authorization server.
pub struct ClientCredentials<'a> {
    pub id: &'a str,
    pub secret: &'a Secret,
    pub auth: ClientAuth,
}

/// What to ask the token endpoint for.
pub enum Grant<'a> {
    ClientCredentials {
        scope: Option<&'a str>,
    },
    AuthorizationCode {
        code: &'a str,
        redirect_uri: &'a str,
        /// The PKCE code verifier, when the authorization request carried a challenge.
        verifier: Option<&'a str>,
    },
    Refresh {
        refresh_token: &'a Secret,
    },
}

/// A successful token answer.
#[derive(Debug, Clone)]
pub struct TokenSet {
    pub access_token: Secret,
    /// `expires_in`, when the server said.
    pub expires_in: Option<Duration>,
    /// A new refresh token, when the server issued one.
    pub refresh_token: Option<Secret>,
}

/// Why a token request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    /// No answer: connection refused, TLS failure, timeout.
    #[error("token endpoint unreachable: {0}")]
    Unreachable(String),
    /// An OAuth error answer (RFC 6749 §5.2), e.g. `invalid_client` or `invalid_grant`.
    #[error("token endpoint refused the request (HTTP {status}): {error}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Refused {
        status: u16,
        error: String,
        description: Option<String>,
    },
    /// The endpoint's address is one mtlsgate does not connect to for a tenant.
    #[error("token endpoint not allowed: {0}")]
    NotAllowed(Forbidden),
    /// An answer that is not a usable token answer.
    #[error("token endpoint answered HTTP {status} without a usable token: {reason}")]
    Malformed { status: u16, reason: &'static str },
}

impl GrantError {
    /// The OAuth error code, when the server gave one.
    pub fn oauth_error(&self) -> Option<&str> {
        match self {
            GrantError::Refused { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// Largest token answer read (a JWT access token plus an ID token fits many times over).
const MAX_ANSWER: usize = 64 * 1024;
/// The longest token life believed (a year): a token said to live longer is renewed as if it
/// lived this long.
pub(crate) const MAX_TOKEN_LIFETIME_SECS: u64 = 365 * 24 * 3600;

/// Makes token requests. Cheap to clone.
///
/// why: each request gets its own HTTP client, pinned to the addresses [`GuardedDns`]
/// checked for the endpoint's name, so the name is resolved once and the connection goes
/// to a checked address (no DNS rebinding between the check and the connect). Token
/// requests are rare (a refresh per credential per token life), so the pool a shared client
/// would keep is worth less than that guarantee.
#[derive(Clone)]
pub struct Client {
    dns: GuardedDns,
    roots: Vec<reqwest::Certificate>,
    timeout: Duration,
}

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read the extra trust roots {0}: {1}")]
    Roots(String, String),
    #[error("cannot build the HTTP client: {0}")]
    Build(String),
}

impl Client {
    /// A client trusting the system's roots plus `extra_roots_pem` (a PEM bundle: private
    /// authorization servers), with `timeout` per request, no redirects (a token endpoint
    /// that redirects is misconfigured, and following it would resend the client secret),
    /// no proxy from the environment, and only addresses `dns` allows.
    pub fn new(
        extra_roots_pem: Option<&[u8]>,
        timeout: Duration,
        dns: GuardedDns,
    ) -> Result<Client, ClientError> {
        let roots = match extra_roots_pem {
            Some(pem) => reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| ClientError::Roots("(PEM)".into(), e.to_string()))?,
            None => Vec::new(),
        };
        let client = Client {
            dns,
            roots,
            timeout,
        };
        // Fail at start, not at the first token request, if the TLS setup cannot be built.
        client
            .http(None)
            .map_err(|e| ClientError::Build(e.to_string()))?;
        Ok(client)
    }

    /// An HTTP client for one request, `pin` naming the only addresses a host name may use.
    fn http(&self, pin: Option<(&str, &[SocketAddr])>) -> Result<reqwest::Client, reqwest::Error> {
        let mut builder = reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("mtlsgate/", env!("CARGO_PKG_VERSION")));
        if !self.roots.is_empty() {
            builder = builder.tls_certs_merge(self.roots.iter().cloned());
        }
        if let Some((host, addrs)) = pin {
            builder = builder.resolve_to_addrs(host, addrs);
        }
        builder.build()
    }

    /// Asks `token_url` for tokens.
    pub async fn request(
        &self,
        token_url: &str,
        client: &ClientCredentials<'_>,
        grant: &Grant<'_>,
    ) -> Result<TokenSet, GrantError> {
        let url = url::Url::parse(token_url)
            .map_err(|_| GrantError::Unreachable("the token URL is not a valid URL".into()))?;
        let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
            return Err(GrantError::Unreachable(
                "the token URL names no host".into(),
            ));
        };
        let addrs = self.dns.resolve(host, port).await.map_err(|e| match e {
            LookupError::NotAllowed(why) => GrantError::NotAllowed(why),
            other => GrantError::Unreachable(other.to_string()),
        })?;
        let is_name = url.domain().is_some();
        let http = self
            .http(is_name.then_some((host, addrs.as_slice())))
            .map_err(|_| GrantError::Unreachable("cannot set up the connection".into()))?;
        let mut req = http
            .post(url)
            .header("accept", "application/json")
            .header("content-type", "application/x-www-form-urlencoded");
        if client.auth == ClientAuth::Basic {
            req = req.header("authorization", basic_authorization(client));
        }
        let resp = req
            .body(form_body(client, grant))
            .send()
            .await
            .map_err(|e| GrantError::Unreachable(describe(&e).into()))?;
        let status = resp.status().as_u16();
        let body = read_bounded(resp)
            .await
            .map_err(|reason| GrantError::Malformed { status, reason })?;
        parse_answer(status, &body)
    }
}

/// The token request's form body (RFC 6749 §4.1.3, §4.4.2, §6).
fn form_body(client: &ClientCredentials<'_>, grant: &Grant<'_>) -> String {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    match grant {
        Grant::ClientCredentials { scope } => {
            form.append_pair("grant_type", "client_credentials");
            if let Some(s) = scope.filter(|s| !s.is_empty()) {
                form.append_pair("scope", s);
            }
        }
        Grant::AuthorizationCode {
            code,
            redirect_uri,
            verifier,
        } => {
            form.append_pair("grant_type", "authorization_code");
            form.append_pair("code", code);
            form.append_pair("redirect_uri", redirect_uri);
            if let Some(v) = verifier {
                form.append_pair("code_verifier", v);
            }
        }
        Grant::Refresh { refresh_token } => {
            form.append_pair("grant_type", "refresh_token");
            form.append_pair("refresh_token", refresh_token.expose());
        }
    }
    // why: with Basic, some servers still want the id in the body to find the client
    // (RFC 6749 §3.2.1 allows it); with Post, both go in the body (§2.3.1).
    form.append_pair("client_id", client.id);
    if client.auth == ClientAuth::Post {
        form.append_pair("client_secret", client.secret.expose());
    }
    form.finish()
}

/// RFC 6749 §2.3.1: the id and secret are form-urlencoded before they are joined.
fn basic_authorization(client: &ClientCredentials<'_>) -> String {
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            enc(client.id),
            enc(client.secret.expose())
        ))
    )
}

/// What failed, as a category: never the error's text, which can carry what the other end
/// sent (a TLS alert, a proxy's words) and, for an internal endpoint, would make `lastError`
/// a probe of the internal network.
fn describe(e: &reqwest::Error) -> &'static str {
    use std::error::Error;
    if e.is_timeout() {
        return "the request timed out";
    }
    let mut source = e.source();
    while let Some(s) = source {
        // why: an `io::Error` hides what it wraps from `source()`; look inside it.
        let inner = s
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|i| i as &(dyn Error + 'static));
        if [Some(s), inner]
            .into_iter()
            .flatten()
            .any(|x| x.downcast_ref::<rustls::Error>().is_some())
        {
            return "the TLS handshake failed (is the endpoint's certificate trusted?)";
        }
        source = s.source();
    }
    if e.is_connect() {
        "could not connect"
    } else {
        "the connection failed"
    }
}

async fn read_bounded(mut resp: reqwest::Response) -> Result<Vec<u8>, &'static str> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|_| "the answer broke off")? {
        if body.len() + chunk.len() > MAX_ANSWER {
            return Err("the answer is too large");
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[derive(Deserialize)]
struct Answer {
    access_token: Option<String>,
    token_type: Option<String>,
    expires_in: Option<serde_json::Value>,
    refresh_token: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// Reads a token endpoint's answer (RFC 6749 §5.1 and §5.2).
fn parse_answer(status: u16, body: &[u8]) -> Result<TokenSet, GrantError> {
    let answer: Answer = serde_json::from_slice(body).map_err(|_| GrantError::Malformed {
        status,
        reason: "the answer is not a JSON object",
    })?;
    if let Some(error) = answer.error {
        return Err(GrantError::Refused {
            status,
            error: clean(&error, 64),
            description: answer.error_description.map(|d| clean(&d, 200)),
        });
    }
    if !(200..300).contains(&status) {
        return Err(GrantError::Malformed {
            status,
            reason: "an error status without an OAuth error code",
        });
    }
    let access_token = answer
        .access_token
        .filter(|t| {
            !t.is_empty() && t.len() <= 16 * 1024 && t.bytes().all(|b| b.is_ascii_graphic())
        })
        .ok_or(GrantError::Malformed {
            status,
            reason: "no access_token, or one that cannot be sent in a header",
        })?;
    // why: the gateway sends `Authorization: Bearer <token>`; a token of another type
    // (RFC 6749 §7.1, e.g. `mac`) would be sent wrongly.
    if let Some(t) = &answer.token_type {
        if !t.eq_ignore_ascii_case("bearer") {
            return Err(GrantError::Malformed {
                status,
                reason: "token_type is not Bearer",
            });
        }
    }
    // Some servers send expires_in as a string. A hostile or broken server may send any
    // number: it is bounded here, so no later time arithmetic can overflow.
    let expires_in = match answer.expires_in {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .filter(|s| *s > 0)
    .map(|s| Duration::from_secs(s.min(MAX_TOKEN_LIFETIME_SECS)));
    Ok(TokenSet {
        access_token: Secret::new(access_token),
        expires_in,
        refresh_token: answer
            .refresh_token
            .filter(|t| !t.is_empty())
            .map(Secret::new),
    })
}

/// Text from outside, made safe for a log line or an answer: printable, bounded.
fn clean(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect()
}

/// The PKCE `S256` code challenge of a code verifier (RFC 7636 §4.2):
/// `BASE64URL-ENCODE(SHA256(ASCII(code_verifier)))`.
pub(crate) fn pkce_challenge(verifier: &str) -> String {
    use sha2::{Digest, Sha256};
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// A fresh PKCE code verifier: 32 random bytes, base64url (43 characters, RFC 7636 §4.1).
pub(crate) fn pkce_verifier() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(crate::random::bytes::<32>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_matches_rfc_7636_appendix_b() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let v = pkce_verifier();
        assert_eq!(v.len(), 43);
        assert!(v
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_ne!(v, pkce_verifier());
    }

    #[test]
    fn reads_success_and_error_answers() {
        let ok = parse_answer(
            200,
            br#"{"access_token":"abc","token_type":"bearer","expires_in":"120","refresh_token":"r1"}"#,
        )
        .unwrap();
        assert_eq!(ok.access_token.expose(), "abc");
        assert_eq!(ok.expires_in, Some(Duration::from_secs(120)));
        // Absurd lifetimes are bounded, as numbers and as strings.
        for huge in [
            br#"{"access_token":"a","expires_in":18446744073709551615}"#.as_slice(),
            br#"{"access_token":"a","expires_in":"18446744073709551615"}"#,
            br#"{"access_token":"a","expires_in":1e300}"#,
        ] {
            let t = parse_answer(200, huge).unwrap();
            assert!(
                t.expires_in
                    .is_none_or(|d| d.as_secs() <= MAX_TOKEN_LIFETIME_SECS),
                "{t:?}"
            );
        }
        assert_eq!(ok.refresh_token.unwrap().expose(), "r1");

        let refused = parse_answer(
            401,
            b"{\"error\":\"invalid_client\",\"error_description\":\"bad\\nsecret\"}",
        )
        .unwrap_err();
        assert_eq!(refused.oauth_error(), Some("invalid_client"));
        assert_eq!(
            refused.to_string(),
            "token endpoint refused the request (HTTP 401): invalid_client (badsecret)"
        );

        for (status, body) in [
            (200, &b"not json"[..]),
            (500, b"{}"),
            (200, b"{\"token_type\":\"Bearer\"}"),
            (200, b"{\"access_token\":\"a b\"}"),
            (200, b"{\"access_token\":\"a\",\"token_type\":\"mac\"}"),
        ] {
            assert!(
                matches!(
                    parse_answer(status, body),
                    Err(GrantError::Malformed { .. })
                ),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn basic_client_authentication_encodes_as_rfc_6749_asks() {
        let secret = Secret::new("s3cr:t/+");
        let h = basic_authorization(&ClientCredentials {
            id: "my client",
            secret: &secret,
            auth: ClientAuth::Basic,
        });
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(h.trim_start_matches("Basic "))
            .unwrap();
        assert_eq!(decoded, b"my+client:s3cr%3At%2F%2B");
    }
}
