//! Credentials an account defines once and attaches to mappings, so the gateway authenticates
//! to the target on every forward and callers never hold the target's secrets. The types are
//! those of LivePerson's Bot Accounts (see `seeds/bot-accounts-credentials.txt`).
//!
//! Each credential splits into public settings (stored in SQL, shown in answers) and secrets
//! (stored in Vault, shown masked, never answered).

use base64::Engine;
use mtlsgate_filter::target::Target;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::secret::Secret;

/// What a request body describes, by `type`.
#[derive(Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
pub enum Input {
    Oauth2ClientCredentials {
        client_id: String,
        client_secret: Secret,
        #[serde(default)]
        scope: Option<String>,
        token_url: String,
        #[serde(default)]
        client_authentication: Option<String>,
    },
    Oauth2AuthorizationCode {
        client_id: String,
        client_secret: Secret,
        #[serde(default)]
        scope: Option<String>,
        auth_url: String,
        token_url: String,
        #[serde(default)]
        pkce: bool,
        #[serde(default)]
        client_authentication: Option<String>,
    },
    BasicAuthentication {
        username: String,
        password: Secret,
    },
    AccessToken {
        token: Secret,
        token_type: String,
    },
    MutualAuthentication {
        /// The key store (.p12/.pfx), base64.
        key_certificate: Secret,
        #[serde(default)]
        key_certificate_password: Secret,
        /// PEM text, or DER as base64.
        #[serde(default)]
        trust_certificate: Option<String>,
        #[serde(default)]
        trust_certificate_password: Secret,
        #[serde(default)]
        protocols: Option<Vec<String>>,
    },
    TransferToMessaging {
        client_id: String,
        client_secret: Secret,
        /// LivePerson's C2M token endpoint; the control plane's `--messaging-token-url`
        /// when not given.
        #[serde(default)]
        token_url: Option<String>,
        #[serde(default)]
        client_authentication: Option<String>,
    },
    ThirdPartyNlu {
        provider: String,
        credentials: Value,
    },
    ConsumerPreAuthentication {
        #[serde(default)]
        settings: Option<Map<String, Value>>,
    },
}

/// A validated credential: its kind, public settings and secrets.
#[derive(Debug, Clone)]
pub struct Validated {
    pub kind: &'static str,
    pub settings: Map<String, Value>,
    /// Secret fields by name.
    pub secrets: Vec<(&'static str, Secret)>,
}

/// Why a credential body was refused; `code` is the API error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub code: &'static str,
    pub message: String,
}

fn invalid(code: &'static str, message: impl Into<String>) -> Invalid {
    Invalid {
        code,
        message: message.into(),
    }
}

fn required(field: &str, value: &str) -> Result<(), Invalid> {
    if value.trim().is_empty() || value.len() > 4096 || value.chars().any(char::is_control) {
        return Err(invalid(
            "invalid_credential",
            format!("{field} must be 1-4096 printable characters"),
        ));
    }
    Ok(())
}

/// An OAuth endpoint: HTTPS, or plain HTTP on a loopback address only (an authorization
/// server on the control plane's own host; RFC 8252 §8.3 allows the same for redirects).
/// Anywhere else a client secret or a code must not travel in clear.
fn endpoint_url(field: &str, value: &str) -> Result<(), Invalid> {
    if let Some(rest) = value.strip_prefix("http://") {
        let loopback = url::Url::parse(value).ok().and_then(|u| match u.host() {
            Some(url::Host::Ipv4(ip)) => Some(ip.is_loopback()),
            Some(url::Host::Ipv6(ip)) => Some(ip.is_loopback()),
            Some(url::Host::Domain(d)) => Some(d.eq_ignore_ascii_case("localhost")),
            None => None,
        });
        return match loopback {
            Some(true) if !rest.contains('@') && value.len() <= 4096 => Ok(()),
            _ => Err(invalid(
                "invalid_credential",
                format!("{field} must be https (plain http only to a loopback address)"),
            )),
        };
    }
    Target::parse(value)
        .map(|_| ())
        .map_err(|e| invalid("invalid_credential", format!("{field}: {e}")))
}

/// The confidential client every token-getting kind has: `clientId` and
/// `clientAuthentication` go to the settings, `clientSecret` to the secrets.
fn client(
    settings: &mut Map<String, Value>,
    secrets: &mut Vec<(&'static str, Secret)>,
    client_id: String,
    client_secret: Secret,
    authentication: Option<String>,
) -> Result<(), Invalid> {
    required("clientId", &client_id)?;
    required("clientSecret", client_secret.expose())?;
    settings.insert("clientId".into(), json!(client_id));
    settings.insert(
        "clientAuthentication".into(),
        json!(client_auth(authentication)?),
    );
    secrets.push(("clientSecret", client_secret));
    Ok(())
}

/// `clientAuthentication`: how the client authenticates at the token endpoint.
fn client_auth(value: Option<String>) -> Result<String, Invalid> {
    let value = value.unwrap_or_else(|| "clientSecretBasic".into());
    match crate::oauth2::ClientAuth::parse(&value) {
        Some(_) => Ok(value),
        None => Err(invalid(
            "invalid_credential",
            "clientAuthentication must be clientSecretBasic or clientSecretPost",
        )),
    }
}

/// A scope (RFC 6749 §3.3): space-separated printable ASCII, no `"` or `\`.
fn optional_scope(scope: &Option<String>) -> Result<(), Invalid> {
    match scope {
        Some(s)
            if s.len() > 1024
                || !s
                    .bytes()
                    .all(|b| b == b' ' || (b.is_ascii_graphic() && b != b'"' && b != b'\\')) =>
        {
            Err(invalid(
                "invalid_credential",
                "scope must be space-separated printable ASCII (RFC 6749 §3.3), at most 1024 bytes",
            ))
        }
        _ => Ok(()),
    }
}

/// TLS versions a Mutual Authentication credential may ask for: what Envoy's BoringSSL speaks.
pub const PROTOCOLS: [&str; 4] = ["TLSv1.0", "TLSv1.1", "TLSv1.2", "TLSv1.3"];

/// The lowest and highest protocol (indices into [`PROTOCOLS`]) of a credential's list.
/// Envoy takes a range, so the list must be one: `["TLSv1.0", "TLSv1.3"]` without the two
/// between is refused rather than silently widened.
pub fn protocol_range(protocols: &[String]) -> Result<(usize, usize), Invalid> {
    if protocols.is_empty() {
        return Err(invalid("invalid_protocols", "name at least one protocol"));
    }
    let mut idx = Vec::with_capacity(protocols.len());
    for p in protocols {
        let Some(i) = PROTOCOLS.iter().position(|k| k == p) else {
            return Err(invalid(
                "invalid_protocols",
                format!(
                    "{p:?} is not a protocol Envoy can speak; use {}",
                    PROTOCOLS.join(", ")
                ),
            ));
        };
        idx.push(i);
    }
    idx.sort_unstable();
    idx.dedup();
    let (lo, hi) = (idx[0], idx[idx.len() - 1]);
    if hi - lo + 1 != idx.len() {
        return Err(invalid(
            "invalid_protocols",
            "Envoy uses a range of versions: name consecutive ones (e.g. TLSv1.2 and TLSv1.3)",
        ));
    }
    Ok((lo, hi))
}

impl Input {
    pub fn validate(self) -> Result<Validated, Invalid> {
        let mut settings = Map::new();
        let mut secrets = Vec::new();
        let kind = match self {
            Input::Oauth2ClientCredentials {
                client_id,
                client_secret,
                scope,
                token_url,
                client_authentication,
            } => {
                endpoint_url("tokenUrl", &token_url)?;
                optional_scope(&scope)?;
                client(
                    &mut settings,
                    &mut secrets,
                    client_id,
                    client_secret,
                    client_authentication,
                )?;
                settings.insert("scope".into(), json!(scope));
                settings.insert("tokenUrl".into(), json!(token_url));
                "oauth2ClientCredentials"
            }
            Input::Oauth2AuthorizationCode {
                client_id,
                client_secret,
                scope,
                auth_url,
                token_url,
                pkce,
                client_authentication,
            } => {
                endpoint_url("authUrl", &auth_url)?;
                endpoint_url("tokenUrl", &token_url)?;
                optional_scope(&scope)?;
                client(
                    &mut settings,
                    &mut secrets,
                    client_id,
                    client_secret,
                    client_authentication,
                )?;
                settings.insert("scope".into(), json!(scope));
                settings.insert("authUrl".into(), json!(auth_url));
                settings.insert("tokenUrl".into(), json!(token_url));
                settings.insert("pkce".into(), json!(pkce));
                "oauth2AuthorizationCode"
            }
            Input::BasicAuthentication { username, password } => {
                required("username", &username)?;
                if username.contains(':') {
                    return Err(invalid(
                        "invalid_credential",
                        "username must not contain ':' (RFC 7617)",
                    ));
                }
                if password.expose().chars().any(char::is_control) {
                    return Err(invalid(
                        "invalid_credential",
                        "password must not contain control characters",
                    ));
                }
                settings.insert("username".into(), json!(username));
                secrets.push(("password", password));
                "basicAuthentication"
            }
            Input::AccessToken { token, token_type } => {
                required("token", token.expose())?;
                required("tokenType", &token_type)?;
                if token_type.contains(' ') || token.expose().contains(['\r', '\n']) {
                    return Err(invalid(
                        "invalid_credential",
                        "tokenType is one word and the token one line",
                    ));
                }
                settings.insert("tokenType".into(), json!(token_type));
                secrets.push(("token", token));
                "accessToken"
            }
            Input::MutualAuthentication {
                key_certificate,
                key_certificate_password,
                trust_certificate,
                trust_certificate_password,
                protocols,
            } => {
                let p12 = base64::engine::general_purpose::STANDARD
                    .decode(key_certificate.expose().trim())
                    .map_err(|_| {
                        invalid(
                            "invalid_key_certificate",
                            "keyCertificate must be the key store in base64",
                        )
                    })?;
                let opened = crate::keystore::open(&p12, key_certificate_password.expose())
                    .map_err(|e| invalid(e.code(), format!("keyCertificate: {e}")))?;
                let trust_certificate = trust_certificate
                    .map(|t| {
                        crate::keystore::trust_bundle(&t, trust_certificate_password.expose())
                            .map_err(|m| invalid("invalid_trust_certificate", m))
                    })
                    .transpose()?;
                let protocols = protocols.unwrap_or_else(|| vec!["TLSv1.2".into()]);
                protocol_range(&protocols)?;
                settings.insert(
                    "keyStoreType".into(),
                    json!(if p12.starts_with(&[0xfe, 0xed, 0xfe, 0xed]) {
                        "jks"
                    } else {
                        "pkcs12"
                    }),
                );
                settings.insert("subject".into(), json!(opened.info.subject));
                settings.insert("serialNumber".into(), json!(opened.info.serial_number));
                settings.insert("notAfter".into(), json!(opened.info.not_after));
                settings.insert("protocols".into(), json!(protocols));
                settings.insert(
                    "hasTrustCertificate".into(),
                    json!(trust_certificate.is_some()),
                );
                secrets.push(("keyCertificate", key_certificate));
                secrets.push(("keyCertificatePassword", key_certificate_password));
                if let Some(t) = trust_certificate {
                    secrets.push(("trustCertificate", Secret::new(t)));
                }
                secrets.push(("trustCertificatePassword", trust_certificate_password));
                "mutualAuthentication"
            }
            Input::TransferToMessaging {
                client_id,
                client_secret,
                token_url,
                client_authentication,
            } => {
                if let Some(u) = &token_url {
                    endpoint_url("tokenUrl", u)?;
                }
                client(
                    &mut settings,
                    &mut secrets,
                    client_id,
                    client_secret,
                    client_authentication,
                )?;
                settings.insert("tokenUrl".into(), json!(token_url));
                "transferToMessaging"
            }
            Input::ThirdPartyNlu {
                provider,
                credentials,
            } => {
                required("provider", &provider)?;
                if !credentials.is_object() {
                    return Err(invalid(
                        "invalid_credential",
                        "credentials must be a JSON object",
                    ));
                }
                settings.insert("provider".into(), json!(provider));
                secrets.push(("credentials", Secret::new(credentials.to_string())));
                "thirdPartyNlu"
            }
            Input::ConsumerPreAuthentication { settings: s } => {
                settings.insert("settings".into(), Value::Object(s.unwrap_or_default()));
                "consumerPreAuthentication"
            }
        };
        Ok(Validated {
            kind,
            settings,
            secrets,
        })
    }
}

/// A trust certificate as PEM: PEM text is checked, base64 DER is converted.
pub fn trust_pem(text: &str) -> Result<String, String> {
    if text.contains("-----BEGIN") {
        let mut n = 0;
        for block in x509_parser::pem::Pem::iter_from_buffer(text.as_bytes()) {
            let block = block.map_err(|_| "the trust certificate is not valid PEM".to_owned())?;
            block
                .parse_x509()
                .map_err(|_| "the trust certificate is not X.509".to_owned())?;
            n += 1;
        }
        if n == 0 {
            return Err("the trust certificate holds no certificate".into());
        }
        return Ok(text.to_owned());
    }
    let der = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| "the trust certificate must be PEM, or DER in base64".to_owned())?;
    x509_parser::parse_x509_certificate(&der)
        .map_err(|_| "the trust certificate is not X.509".to_owned())?;
    Ok(crate::p12::pem("CERTIFICATE", &der))
}

/// Kinds that can be attached to a mapping now, and the `Authorization` header they send.
/// `None` when the kind is stored only, or its header cannot be made yet.
pub fn authorization(
    kind: &str,
    settings: &Map<String, Value>,
    secrets: &Map<String, Value>,
) -> Option<String> {
    let text =
        |m: &Map<String, Value>, k: &str| m.get(k).and_then(Value::as_str).map(str::to_owned);
    match kind {
        "basicAuthentication" => {
            let user = text(settings, "username")?;
            let password = text(secrets, "password").unwrap_or_default();
            Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            ))
        }
        "accessToken" => Some(format!(
            "{} {}",
            text(settings, "tokenType")?,
            text(secrets, "token")?
        )),
        _ => None,
    }
}

/// The PKCE `S256` code challenge of a code verifier (RFC 7636 §4.2):
/// `BASE64URL-ENCODE(SHA256(ASCII(code_verifier)))`.
pub fn pkce_challenge(verifier: &str) -> String {
    use sha2::{Digest, Sha256};
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// A fresh PKCE code verifier: 32 random bytes, base64url (43 characters, RFC 7636 §4.1).
pub fn pkce_verifier() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(crate::identity::random::<32>())
}

/// Whether a kind may be attached to a mapping: those that authenticate forwarded calls.
/// Third-party NLU and Consumer Pre-Authentication are stored only.
pub fn attachable(kind: &str) -> bool {
    matches!(
        kind,
        "basicAuthentication" | "accessToken" | "mutualAuthentication"
    ) || crate::access_tokens::needs_tokens(kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(v: Value) -> Result<Validated, Invalid> {
        serde_json::from_value::<Input>(v)
            .map_err(|e| invalid("invalid_body", e.to_string()))?
            .validate()
    }

    #[test]
    fn basic_and_access_token_headers_are_exactly_as_specified() {
        let v = validate(json!({"type": "basicAuthentication", "username": "Aladdin", "password": "open sesame"})).unwrap();
        let secrets: Map<String, Value> = v
            .secrets
            .iter()
            .map(|(k, s)| (k.to_string(), json!(s.expose())))
            .collect();
        // RFC 7617's example.
        assert_eq!(
            authorization(v.kind, &v.settings, &secrets).unwrap(),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        let v = validate(json!({"type": "accessToken", "token": "abc.def", "tokenType": "Bearer"}))
            .unwrap();
        let secrets: Map<String, Value> = v
            .secrets
            .iter()
            .map(|(k, s)| (k.to_string(), json!(s.expose())))
            .collect();
        assert_eq!(
            authorization(v.kind, &v.settings, &secrets).unwrap(),
            "Bearer abc.def"
        );
        assert!(
            !v.settings
                .values()
                .any(|s| s.to_string().contains("abc.def")),
            "secret in public settings"
        );
    }

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
    fn every_kind_validates_its_fields() {
        let ok = [
            json!({"type": "oauth2ClientCredentials", "clientId": "c", "clientSecret": "s", "tokenUrl": "https://idp.example/token"}),
            json!({"type": "oauth2AuthorizationCode", "clientId": "c", "clientSecret": "s", "authUrl": "https://idp.example/auth", "tokenUrl": "https://idp.example/token", "pkce": true}),
            json!({"type": "transferToMessaging", "clientId": "c", "clientSecret": "s"}),
            json!({"type": "oauth2ClientCredentials", "clientId": "c", "clientSecret": "s", "tokenUrl": "http://127.0.0.1:8081/token"}),
            json!({"type": "oauth2ClientCredentials", "clientId": "c", "clientSecret": "s", "tokenUrl": "http://[::1]/token"}),
            json!({"type": "thirdPartyNlu", "provider": "dialogflow", "credentials": {"k": "v"}}),
            json!({"type": "consumerPreAuthentication"}),
        ];
        for v in ok {
            assert!(validate(v.clone()).is_ok(), "{v}");
        }
        let bad = [
            (
                json!({"type": "oauth2ClientCredentials", "clientId": "c", "clientSecret": "s", "tokenUrl": "http://idp/token"}),
                "invalid_credential",
            ),
            (
                json!({"type": "oauth2ClientCredentials", "clientId": "c", "clientSecret": "s", "tokenUrl": "http://10.0.0.1/token"}),
                "invalid_credential",
            ),
            (
                json!({"type": "oauth2ClientCredentials", "clientId": "c", "clientSecret": "s", "tokenUrl": "http://user@127.0.0.1/token"}),
                "invalid_credential",
            ),
            (
                json!({"type": "basicAuthentication", "username": "a:b", "password": "p"}),
                "invalid_credential",
            ),
            (
                json!({"type": "accessToken", "token": "t\r\nx", "tokenType": "Bearer"}),
                "invalid_credential",
            ),
            (
                json!({"type": "thirdPartyNlu", "provider": "x", "credentials": "not an object"}),
                "invalid_credential",
            ),
            (
                json!({"type": "mutualAuthentication", "keyCertificate": "%%%"}),
                "invalid_key_certificate",
            ),
            (json!({"type": "nope"}), "invalid_body"),
            (
                json!({"type": "accessToken", "token": "t", "tokenType": "Bearer", "extra": 1}),
                "invalid_body",
            ),
        ];
        for (v, code) in bad {
            assert_eq!(validate(v.clone()).err().map(|e| e.code), Some(code), "{v}");
        }
    }
}
