//! The JSON Schemas of the API's bodies: the `components.schemas` of `/openapi.json`.
//!
//! Each request schema says exactly what the handler accepts, so that a contract tester
//! (schemathesis, run by the end-to-end tests) can hold the API to it both ways: a body the
//! schema allows is not refused for its shape, and a body it forbids is. What a schema cannot
//! say is named in the schema's `description` and answered with its own status: a key store
//! that does not open with its password (422), a referenced certificate or credential that
//! does not exist (422 / 404), a name already taken (409), an OAuth `state` that is unknown.
//!
//! The patterns are ECMA-262 regular expressions as JSON Schema has them, written in the
//! subset Python's `re` reads the same way (the tester generates from them), and mirror the
//! checks in the handlers: `mtlsgate_filter::account::is_valid`, `identity::check_username`,
//! `Target::parse` with the address policy's write-time check, `EgressHost::parse`.

use serde_json::{json, Map, Value};

/// Printable text: no control character (Rust's `char::is_control`: U+0000–U+001F and
/// U+007F–U+009F), and something other than white space.
const PRINTABLE: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$";

/// A DNS name of at least two labels whose last starts with a letter: what `Target::parse`
/// takes as a name and the address policy does not judge at write time (IP literals and
/// `localhost` are judged against the operator's ranges, which a schema cannot know).
/// At most four labels, so that no name the pattern allows is over 253 bytes; the API itself
/// takes more labels within that length.
const HOST: &str = "(?:[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\\.){1,3}[A-Za-z](?:[A-Za-z0-9-]{0,59}[A-Za-z0-9])?";

/// A port, 1–65535, no leading zero.
const PORT: &str =
    "(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})";

fn https_url() -> Value {
    json!({
        "type": "string",
        "maxLength": 8192,
        "pattern": format!("^https://{HOST}(?::{PORT})?(?:[/?][!-\"$-~]*)?$"),
        "description": "An https URL: printable ASCII, no user information or fragment. An IP \
                        literal or localhost host is judged against the operator's address \
                        policy (400 target_not_allowed when internal).",
    })
}

fn text(max: u64) -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": max, "pattern": PRINTABLE})
}

/// `Secret` strings: any text (a password may be empty where the field is optional).
fn secret(max: u64) -> Value {
    json!({"type": "string", "maxLength": max, "writeOnly": true})
}

fn id_text() -> Value {
    json!({"type": "string", "pattern": "^[1-9][0-9]{0,17}$"})
}

/// An id written as a number or a string of digits, as LivePerson's examples mix both.
fn id_either() -> Value {
    json!({"oneOf": [
        {"type": "integer", "minimum": 1, "maximum": 999_999_999_999_999_999_i64},
        id_text(),
    ]})
}

fn privileges() -> Value {
    json!({
        "type": "array",
        "items": {"type": "string", "enum": mtlsgate_filter::privilege::ALL},
        "nullable": true,
        "description": "Defaults to MTLS_FORWARD and MTLS_CHECK_MAPPING.",
    })
}

/// `schema` or JSON `null`: an `Option` field of the handler's input, which serde reads `null`
/// into as "not given".
fn nullable(mut schema: Value) -> Value {
    if let Some(o) = schema.as_object_mut() {
        o.insert("nullable".into(), Value::Bool(true));
    }
    schema
}

fn timestamp() -> Value {
    json!({"type": "string", "format": "date-time"})
}

fn deleted() -> Value {
    json!({
        "type": "object", "required": ["id", "deleted"],
        "properties": {"id": {"type": "integer"}, "deleted": {"type": "boolean", "enum": [true]}},
    })
}

fn client_authentication() -> Value {
    json!({"type": "string", "enum": ["clientSecretBasic", "clientSecretPost"]})
}

fn scope() -> Value {
    json!({"type": "string", "maxLength": 1024, "pattern": "^[ !#-\\[\\]-~]*$"})
}

/// One credential type's request body: `name` and `type` plus its own fields.
fn credential_variant(kind: &str, required: &[&str], fields: Value) -> Value {
    let mut properties = json!({
        "name": text(128),
        "type": {"type": "string", "enum": [kind]},
        "id": {"nullable": true, "description": "Any JSON value, ignored: accepted so a GET body can be sent back."},
    });
    if let (Some(p), Some(f)) = (properties.as_object_mut(), fields.as_object()) {
        p.extend(f.clone());
    }
    let mut req = vec!["name", "type"];
    req.extend_from_slice(required);
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": req,
        "properties": properties,
    })
}

fn credential_input() -> Value {
    let one_line = json!({"type": "string", "minLength": 1, "maxLength": 4096,
                          "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$"});
    let client_fields = |extra: Value| {
        let mut f = json!({
            "clientId": one_line,
            "clientSecret": {"type": "string", "minLength": 1, "maxLength": 4096, "writeOnly": true,
                             "pattern": PRINTABLE},
            "clientAuthentication": nullable(client_authentication()),
        });
        if let (Some(o), Some(e)) = (f.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        f
    };
    json!({
        "description": "A credential: `type` says which fields it has. A Mutual Authentication \
                        key store must open with its password (422 otherwise, which no schema \
                        can say).",
        "oneOf": [
            credential_variant("oauth2ClientCredentials", &["clientId", "clientSecret", "tokenUrl"],
                client_fields(json!({"scope": nullable(scope()), "tokenUrl": https_url()}))),
            credential_variant("oauth2AuthorizationCode",
                &["clientId", "clientSecret", "authUrl", "tokenUrl"],
                client_fields(json!({"scope": nullable(scope()), "authUrl": https_url(),
                                     "tokenUrl": https_url(), "pkce": {"type": "boolean"}}))),
            credential_variant("basicAuthentication", &["username", "password"], json!({
                "username": {"type": "string", "minLength": 1, "maxLength": 4096,
                             "pattern": "^[^:\\u0000-\\u001f\\u007f-\\u009f]*[^:\\s\\u0000-\\u001f\\u007f-\\u009f][^:\\u0000-\\u001f\\u007f-\\u009f]*$"},
                "password": {"type": "string", "maxLength": 4096, "writeOnly": true,
                             "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"},
            })),
            credential_variant("accessToken", &["token", "tokenType"], json!({
                "token": {"type": "string", "minLength": 1, "maxLength": 4096, "writeOnly": true,
                          "pattern": PRINTABLE},
                "tokenType": {"type": "string", "minLength": 1, "maxLength": 4096,
                              "pattern": "^[^ \\s\\u0000-\\u001f\\u007f-\\u009f]+$"},
            })),
            credential_variant("mutualAuthentication", &["keyCertificate"], json!({
                "keyCertificate": {"type": "string", "format": "byte", "writeOnly": true,
                                   "description": "The key store (PKCS#12 or JKS), base64."},
                "keyCertificatePassword": secret(4096),
                "trustCertificate": {"type": "string", "nullable": true,
                                     "description": "PEM text, or a key store as base64."},
                "trustCertificatePassword": secret(4096),
                "protocols": {"type": "array", "minItems": 1, "maxItems": 2, "nullable": true,
                              "items": {"type": "string", "enum": ["TLSv1.2", "TLSv1.3"]}},
            })),
            credential_variant("transferToMessaging", &["clientId", "clientSecret"],
                client_fields(json!({"tokenUrl": nullable(https_url())}))),
            credential_variant("thirdPartyNlu", &["provider", "credentials"], json!({
                "provider": one_line,
                "credentials": {"type": "object", "description": "The provider's credentials, kept as a secret."},
            })),
            credential_variant("consumerPreAuthentication", &[], json!({
                "settings": {"type": "object", "nullable": true, "description": "Free settings, shown as given."},
            })),
        ],
        "discriminator": {"propertyName": "type"},
    })
}

fn mapping_input() -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["certificationId", "serviceId", "url", "name"],
        "description": "A mapping (LivePerson's mTLS API \"Overview\"). certificationId and \
                        credentialId must name objects of the account (422 otherwise).",
        "properties": {
            "certificationId": id_either(),
            "serviceId": {"oneOf": [
                {"type": "integer", "enum": [0, 1, 2]},
                {"type": "string", "enum": ["0", "1", "2"]},
            ], "description": "0 TEST_SERVICE, 1 IDP, 2 WEBHOOKS"},
            "enable": {"type": "boolean"},
            "url": https_url(),
            "siteId": {"oneOf": [{"type": "string"}, {"type": "integer"}], "nullable": true,
                       "description": "Must be the account in the path when given (400 site_id_mismatch)."},
            "name": text(128),
            "deleted": {"type": "boolean", "enum": [false]},
            "caCertificates": {"type": "string", "maxLength": 65536, "nullable": true,
                               "description": "PEM X.509 certificates only; empty for none."},
            "credentialId": {"oneOf": [
                {"type": "integer", "minimum": 1, "maximum": 999_999_999_999_999_999_i64},
                id_text(),
            ], "nullable": true},
            "id": {"nullable": true, "description": "Any JSON value, ignored: ids are assigned, and the id in the path is the one updated."},
            "status": {"nullable": true, "description": "Any JSON value, ignored: what the gateway does with the mapping is not written."},
        },
    })
}

fn mapping_view() -> Value {
    json!({
        "type": "object",
        "required": ["id", "certificationId", "serviceId", "enable", "url", "siteId", "name", "deleted"],
        "properties": {
            "id": {"type": "integer"},
            "certificationId": {"type": "string"},
            "serviceId": {"type": "string", "enum": ["0", "1", "2"]},
            "enable": {"type": "boolean"},
            "url": {"type": "string"},
            "siteId": {"type": "string"},
            "name": {"type": "string"},
            "deleted": {"type": "boolean"},
            "caCertificates": {"type": "string"},
            "credentialId": {"type": "string"},
            "status": {
                "type": "object", "required": ["state"],
                "properties": {
                    "state": {"type": "string", "enum": ["active", "unavailable", "pending", "disabled", "deleted"]},
                    "code": {"type": "string"}, "message": {"type": "string"},
                },
            },
        },
    })
}

fn certificate_view() -> Value {
    json!({
        "type": "object",
        "required": ["id", "deleted", "name", "displayName", "siteId", "status", "expirationDate",
                     "subject", "issuer", "serialNumber", "notBefore", "notAfter",
                     "sha256Fingerprint", "keyAlgorithm", "keySize"],
        "properties": {
            "id": {"type": "integer"},
            "deleted": {"type": "boolean"},
            "name": {"type": "string"},
            "displayName": {"type": "string"},
            "siteId": {"type": "string"},
            "status": {"type": "string", "enum": ["Available", "UnAvailable", "Expired"]},
            "expirationDate": {"type": "integer", "description": "notAfter in milliseconds"},
            "subject": {"type": "string"},
            "issuer": {"type": "string"},
            "serialNumber": {"type": "string"},
            "notBefore": timestamp(),
            "notAfter": timestamp(),
            "sha256Fingerprint": {"type": "string", "pattern": "^[0-9a-fA-F:]+$"},
            "keyAlgorithm": {"type": "string"},
            "keySize": {"type": "integer"},
        },
    })
}

/// A certificate of a JSON create (`update`: false) or update body.
fn certificate_upload(update: bool) -> Value {
    let mut v = json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["name", "p12"],
        "description": "A PKCS#12 or JKS file that must open with `password` and hold a key \
                        Envoy can present (422 otherwise).",
        "properties": {
            "name": text(128),
            "p12": {"oneOf": [
                {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": -128, "maximum": 255}},
                {"type": "string", "format": "byte"},
            ], "description": "The file: bytes (Java's signed bytes too), or base64."},
            "password": {"type": "string", "writeOnly": true},
            "displayName": nullable(text(128)),
        },
    });
    with_id(&mut v, update);
    v
}

/// The `certificate` field of a by-file create or update.
fn certificate_field(update: bool) -> Value {
    let mut v = json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["name"],
        "properties": {
            "name": text(128),
            "password": {"type": "string", "writeOnly": true},
            "displayName": nullable(text(128)),
        },
    });
    with_id(&mut v, update);
    v
}

/// Updates name the certificate by `id`; creates have none (ids are assigned).
fn with_id(v: &mut Value, update: bool) {
    if !update {
        return;
    }
    v["properties"]["id"] = id_either();
    if let Some(r) = v["required"].as_array_mut() {
        r.push(json!("id"));
    }
}

fn certificate_file(update: bool) -> Value {
    json!({
        "type": "object", "additionalProperties": false, "required": ["file", "certificate"],
        "properties": {"file": {"type": "string", "format": "binary",
                                "description": "The PKCS#12 or JKS file (422 when it does not open)."},
                       "certificate": certificate_field(update)},
    })
}

/// Every schema the document refers to, by name.
pub(crate) fn components() -> Value {
    let mut m = Map::new();
    m.insert(
        "Error".into(),
        json!({
            "type": "object", "required": ["code", "message", "requestId"],
            "properties": {"code": {"type": "string", "pattern": "^[a-z0-9_]+$"},
                           "message": {"type": "string"}, "requestId": {"type": "string"}},
        }),
    );
    m.insert(
        "Health".into(),
        json!({"type": "object", "required": ["status"],
                   "properties": {"status": {"type": "string", "enum": ["ok"]}}}),
    );
    m.insert(
        "OpenApi".into(),
        json!({"type": "object", "required": ["openapi", "paths"],
                    "properties": {"openapi": {"type": "string"}, "paths": {"type": "object"}}}),
    );
    m.insert(
        "Login".into(),
        json!({
            "type": "object", "additionalProperties": false, "required": ["username", "password"],
            "properties": {"username": {"type": "string", "maxLength": 4096},
                           "password": secret(4096)},
        }),
    );
    m.insert("LoginAnswer".into(), json!({
            "type": "object", "required": ["bearer", "sessionTTl", "config", "csdsCollectionResponse"],
            "properties": {
                "bearer": {"type": "string"},
                "sessionTTl": {"type": "string", "pattern": "^[0-9]+$"},
                "config": {"type": "object", "required": ["loginName", "userId", "isAdmin", "userPrivileges", "accountId"],
                           "properties": {"loginName": {"type": "string"}, "userId": {"type": "string"},
                                          "isAdmin": {"type": "boolean"},
                                          "userPrivileges": {"type": "array", "items": {"type": "string"}},
                                          "serverCurrentTime": {"type": "integer"},
                                          "accountId": {"type": "string"}}},
                "csdsCollectionResponse": {"$ref": "#/components/schemas/BaseUris"},
            },
        }));
    m.insert(
        "BaseUri".into(),
        json!({"type": "object", "required": ["service", "account", "baseURI"],
                    "properties": {"service": {"type": "string"}, "account": {"type": "string"},
                                   "baseURI": {"type": "string"}}}),
    );
    m.insert("BaseUris".into(), json!({"type": "object", "required": ["baseURIs"],
                     "properties": {"baseURIs": {"type": "array", "items": {"$ref": "#/components/schemas/BaseUri"}}}}));
    m.insert("NewUser".into(), json!({
            "type": "object", "additionalProperties": false, "required": ["username", "password"],
            "properties": {
                "username": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[^\\s\\u0000-\\u001f\\u007f-\\u009f]+$"},
                "password": {"type": "string", "minLength": crate::identity::PASSWORD_MIN,
                             "maxLength": crate::identity::PASSWORD_MAX, "writeOnly": true},
                "isAdmin": {"type": "boolean"},
                "privileges": privileges(),
            },
        }));
    m.insert("User".into(), json!({
            "type": "object", "required": ["id", "username", "isAdmin", "privileges", "siteId", "createdAt"],
            "properties": {"id": {"type": "integer"}, "username": {"type": "string"},
                           "isAdmin": {"type": "boolean"},
                           "privileges": {"type": "array", "items": {"type": "string"}},
                           "siteId": {"type": "string"}, "createdAt": timestamp()},
        }));
    m.insert(
        "Users".into(),
        json!({"type": "array", "items": {"$ref": "#/components/schemas/User"}}),
    );
    m.insert("Deleted".into(), json!(deleted()));
    m.insert("Credential".into(), json!(credential_input()));
    m.insert("CredentialView".into(), json!({
            "type": "object", "required": ["id", "name", "type", "siteId", "attachable", "createdAt", "updatedAt"],
            "description": "The credential's settings by type; every secret field reads \"********\".",
            "properties": {"id": {"type": "integer"}, "name": {"type": "string"},
                           "type": {"type": "string"}, "siteId": {"type": "string"},
                           "attachable": {"type": "boolean"},
                           "createdAt": timestamp(), "updatedAt": timestamp()},
        }));
    m.insert(
        "Credentials".into(),
        json!({"type": "array", "items": {"$ref": "#/components/schemas/CredentialView"}}),
    );
    m.insert(
        "Authorization".into(),
        json!({
            "type": "object", "required": ["authorizationUrl", "state", "redirectUri", "expiresIn"],
            "properties": {"authorizationUrl": {"type": "string"}, "state": {"type": "string"},
                           "redirectUri": {"type": "string"}, "expiresIn": {"type": "integer"}},
        }),
    );
    m.insert(
        "Authorized".into(),
        json!({
            "type": "object", "required": ["authorized", "siteId", "credentialId", "message"],
            "properties": {"authorized": {"type": "boolean"}, "siteId": {"type": "string"},
                           "credentialId": {"type": "integer"}, "message": {"type": "string"}},
        }),
    );
    m.insert("Settings".into(), json!({
            "type": "object", "additionalProperties": false, "required": ["allowAuthorizationOverride"],
            "properties": {"allowAuthorizationOverride": {"type": "boolean"}},
        }));
    m.insert(
        "NewAppKey".into(),
        json!({
            "type": "object", "additionalProperties": false,
            "properties": {"privileges": privileges()},
        }),
    );
    m.insert("AppKey".into(), json!({
            "type": "object", "required": ["id", "consumerKey", "accessToken", "privileges", "createdAt"],
            "properties": {"id": {"type": "integer"}, "consumerKey": {"type": "string"},
                           "accessToken": {"type": "string"},
                           "privileges": {"type": "array", "items": {"type": "string"}},
                           "createdBy": {"type": "string"}, "createdAt": timestamp(),
                           "consumerSecret": {"type": "string", "description": "Only in the creation's answer."},
                           "accessTokenSecret": {"type": "string", "description": "Only in the creation's answer."}},
        }));
    m.insert(
        "AppKeys".into(),
        json!({"type": "array", "items": {"$ref": "#/components/schemas/AppKey"}}),
    );
    m.insert("Revoked".into(), json!({"type": "object", "required": ["id", "revoked"],
                    "properties": {"id": {"type": "integer"}, "revoked": {"type": "boolean", "enum": [true]}}}));
    m.insert("Mapping".into(), json!(mapping_input()));
    m.insert("MappingList".into(), json!({"type": "array", "minItems": 1, "maxItems": 1000,
                        "items": {"$ref": "#/components/schemas/Mapping"},
                        "description": "Names, and (service, url) pairs, differ within one request (409 otherwise)."}));
    m.insert("MappingView".into(), json!(mapping_view()));
    m.insert(
        "Mappings".into(),
        json!({"type": "array", "items": {"$ref": "#/components/schemas/MappingView"}}),
    );
    m.insert("NewCertificate".into(), certificate_upload(false));
    m.insert("CertificateUpdate".into(), certificate_upload(true));
    for (list, item) in [
        ("NewCertificates", "NewCertificate"),
        ("CertificateUpdates", "CertificateUpdate"),
    ] {
        m.insert(
            list.into(),
            json!({"type": "array", "minItems": 1, "maxItems": 100,
            "description": "Names differ within one request (409 otherwise).",
            "items": {"$ref": format!("#/components/schemas/{item}")}}),
        );
    }
    m.insert("CertificateView".into(), json!(certificate_view()));
    m.insert(
        "Certificates".into(),
        json!({"type": "array", "items": {"$ref": "#/components/schemas/CertificateView"}}),
    );
    m.insert("Saved".into(), json!({
            "type": "object", "required": ["successfulySavedCertificates", "failedSaveToVaultCertificates"],
            "properties": {
                "successfulySavedCertificates": {"type": "array", "items": {"$ref": "#/components/schemas/CertificateView"}},
                "failedSaveToVaultCertificates": {"type": "array", "items": {"type": "object",
                    "required": ["name", "code", "message"],
                    "properties": {"name": {"type": "string"}, "code": {"type": "string"}, "message": {"type": "string"}}}},
            },
        }));
    m.insert("NewCertificateFile".into(), certificate_file(false));
    m.insert("CertificateFileUpdate".into(), certificate_file(true));
    m.insert(
        "P12TestFile".into(),
        json!({
            "type": "object", "required": ["file"], "additionalProperties": false,
            "properties": {"file": {"type": "string", "format": "binary"},
                           "password": {"type": "string"}},
        }),
    );
    m.insert("P12Report".into(), json!({
            "type": "object",
            "description": "What the file holds and whether mtlsgate can use it; nothing is stored.",
            "required": ["usable", "passwordOpensFile", "chain", "chainInOrder", "encryption", "findings"],
            "properties": {
                "usable": {"type": "boolean"},
                "passwordOpensFile": {"type": "boolean"},
                "key": {"type": "object", "nullable": true},
                "certificateMatchesKey": {"type": "boolean", "nullable": true},
                "chain": {"type": "array", "items": {"type": "object"}},
                "chainInOrder": {"type": "boolean"},
                "encryption": {"type": "array", "items": {"type": "string"}},
                "macAlgorithm": {"type": "string", "nullable": true},
                "javaReadable": {"type": "boolean", "nullable": true},
                "findings": {"type": "array", "items": {"type": "object", "required": ["code", "message", "severity"],
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                                   "severity": {"type": "string"}}}},
            },
        }));
    m.insert(
        "Egress".into(),
        json!({
            "type": "object", "additionalProperties": false, "required": ["plainTlsHosts"],
            "properties": {"plainTlsHosts": {"type": "array", "maxItems": crate::egress::MAX_HOSTS,
                "items": {"type": "string",
                          "pattern": format!("^{HOST}(?::{PORT})?$")},
                "description": "host[:port] (443 when none). IP literals and localhost are judged \
                                against the operator's address policy."}},
        }),
    );
    let count = json!({"type": "integer", "minimum": 0});
    m.insert(
        "Offboarded".into(),
        json!({
            "type": "object", "additionalProperties": false,
            "required": ["account", "removed", "secretsDestroyed", "secretsNotDestroyed"],
            "properties": {
                "account": {"type": "string"},
                "removed": {"type": "object", "additionalProperties": false,
                    "required": ["certificates", "mappings", "credentials", "users", "appKeys", "egressHosts"],
                    "properties": {"certificates": count, "mappings": count, "credentials": count,
                                   "users": count, "appKeys": count, "egressHosts": count}},
                "secretsDestroyed": {"type": "array", "items": {"type": "string"},
                    "description": "secret-store entries destroyed (every version), relative to the mount and prefix"},
                "secretsNotDestroyed": {"type": "array", "items": {"type": "string"},
                    "description": "entries the secret store refused to destroy now: call again"},
            },
        }),
    );
    Value::Object(m)
}
