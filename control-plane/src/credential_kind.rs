//! What each kind of target credential is made of, typed: the eight kinds of LivePerson's
//! Bot Accounts credentials, the public settings of each (kept in SQL, shown in answers) and
//! its secret fields (kept in the secret store, never answered).
//!
//! why: the kinds and their field names used to be string literals compared in five files,
//! where a drift silently became `credential_unavailable`. Here each is written once; a new
//! kind or a renamed field is a compile error everywhere it matters.

use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::oauth2::ClientAuth;
use crate::secret::Secret;
use crate::tls_versions::{ProtocolsError, TlsRange, TlsVersion};

/// The kinds of credential an account can define.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) enum CredentialKind {
    Oauth2ClientCredentials,
    Oauth2AuthorizationCode,
    BasicAuthentication,
    AccessToken,
    MutualAuthentication,
    TransferToMessaging,
    ThirdPartyNlu,
    ConsumerPreAuthentication,
}

impl CredentialKind {
    pub(crate) const ALL: [CredentialKind; 8] = [
        CredentialKind::Oauth2ClientCredentials,
        CredentialKind::Oauth2AuthorizationCode,
        CredentialKind::BasicAuthentication,
        CredentialKind::AccessToken,
        CredentialKind::MutualAuthentication,
        CredentialKind::TransferToMessaging,
        CredentialKind::ThirdPartyNlu,
        CredentialKind::ConsumerPreAuthentication,
    ];

    /// The name in the API's `type` field and in the store.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CredentialKind::Oauth2ClientCredentials => "oauth2ClientCredentials",
            CredentialKind::Oauth2AuthorizationCode => "oauth2AuthorizationCode",
            CredentialKind::BasicAuthentication => "basicAuthentication",
            CredentialKind::AccessToken => "accessToken",
            CredentialKind::MutualAuthentication => "mutualAuthentication",
            CredentialKind::TransferToMessaging => "transferToMessaging",
            CredentialKind::ThirdPartyNlu => "thirdPartyNlu",
            CredentialKind::ConsumerPreAuthentication => "consumerPreAuthentication",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<CredentialKind> {
        CredentialKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Its header is an access token the control plane obtains and renews.
    pub(crate) fn needs_tokens(self) -> bool {
        matches!(
            self,
            CredentialKind::Oauth2ClientCredentials
                | CredentialKind::Oauth2AuthorizationCode
                | CredentialKind::TransferToMessaging
        )
    }

    /// A person authorizes it in a browser (the authorization-code flow).
    pub(crate) fn authorized_by_user(self) -> bool {
        self == CredentialKind::Oauth2AuthorizationCode
    }

    /// It can be attached to a mapping: it authenticates forwarded calls. Third-party NLU
    /// and Consumer Pre-Authentication are stored only.
    pub(crate) fn attachable(self) -> bool {
        !matches!(
            self,
            CredentialKind::ThirdPartyNlu | CredentialKind::ConsumerPreAuthentication
        )
    }

    /// At most one per account.
    pub(crate) fn one_per_account(self) -> bool {
        self == CredentialKind::ConsumerPreAuthentication
    }
}

impl std::fmt::Display for CredentialKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The confidential client every token-getting kind has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OAuthClient {
    pub(crate) client_id: String,
    #[serde(default)]
    pub(crate) client_authentication: ClientAuth,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ClientCredentialsSettings {
    #[serde(flatten)]
    pub(crate) client: OAuthClient,
    #[serde(default)]
    pub(crate) scope: Option<String>,
    pub(crate) token_url: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AuthorizationCodeSettings {
    #[serde(flatten)]
    pub(crate) client: OAuthClient,
    #[serde(default)]
    pub(crate) scope: Option<String>,
    pub(crate) auth_url: String,
    pub(crate) token_url: String,
    #[serde(default)]
    pub(crate) pkce: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MessagingSettings {
    #[serde(flatten)]
    pub(crate) client: OAuthClient,
    /// LivePerson's C2M token endpoint; the control plane's `--messaging-token-url` when
    /// not given.
    #[serde(default)]
    pub(crate) token_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BasicSettings {
    pub(crate) username: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AccessTokenSettings {
    pub(crate) token_type: String,
}

/// The file format of a Mutual Authentication key store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum KeyStoreType {
    Pkcs12,
    Jks,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MutualSettings {
    pub(crate) key_store_type: KeyStoreType,
    /// Of the key store's leaf certificate.
    pub(crate) subject: String,
    pub(crate) serial_number: String,
    pub(crate) not_after: i64,
    /// Consecutive versions (checked on write): the cluster's range.
    pub(crate) protocols: Vec<TlsVersion>,
    pub(crate) has_trust_certificate: bool,
}

impl MutualSettings {
    pub(crate) fn tls_range(&self) -> Result<TlsRange, ProtocolsError> {
        TlsRange::from_versions(&self.protocols)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NluSettings {
    pub(crate) provider: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PreAuthenticationSettings {
    #[serde(default)]
    pub(crate) settings: Map<String, Value>,
}

/// A credential's public settings, one variant per kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CredentialSettings {
    Oauth2ClientCredentials(ClientCredentialsSettings),
    Oauth2AuthorizationCode(AuthorizationCodeSettings),
    BasicAuthentication(BasicSettings),
    AccessToken(AccessTokenSettings),
    MutualAuthentication(MutualSettings),
    TransferToMessaging(MessagingSettings),
    ThirdPartyNlu(NluSettings),
    ConsumerPreAuthentication(PreAuthenticationSettings),
}

/// What a token request needs from a credential's settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TokenClient<'a> {
    pub(crate) client: &'a OAuthClient,
    /// `None`: Transfer to Messaging without its own URL (the deployment's default applies).
    pub(crate) token_url: Option<&'a str>,
    pub(crate) scope: Option<&'a str>,
}

impl CredentialSettings {
    pub(crate) fn kind(&self) -> CredentialKind {
        match self {
            CredentialSettings::Oauth2ClientCredentials(_) => {
                CredentialKind::Oauth2ClientCredentials
            }
            CredentialSettings::Oauth2AuthorizationCode(_) => {
                CredentialKind::Oauth2AuthorizationCode
            }
            CredentialSettings::BasicAuthentication(_) => CredentialKind::BasicAuthentication,
            CredentialSettings::AccessToken(_) => CredentialKind::AccessToken,
            CredentialSettings::MutualAuthentication(_) => CredentialKind::MutualAuthentication,
            CredentialSettings::TransferToMessaging(_) => CredentialKind::TransferToMessaging,
            CredentialSettings::ThirdPartyNlu(_) => CredentialKind::ThirdPartyNlu,
            CredentialSettings::ConsumerPreAuthentication(_) => {
                CredentialKind::ConsumerPreAuthentication
            }
        }
    }

    /// The settings as stored and answered (a JSON object; the kind is apart).
    pub(crate) fn to_json(&self) -> Map<String, Value> {
        let value = match self {
            CredentialSettings::Oauth2ClientCredentials(s) => serde_json::to_value(s),
            CredentialSettings::Oauth2AuthorizationCode(s) => serde_json::to_value(s),
            CredentialSettings::BasicAuthentication(s) => serde_json::to_value(s),
            CredentialSettings::AccessToken(s) => serde_json::to_value(s),
            CredentialSettings::MutualAuthentication(s) => serde_json::to_value(s),
            CredentialSettings::TransferToMessaging(s) => serde_json::to_value(s),
            CredentialSettings::ThirdPartyNlu(s) => serde_json::to_value(s),
            CredentialSettings::ConsumerPreAuthentication(s) => serde_json::to_value(s),
        };
        match value {
            Ok(Value::Object(m)) => m,
            // why: every variant is a struct of strings, numbers, lists and maps, which
            // always serializes to an object; nothing else can come out.
            _ => Map::new(),
        }
    }

    /// The stored settings of a credential of `kind`.
    pub(crate) fn from_json(
        kind: CredentialKind,
        json: Value,
    ) -> Result<CredentialSettings, serde_json::Error> {
        use serde_json::from_value as de;
        Ok(match kind {
            CredentialKind::Oauth2ClientCredentials => {
                CredentialSettings::Oauth2ClientCredentials(de(json)?)
            }
            CredentialKind::Oauth2AuthorizationCode => {
                CredentialSettings::Oauth2AuthorizationCode(de(json)?)
            }
            CredentialKind::BasicAuthentication => {
                CredentialSettings::BasicAuthentication(de(json)?)
            }
            CredentialKind::AccessToken => CredentialSettings::AccessToken(de(json)?),
            CredentialKind::MutualAuthentication => {
                CredentialSettings::MutualAuthentication(de(json)?)
            }
            CredentialKind::TransferToMessaging => {
                CredentialSettings::TransferToMessaging(de(json)?)
            }
            CredentialKind::ThirdPartyNlu => CredentialSettings::ThirdPartyNlu(de(json)?),
            CredentialKind::ConsumerPreAuthentication => {
                CredentialSettings::ConsumerPreAuthentication(de(json)?)
            }
        })
    }

    /// The token-endpoint side of a token-getting kind; `None` for the others.
    pub(crate) fn token_client(&self) -> Option<TokenClient<'_>> {
        match self {
            CredentialSettings::Oauth2ClientCredentials(s) => Some(TokenClient {
                client: &s.client,
                token_url: Some(&s.token_url),
                scope: s.scope.as_deref(),
            }),
            CredentialSettings::Oauth2AuthorizationCode(s) => Some(TokenClient {
                client: &s.client,
                token_url: Some(&s.token_url),
                scope: s.scope.as_deref(),
            }),
            CredentialSettings::TransferToMessaging(s) => Some(TokenClient {
                client: &s.client,
                token_url: s.token_url.as_deref(),
                scope: None,
            }),
            _ => None,
        }
    }
}

/// Writes a secret's value: only for the secret store, never for an answer.
fn exposed<S: Serializer>(secret: &Secret, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(secret.expose())
}

fn exposed_opt<S: Serializer>(secret: &Option<Secret>, s: S) -> Result<S::Ok, S::Error> {
    match secret {
        Some(v) => s.serialize_some(v.expose()),
        None => s.serialize_none(),
    }
}

/// The client secret of a token-getting kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ClientSecret {
    #[serde(serialize_with = "exposed")]
    pub(crate) client_secret: Secret,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BasicSecrets {
    #[serde(serialize_with = "exposed")]
    pub(crate) password: Secret,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AccessTokenSecrets {
    #[serde(serialize_with = "exposed")]
    pub(crate) token: Secret,
}

/// A Mutual Authentication credential's key store and trust store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MutualSecrets {
    /// The key store (.p12/.pfx/.jks), base64.
    #[serde(serialize_with = "exposed")]
    pub(crate) key_certificate: Secret,
    #[serde(default, serialize_with = "exposed")]
    pub(crate) key_certificate_password: Secret,
    /// The trusted certificates, as a PEM bundle (converted on write).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "exposed_opt"
    )]
    pub(crate) trust_certificate: Option<Secret>,
    #[serde(default, serialize_with = "exposed")]
    pub(crate) trust_certificate_password: Secret,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NluSecrets {
    /// The provider's credentials document (a JSON object, as text).
    #[serde(serialize_with = "exposed")]
    pub(crate) credentials: Secret,
}

/// A credential's secret fields, one variant per kind that has any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CredentialSecrets {
    /// OAuth 2.0 client credentials, authorization code, Transfer to Messaging.
    Client(ClientSecret),
    Basic(BasicSecrets),
    AccessToken(AccessTokenSecrets),
    Mutual(MutualSecrets),
    ThirdPartyNlu(NluSecrets),
    /// Consumer Pre-Authentication keeps no secret.
    None,
}

/// Secrets that are not what their credential's kind keeps (written by something else).
#[derive(Debug, Clone, thiserror::Error)]
#[error("the stored secrets are not those of a {0} credential")]
pub(crate) struct MalformedSecrets(pub(crate) CredentialKind);

impl CredentialSecrets {
    /// The secrets as the secret store keeps them: one JSON object, field by field.
    pub(crate) fn to_map(&self) -> Map<String, Value> {
        let value = match self {
            CredentialSecrets::Client(s) => serde_json::to_value(s),
            CredentialSecrets::Basic(s) => serde_json::to_value(s),
            CredentialSecrets::AccessToken(s) => serde_json::to_value(s),
            CredentialSecrets::Mutual(s) => serde_json::to_value(s),
            CredentialSecrets::ThirdPartyNlu(s) => serde_json::to_value(s),
            CredentialSecrets::None => Ok(Value::Object(Map::new())),
        };
        match value {
            Ok(Value::Object(m)) => m,
            // why: structs of strings always serialize to an object.
            _ => Map::new(),
        }
    }

    /// The names of the fields kept, which answers show masked.
    pub(crate) fn field_names(&self) -> Vec<String> {
        self.to_map().keys().cloned().collect()
    }

    /// Reads what the secret store keeps for a credential of `kind`.
    pub(crate) fn from_map(
        kind: CredentialKind,
        map: &Map<String, Value>,
    ) -> Result<CredentialSecrets, MalformedSecrets> {
        let json = Value::Object(map.clone());
        let bad = |_| MalformedSecrets(kind);
        Ok(match kind {
            CredentialKind::Oauth2ClientCredentials
            | CredentialKind::Oauth2AuthorizationCode
            | CredentialKind::TransferToMessaging => {
                CredentialSecrets::Client(serde_json::from_value(json).map_err(bad)?)
            }
            CredentialKind::BasicAuthentication => {
                CredentialSecrets::Basic(serde_json::from_value(json).map_err(bad)?)
            }
            CredentialKind::AccessToken => {
                CredentialSecrets::AccessToken(serde_json::from_value(json).map_err(bad)?)
            }
            CredentialKind::MutualAuthentication => {
                CredentialSecrets::Mutual(serde_json::from_value(json).map_err(bad)?)
            }
            CredentialKind::ThirdPartyNlu => {
                CredentialSecrets::ThirdPartyNlu(serde_json::from_value(json).map_err(bad)?)
            }
            CredentialKind::ConsumerPreAuthentication => CredentialSecrets::None,
        })
    }
}

/// The `Authorization` header a credential of fixed secrets sends upstream: Basic
/// (RFC 7617) and Access Token. `None` for every other pairing (token kinds get theirs from
/// the token keeper; Mutual Authentication sends no header).
pub(crate) fn fixed_authorization(
    settings: &CredentialSettings,
    secrets: &CredentialSecrets,
) -> Option<String> {
    use base64::Engine;
    match (settings, secrets) {
        (CredentialSettings::BasicAuthentication(s), CredentialSecrets::Basic(p)) => Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!(
                "{}:{}",
                s.username,
                p.password.expose()
            ))
        )),
        (CredentialSettings::AccessToken(s), CredentialSecrets::AccessToken(t)) => {
            Some(format!("{} {}", s.token_type, t.token.expose()))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_kind_round_trips_its_name_and_says_what_it_needs() {
        for k in CredentialKind::ALL {
            assert_eq!(CredentialKind::parse(k.as_str()), Some(k));
            assert_eq!(serde_json::to_value(k).unwrap(), json!(k.as_str()));
        }
        let tokens: Vec<_> = CredentialKind::ALL
            .into_iter()
            .filter(|k| k.needs_tokens())
            .collect();
        assert_eq!(
            tokens,
            [
                CredentialKind::Oauth2ClientCredentials,
                CredentialKind::Oauth2AuthorizationCode,
                CredentialKind::TransferToMessaging
            ]
        );
        assert!(!CredentialKind::ThirdPartyNlu.attachable());
        assert!(!CredentialKind::ConsumerPreAuthentication.attachable());
        assert!(CredentialKind::MutualAuthentication.attachable());
        assert_eq!(CredentialKind::parse("nope"), None);
    }

    #[test]
    fn settings_read_what_earlier_versions_stored() {
        // A row written before clientAuthentication existed still reads (default Basic).
        let s = CredentialSettings::from_json(
            CredentialKind::Oauth2ClientCredentials,
            json!({"clientId": "c", "scope": null, "tokenUrl": "https://idp/token"}),
        )
        .unwrap();
        let t = s.token_client().unwrap();
        assert_eq!(t.client.client_id, "c");
        assert_eq!(t.client.client_authentication, ClientAuth::Basic);
        assert_eq!(t.token_url, Some("https://idp/token"));
        let back = s.to_json();
        assert_eq!(back["clientAuthentication"], json!("clientSecretBasic"));
        // The settings of one kind are not those of another.
        assert!(CredentialSettings::from_json(
            CredentialKind::BasicAuthentication,
            json!({"tokenType": "Bearer"})
        )
        .is_err());
    }

    #[test]
    fn secrets_are_written_and_read_by_field_and_refused_when_foreign() {
        let s = CredentialSecrets::Mutual(MutualSecrets {
            key_certificate: Secret::new("AAAA"),
            key_certificate_password: Secret::new("pw"),
            trust_certificate: None,
            trust_certificate_password: Secret::default(),
        });
        let map = s.to_map();
        assert_eq!(map["keyCertificate"], json!("AAAA"));
        assert!(!map.contains_key("trustCertificate"));
        assert_eq!(
            CredentialSecrets::from_map(CredentialKind::MutualAuthentication, &map).unwrap(),
            s
        );
        assert!(CredentialSecrets::from_map(CredentialKind::BasicAuthentication, &map).is_err());
        // Debug never shows a value.
        assert!(!format!("{s:?}").contains("pw"));
    }

    #[test]
    fn fixed_headers_are_exactly_as_specified() {
        let basic = CredentialSettings::BasicAuthentication(BasicSettings {
            username: "Aladdin".into(),
        });
        let password = CredentialSecrets::Basic(BasicSecrets {
            password: Secret::new("open sesame"),
        });
        // RFC 7617's example.
        assert_eq!(
            fixed_authorization(&basic, &password).as_deref(),
            Some("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==")
        );
        let token = CredentialSecrets::AccessToken(AccessTokenSecrets {
            token: Secret::new("abc.def"),
        });
        assert_eq!(fixed_authorization(&basic, &token), None);
    }
}
