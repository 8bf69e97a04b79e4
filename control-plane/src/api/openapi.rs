//! The OpenAPI 3 document of the HTTP API, served at `/openapi.json`.
//!
//! Built from [`OPERATIONS`], one entry per route the router serves; a test walks the table
//! against a running control plane and checks every operation answers one of the statuses
//! documented here, and that every route of the router is in the table.

use serde_json::{json, Map, Value};

/// How an operation authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    None,
    /// Bearer token (login, or the development admin token).
    Bearer,
    /// Bearer token or OAuth1 AppKey signature.
    BearerOrAppKey,
}

/// What an operation's request body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    None,
    Json(&'static str),
    Multipart(&'static str),
}

/// One documented operation.
#[derive(Debug, Clone, Copy)]
pub struct Operation {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    pub auth: Auth,
    pub body: Body,
    /// Every status the operation may answer.
    pub statuses: &'static [u16],
}

const ACCOUNT: &str = "/api/account/{accountId}";
const MTLS: &str = "/mtls/account/{accountId}";

macro_rules! op {
    ($m:literal, $p:expr, $s:literal, $a:expr, $b:expr, [$($st:literal),*]) => {
        Operation { method: $m, path: $p, summary: $s, auth: $a, body: $b, statuses: &[$($st),*] }
    };
}

/// Every operation of the API. Paths use `{A}` for `/api/account/{accountId}` and `{M}` for
/// `/mtls/account/{accountId}`.
pub const OPERATIONS: &[Operation] = &[
    op!(
        "GET",
        "/healthz",
        "Health check",
        Auth::None,
        Body::None,
        [200]
    ),
    op!(
        "GET",
        "/openapi.json",
        "This document",
        Auth::None,
        Body::None,
        [200]
    ),
    op!(
        "POST",
        "{A}/login",
        "Log in (agentVep): a Bearer token",
        Auth::None,
        Body::Json("Login"),
        [200, 400, 401, 413, 415, 429, 503]
    ),
    op!(
        "GET",
        "{A}/service/baseURI.json",
        "CSDS: every service's base URI",
        Auth::None,
        Body::None,
        [200, 400]
    ),
    op!(
        "GET",
        "{A}/service/{serviceName}/baseURI.json",
        "CSDS: one service's base URI",
        Auth::None,
        Body::None,
        [200, 400, 404]
    ),
    op!(
        "GET",
        "{A}/users",
        "List users (admins)",
        Auth::Bearer,
        Body::None,
        [200, 400, 401, 403]
    ),
    op!(
        "POST",
        "{A}/users",
        "Create a user (admins)",
        Auth::Bearer,
        Body::Json("NewUser"),
        [201, 400, 401, 403, 409, 413, 415]
    ),
    op!(
        "DELETE",
        "{A}/users/{id}",
        "Delete a user (admins)",
        Auth::Bearer,
        Body::None,
        [200, 400, 401, 403, 404, 409, 429]
    ),
    op!(
        "GET",
        "{A}/credentials",
        "List credentials, secrets masked",
        Auth::BearerOrAppKey,
        Body::None,
        [200, 400, 401, 403]
    ),
    op!(
        "POST",
        "{A}/credentials",
        "Create a credential (secrets to Vault)",
        Auth::BearerOrAppKey,
        Body::Json("Credential"),
        [201, 400, 401, 403, 409, 413, 415, 422, 503]
    ),
    op!(
        "GET",
        "{A}/credentials/{id}",
        "Get a credential, secrets masked",
        Auth::BearerOrAppKey,
        Body::None,
        [200, 400, 401, 403, 404]
    ),
    op!(
        "PUT",
        "{A}/credentials/{id}",
        "Replace a credential",
        Auth::BearerOrAppKey,
        Body::Json("Credential"),
        [200, 400, 401, 403, 404, 409, 413, 415, 422, 503]
    ),
    op!(
        "DELETE",
        "{A}/credentials/{id}",
        "Delete a credential no mapping uses",
        Auth::BearerOrAppKey,
        Body::None,
        [200, 400, 401, 403, 404, 409, 503]
    ),
    op!(
        "POST",
        "{A}/credentials/{id}/authorize",
        "Start (or restart) the authorization of an OAuth 2.0 authorization-code credential: answers the URL to send the user to",
        Auth::BearerOrAppKey,
        Body::None,
        [200, 400, 401, 403, 404, 409]
    ),
    op!(
        "GET",
        "/api/oauth2/callback",
        "OAuth 2.0 redirect URI: the authorization server sends the user back with code (or error) and state",
        Auth::None,
        Body::None,
        [200, 400, 404, 502, 503]
    ),
    op!(
        "GET",
        "{A}/settings",
        "The account's settings",
        Auth::BearerOrAppKey,
        Body::None,
        [200, 400, 401, 403]
    ),
    op!(
        "PUT",
        "{A}/settings",
        "Change the account's settings (allowAuthorizationOverride)",
        Auth::BearerOrAppKey,
        Body::Json("Settings"),
        [200, 400, 401, 403, 413, 415]
    ),
    op!(
        "GET",
        "{A}/appkeys",
        "List AppKeys, without secrets (admins)",
        Auth::Bearer,
        Body::None,
        [200, 400, 401, 403]
    ),
    op!(
        "POST",
        "{A}/appkeys",
        "Create an AppKey; secrets are shown once (admins)",
        Auth::Bearer,
        Body::Json("NewAppKey"),
        [201, 400, 401, 403, 413, 422, 503]
    ),
    op!(
        "DELETE",
        "{A}/appkeys/{id}",
        "Revoke an AppKey (admins)",
        Auth::Bearer,
        Body::None,
        [200, 400, 401, 403, 404]
    ),
    op!(
        "GET",
        "{A}/configuration/ac-common/mtls",
        "List mappings (ac-revision header)",
        Auth::BearerOrAppKey,
        Body::None,
        [200, 400, 401, 403]
    ),
    op!(
        "POST",
        "{A}/configuration/ac-common/mtls",
        "Create mappings, all or none",
        Auth::BearerOrAppKey,
        Body::Json("Mapping[]"),
        [201, 400, 401, 403, 409, 413, 415, 422]
    ),
    op!(
        "GET",
        "{A}/configuration/ac-common/mtls/{id}",
        "Get a mapping",
        Auth::BearerOrAppKey,
        Body::None,
        [200, 400, 401, 403, 404]
    ),
    op!(
        "PUT",
        "{A}/configuration/ac-common/mtls/{id}",
        "Replace a mapping (If-Match)",
        Auth::BearerOrAppKey,
        Body::Json("Mapping"),
        [200, 400, 401, 403, 404, 409, 412, 413, 415]
    ),
    op!(
        "DELETE",
        "{A}/configuration/ac-common/mtls/{id}",
        "Delete a mapping (If-Match)",
        Auth::BearerOrAppKey,
        Body::None,
        [200, 400, 401, 403, 404, 412]
    ),
    op!(
        "GET",
        "{M}/certificates",
        "List certificates",
        Auth::BearerOrAppKey,
        Body::None,
        [200, 400, 401, 403]
    ),
    op!(
        "POST",
        "{M}/certificates",
        "Create certificates (p12 as bytes)",
        Auth::BearerOrAppKey,
        Body::Json("CertificateUpload[]"),
        [201, 400, 401, 403, 409, 413, 415, 422, 503]
    ),
    op!(
        "PUT",
        "{M}/certificates",
        "Update certificates (p12 as bytes)",
        Auth::BearerOrAppKey,
        Body::Json("CertificateUpload[]"),
        [200, 400, 401, 403, 404, 409, 413, 415, 422, 503]
    ),
    op!(
        "POST",
        "{M}/certificates/by-file",
        "Create a certificate from a P12 file",
        Auth::Bearer,
        Body::Multipart("file, certificate"),
        [201, 400, 401, 403, 409, 413, 415, 422, 503]
    ),
    op!(
        "PUT",
        "{M}/certificates/by-file",
        "Replace a certificate from a P12 file",
        Auth::Bearer,
        Body::Multipart("file, certificate"),
        [200, 400, 401, 403, 404, 409, 413, 415, 422, 503]
    ),
    op!(
        "GET",
        "{M}/certificates/{id}",
        "Get a certificate",
        Auth::BearerOrAppKey,
        Body::None,
        [200, 400, 401, 403, 404]
    ),
    op!(
        "DELETE",
        "{M}/certificates/{id}",
        "Delete a certificate not in use",
        Auth::BearerOrAppKey,
        Body::None,
        [200, 400, 401, 403, 404, 409, 503]
    ),
    op!(
        "POST",
        "{M}/p12-test/multipart",
        "Test a P12 file; nothing is stored",
        Auth::Bearer,
        Body::Multipart("file, password"),
        [200, 400, 401, 403, 413, 415, 422, 503]
    ),
    op!(
        "GET",
        "{A}/egress",
        "The account's plain-TLS fallback hosts",
        Auth::BearerOrAppKey,
        Body::None,
        [200, 400, 401, 403]
    ),
    op!(
        "PUT",
        "{A}/egress",
        "Replace the account's plain-TLS fallback hosts, all or none",
        Auth::BearerOrAppKey,
        Body::Json("Egress"),
        [200, 400, 401, 403, 413, 415]
    ),
];

/// A path with the prefixes resolved.
pub fn full_path(p: &str) -> String {
    p.replace("{A}", ACCOUNT).replace("{M}", MTLS)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        304 => "Not modified (long poll timed out)",
        400 => "Bad request",
        401 => "Not authenticated",
        403 => "Forbidden",
        404 => "Not found",
        409 => "Conflict",
        412 => "Revision mismatch",
        413 => "Body too large",
        415 => "Unsupported media type",
        422 => {
            "Unusable P12 file or key store, or one over the key-store budget (keystore_too_costly)"
        }
        429 => "Too many attempts or pending requests; see Retry-After",
        502 => "The token endpoint refused the exchange or failed",
        503 => {
            "Secret store unavailable, (login) too many logins at once, or (key-store uploads, \
             the P12 tester) too many key stores being opened at once (busy, Retry-After)"
        }
        _ => "",
    }
}

/// The OpenAPI 3.0 document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for op in OPERATIONS {
        let path = full_path(op.path);
        let mut responses = Map::new();
        for s in op.statuses {
            let content = if *s >= 400 {
                json!({"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}})
            } else {
                json!({"application/json": {}})
            };
            responses.insert(
                s.to_string(),
                json!({"description": reason(*s), "content": content}),
            );
        }
        let mut operation = json!({
            "summary": op.summary,
            "operationId": format!("{} {}", op.method, path),
            "responses": responses,
            "parameters": path
                .split('/')
                .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
                .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
                .collect::<Vec<_>>(),
            "security": match op.auth {
                Auth::None => json!([]),
                Auth::Bearer => json!([{"bearer": []}]),
                Auth::BearerOrAppKey => json!([{"bearer": []}, {"appKey": []}]),
            },
        });
        match op.body {
            Body::None => {}
            Body::Json(schema) => {
                operation["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {"description": schema}}}})
            }
            Body::Multipart(fields) => {
                operation["requestBody"] = json!({"required": true, "content": {"multipart/form-data": {"schema": {"description": fields}}}})
            }
        }
        let entry = paths.entry(path).or_insert_with(|| json!({}));
        entry[op.method.to_ascii_lowercase()] = operation;
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "mtlsgate", "version": env!("CARGO_PKG_VERSION"),
                 "description": "The API of the LivePerson mTLS service, as mtlsgate serves it."},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "appKey": {"type": "apiKey", "in": "header", "name": "Authorization",
                           "description": "OAuth 1.0a (RFC 5849) HMAC-SHA1 signature"},
            },
            "schemas": {
                "Error": {"type": "object", "required": ["code", "message", "requestId"], "properties": {
                    "code": {"type": "string"}, "message": {"type": "string"}, "requestId": {"type": "string"}}},
            },
        },
    })
}

pub async fn serve() -> axum::Json<Value> {
    axum::Json(document())
}
