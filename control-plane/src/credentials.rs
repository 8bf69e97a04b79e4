//! Credentials an account defines once and attaches to mappings, so the gateway authenticates
//! to the target on every forward and callers never hold the target's secrets. The kinds are
//! those of LivePerson's Bot Accounts credentials (LivePerson Developer Center, "Bot
//! Accounts").
//!
//! This module checks what a request body describes and turns it into the typed settings
//! (stored in SQL, shown in answers) and secrets (stored in the secret store, shown masked,
//! never answered) of [`crate::credential_kind`].

use base64::Engine;
use mtlsgate_filter::target::Target;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::address_policy::AddressPolicy;
use crate::credential_kind::{
    AccessTokenSecrets, AccessTokenSettings, AuthorizationCodeSettings, BasicSecrets,
    BasicSettings, ClientCredentialsSettings, ClientSecret, CredentialKind, CredentialSecrets,
    CredentialSettings, KeyStoreType, MessagingSettings, MutualSecrets, MutualSettings, NluSecrets,
    NluSettings, OAuthClient, PreAuthenticationSettings,
};
use crate::oauth2::ClientAuth;
use crate::secret::Secret;
use crate::tls_versions::{TlsRange, TlsVersion};

/// What a request body describes, by `type`.
#[derive(Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
pub(crate) enum Input {
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

/// A validated credential: its public settings (which say its kind) and its secrets.
#[derive(Debug, Clone)]
pub(crate) struct Validated {
    pub(crate) settings: CredentialSettings,
    pub(crate) secrets: CredentialSecrets,
}

impl Validated {
    pub(crate) fn kind(&self) -> CredentialKind {
        self.settings.kind()
    }
}

/// Why a credential body was refused; `code` is the API error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Invalid {
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

fn invalid(code: &'static str, message: impl Into<String>) -> Invalid {
    Invalid {
        code,
        message: message.into(),
    }
}

fn required(field: &str, value: &str) -> Result<(), Invalid> {
    // Characters, not bytes: the limit the API documents (its JSON Schema's maxLength).
    if value.trim().is_empty()
        || value.chars().count() > 4096
        || value.chars().any(char::is_control)
    {
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
/// An authorization or token endpoint: `https://…` (plain `http://` only to loopback), at an
/// address the operator lets tenants reach (`policy`; names are checked again each time
/// they are looked up, when the token keeper connects).
fn endpoint_url(field: &str, value: &str, policy: &AddressPolicy) -> Result<(), Invalid> {
    if let Some(rest) = value.strip_prefix("http://") {
        let loopback = url::Url::parse(value).ok().and_then(|u| match u.host() {
            Some(url::Host::Ipv4(ip)) => Some(ip.is_loopback()),
            Some(url::Host::Ipv6(ip)) => Some(ip.is_loopback()),
            Some(url::Host::Domain(d)) => Some(d.eq_ignore_ascii_case("localhost")),
            None => None,
        });
        if !matches!(loopback, Some(true)) || rest.contains('@') || value.len() > 4096 {
            return Err(invalid(
                "invalid_credential",
                format!("{field} must be https (plain http only to a loopback address)"),
            ));
        }
    } else {
        Target::parse(value).map_err(|e| invalid("invalid_credential", format!("{field}: {e}")))?;
    }
    if let Ok(url) = url::Url::parse(value) {
        if let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) {
            policy
                .check_written(host, port)
                .map_err(|why| invalid("target_not_allowed", format!("{field}: {why}")))?;
        }
    }
    Ok(())
}

/// The confidential client every token-getting kind has: `clientId` and
/// `clientAuthentication` are settings, `clientSecret` its one secret.
fn client(
    client_id: String,
    client_secret: Secret,
    authentication: Option<String>,
) -> Result<(OAuthClient, CredentialSecrets), Invalid> {
    required("clientId", &client_id)?;
    required("clientSecret", client_secret.expose())?;
    let client_authentication = match authentication {
        None => ClientAuth::default(),
        Some(name) => serde_json::from_value(Value::String(name)).map_err(|_| {
            invalid(
                "invalid_credential",
                "clientAuthentication must be clientSecretBasic or clientSecretPost",
            )
        })?,
    };
    Ok((
        OAuthClient {
            client_id,
            client_authentication,
        },
        CredentialSecrets::Client(ClientSecret { client_secret }),
    ))
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

/// The versions of a Mutual Authentication credential's `protocols`, which Envoy must be
/// able to speak as one range.
fn protocols(names: Option<Vec<String>>) -> Result<Vec<TlsVersion>, Invalid> {
    let names = names.unwrap_or_else(|| vec![TlsVersion::V1_2.as_str().to_owned()]);
    TlsRange::from_names(&names).map_err(|e| invalid("invalid_protocols", e.to_string()))?;
    let mut versions: Vec<TlsVersion> = names.iter().filter_map(|n| TlsVersion::parse(n)).collect();
    versions.dedup();
    Ok(versions)
}

impl Input {
    pub(crate) fn validate(self, policy: &AddressPolicy) -> Result<Validated, Invalid> {
        let (settings, secrets) = match self {
            Input::Oauth2ClientCredentials {
                client_id,
                client_secret,
                scope,
                token_url,
                client_authentication,
            } => {
                endpoint_url("tokenUrl", &token_url, policy)?;
                optional_scope(&scope)?;
                let (client, secrets) = client(client_id, client_secret, client_authentication)?;
                (
                    CredentialSettings::Oauth2ClientCredentials(ClientCredentialsSettings {
                        client,
                        scope,
                        token_url,
                    }),
                    secrets,
                )
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
                endpoint_url("authUrl", &auth_url, policy)?;
                endpoint_url("tokenUrl", &token_url, policy)?;
                optional_scope(&scope)?;
                let (client, secrets) = client(client_id, client_secret, client_authentication)?;
                (
                    CredentialSettings::Oauth2AuthorizationCode(AuthorizationCodeSettings {
                        client,
                        scope,
                        auth_url,
                        token_url,
                        pkce,
                    }),
                    secrets,
                )
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
                (
                    CredentialSettings::BasicAuthentication(BasicSettings { username }),
                    CredentialSecrets::Basic(BasicSecrets { password }),
                )
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
                (
                    CredentialSettings::AccessToken(AccessTokenSettings { token_type }),
                    CredentialSecrets::AccessToken(AccessTokenSecrets { token }),
                )
            }
            Input::MutualAuthentication {
                key_certificate,
                key_certificate_password,
                trust_certificate,
                trust_certificate_password,
                protocols: names,
            } => {
                let store = base64::engine::general_purpose::STANDARD
                    .decode(key_certificate.expose().trim())
                    .map_err(|_| {
                        invalid(
                            "invalid_key_certificate",
                            "keyCertificate must be the key store in base64",
                        )
                    })?;
                let opened = crate::keystore::open(&store, key_certificate_password.expose())
                    .map_err(|e| invalid(e.code(), format!("keyCertificate: {e}")))?;
                let trust_certificate = trust_certificate
                    .map(|t| {
                        crate::keystore::trust_bundle(&t, trust_certificate_password.expose())
                            .map_err(|e| match e {
                                crate::keystore::TrustError::Store(
                                    s @ crate::p12::P12Error::TooCostly(_),
                                ) => invalid(s.code(), format!("trustCertificate: {s}")),
                                e => invalid("invalid_trust_certificate", e.to_string()),
                            })
                    })
                    .transpose()?;
                let protocols = protocols(names)?;
                (
                    CredentialSettings::MutualAuthentication(MutualSettings {
                        key_store_type: if crate::keystore::is_java(&store) {
                            KeyStoreType::Jks
                        } else {
                            KeyStoreType::Pkcs12
                        },
                        subject: opened.info.subject,
                        serial_number: opened.info.serial_number,
                        not_after: opened.info.not_after,
                        protocols,
                        has_trust_certificate: trust_certificate.is_some(),
                    }),
                    CredentialSecrets::Mutual(MutualSecrets {
                        key_certificate,
                        key_certificate_password,
                        trust_certificate: trust_certificate.map(Secret::new),
                        trust_certificate_password,
                    }),
                )
            }
            Input::TransferToMessaging {
                client_id,
                client_secret,
                token_url,
                client_authentication,
            } => {
                if let Some(u) = &token_url {
                    endpoint_url("tokenUrl", u, policy)?;
                }
                let (client, secrets) = client(client_id, client_secret, client_authentication)?;
                (
                    CredentialSettings::TransferToMessaging(MessagingSettings {
                        client,
                        token_url,
                    }),
                    secrets,
                )
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
                (
                    CredentialSettings::ThirdPartyNlu(NluSettings { provider }),
                    CredentialSecrets::ThirdPartyNlu(NluSecrets {
                        credentials: Secret::new(credentials.to_string()),
                    }),
                )
            }
            Input::ConsumerPreAuthentication { settings } => (
                CredentialSettings::ConsumerPreAuthentication(PreAuthenticationSettings {
                    settings: settings.unwrap_or_default(),
                }),
                CredentialSecrets::None,
            ),
        };
        Ok(Validated { settings, secrets })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Loopback allowed, as an operator testing against a local authorization server would.
    fn validate(v: Value) -> Result<Validated, Invalid> {
        let loopback = AddressPolicy::new(
            vec![
                crate::address_policy::parse_range("127.0.0.0/8").unwrap(),
                crate::address_policy::parse_range("::1").unwrap(),
            ],
            vec![],
            vec![],
        );
        serde_json::from_value::<Input>(v)
            .map_err(|e| invalid("invalid_body", e.to_string()))?
            .validate(&loopback)
    }

    #[test]
    fn endpoints_at_internal_addresses_are_refused_unless_the_operator_allows_them() {
        let strict = AddressPolicy::default();
        for url in [
            "http://127.0.0.1:9901/quitquitquit",
            "http://localhost:9901/logging?level=debug",
            "https://169.254.169.254/latest/meta-data/",
            "https://10.0.0.1/token",
            "https://[::1]:8200/v1/sys/seal",
            "https://[::ffff:7f00:1]/token",
        ] {
            let e = serde_json::from_value::<Input>(json!({
                "type": "oauth2ClientCredentials", "clientId": "c", "clientSecret": "s",
                "tokenUrl": url
            }))
            .unwrap()
            .validate(&strict)
            .err()
            .unwrap_or_else(|| panic!("{url} accepted"));
            assert_eq!(e.code, "target_not_allowed", "{url}");
            // The refusal names the field and the rule, never the tenant's URL.
            assert!(!e.message.contains(url), "{}", e.message);
        }
        let ok = serde_json::from_value::<Input>(json!({
            "type": "oauth2AuthorizationCode", "clientId": "c", "clientSecret": "s",
            "authUrl": "https://idp.example/authorize", "tokenUrl": "https://idp.example/token"
        }))
        .unwrap()
        .validate(&strict);
        assert!(ok.is_ok());
    }

    #[test]
    fn basic_and_access_token_headers_are_exactly_as_specified() {
        use crate::credential_kind::fixed_authorization;
        let v = validate(json!({"type": "basicAuthentication", "username": "Aladdin", "password": "open sesame"})).unwrap();
        // RFC 7617's example.
        assert_eq!(
            fixed_authorization(&v.settings, &v.secrets).unwrap(),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        let v = validate(json!({"type": "accessToken", "token": "abc.def", "tokenType": "Bearer"}))
            .unwrap();
        assert_eq!(
            fixed_authorization(&v.settings, &v.secrets).unwrap(),
            "Bearer abc.def"
        );
        assert!(
            !Value::Object(v.settings.to_json())
                .to_string()
                .contains("abc.def"),
            "secret in public settings"
        );
        assert_eq!(v.secrets.field_names(), ["token"]);
    }

    #[test]
    fn a_bad_client_authentication_is_named() {
        let e = validate(json!({"type": "oauth2ClientCredentials", "clientId": "c", "clientSecret": "s", "tokenUrl": "https://idp.example/token", "clientAuthentication": "mtls"})).unwrap_err();
        assert_eq!(e.code, "invalid_credential");
        assert!(e.message.contains("clientAuthentication"), "{}", e.message);
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
