//! The OpenAPI 3 document of the HTTP API, served at `/openapi.json`.
//!
//! Built from [`OPERATIONS`], one entry per route the router serves; a test walks the table
//! against a running control plane and checks every operation answers one of the statuses
//! documented here, and that every route of the router is in the table.

use serde_json::{json, Map, Value};

use super::schemas;

/// How an operation authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    None,
    /// Bearer token (login, or the development admin token).
    Bearer,
    /// Bearer token or OAuth1 AppKey signature.
    BearerOrAppKey,
}

/// What an operation's request body is: the name of its schema in [`schemas::components`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    None,
    Json(&'static str),
    /// A JSON body that may be left out (its schema's defaults apply).
    OptionalJson(&'static str),
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
    /// The schema of the success answer's body, by name.
    pub answer: &'static str,
    /// Every status the operation may answer.
    pub statuses: &'static [u16],
}

const ACCOUNT: &str = "/api/account/{accountId}";
const MTLS: &str = "/mtls/account/{accountId}";

macro_rules! op {
    ($m:literal, $p:expr, $s:literal, $a:expr, $b:expr, $ans:literal, [$($st:literal),*]) => {
        Operation { method: $m, path: $p, summary: $s, auth: $a, body: $b, answer: $ans, statuses: &[$($st),*] }
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
        "Health",
        [200]
    ),
    op!(
        "GET",
        "/openapi.json",
        "This document",
        Auth::None,
        Body::None,
        "OpenApi",
        [200]
    ),
    op!(
        "POST",
        "{A}/login",
        "Log in (agentVep): a Bearer token",
        Auth::None,
        Body::Json("Login"),
        "LoginAnswer",
        [200, 400, 401, 413, 415, 429, 503]
    ),
    op!(
        "GET",
        "{A}/service/baseURI.json",
        "CSDS: every service's base URI",
        Auth::None,
        Body::None,
        "BaseUris",
        [200, 400]
    ),
    op!(
        "GET",
        "{A}/service/{serviceName}/baseURI.json",
        "CSDS: one service's base URI",
        Auth::None,
        Body::None,
        "BaseUri",
        [200, 400, 404]
    ),
    op!(
        "GET",
        "{A}/users",
        "List users (admins)",
        Auth::Bearer,
        Body::None,
        "Users",
        [200, 400, 401, 403]
    ),
    op!(
        "POST",
        "{A}/users",
        "Create a user (admins)",
        Auth::Bearer,
        Body::Json("NewUser"),
        "User",
        [201, 400, 401, 403, 409, 413, 415, 503]
    ),
    op!(
        "DELETE",
        "{A}/users/{id}",
        "Delete a user (admins)",
        Auth::Bearer,
        Body::None,
        "Deleted",
        [200, 400, 401, 403, 404, 409, 429]
    ),
    op!(
        "GET",
        "{A}/credentials",
        "List credentials, secrets masked",
        Auth::BearerOrAppKey,
        Body::None,
        "Credentials",
        [200, 400, 401, 403]
    ),
    op!(
        "POST",
        "{A}/credentials",
        "Create a credential (secrets to Vault)",
        Auth::BearerOrAppKey,
        Body::Json("Credential"),
        "CredentialView",
        [201, 400, 401, 403, 409, 413, 415, 422, 503]
    ),
    op!(
        "GET",
        "{A}/credentials/{id}",
        "Get a credential, secrets masked",
        Auth::BearerOrAppKey,
        Body::None,
        "CredentialView",
        [200, 400, 401, 403, 404]
    ),
    op!(
        "PUT",
        "{A}/credentials/{id}",
        "Replace a credential",
        Auth::BearerOrAppKey,
        Body::Json("Credential"),
        "CredentialView",
        [200, 400, 401, 403, 404, 409, 413, 415, 422, 503]
    ),
    op!(
        "DELETE",
        "{A}/credentials/{id}",
        "Delete a credential no mapping uses",
        Auth::BearerOrAppKey,
        Body::None,
        "Deleted",
        [200, 400, 401, 403, 404, 409, 503]
    ),
    op!(
        "POST",
        "{A}/credentials/{id}/authorize",
        "Start (or restart) the authorization of an OAuth 2.0 authorization-code credential: answers the URL to send the user to",
        Auth::BearerOrAppKey,
        Body::None,
        "Authorization",
        [200, 400, 401, 403, 404, 409]
    ),
    op!(
        "GET",
        "/api/oauth2/callback",
        "OAuth 2.0 redirect URI: the authorization server sends the user back with code (or error) and state",
        Auth::None,
        Body::None,
        "Authorized",
        [200, 400, 404, 414, 502, 503]
    ),
    op!(
        "GET",
        "{A}/settings",
        "The account's settings",
        Auth::BearerOrAppKey,
        Body::None,
        "Settings",
        [200, 400, 401, 403]
    ),
    op!(
        "PUT",
        "{A}/settings",
        "Change the account's settings (allowAuthorizationOverride)",
        Auth::BearerOrAppKey,
        Body::Json("Settings"),
        "Settings",
        [200, 400, 401, 403, 413, 415]
    ),
    op!(
        "GET",
        "{A}/appkeys",
        "List AppKeys, without secrets (admins)",
        Auth::Bearer,
        Body::None,
        "AppKeys",
        [200, 400, 401, 403]
    ),
    op!(
        "POST",
        "{A}/appkeys",
        "Create an AppKey; secrets are shown once (admins)",
        Auth::Bearer,
        Body::OptionalJson("NewAppKey"),
        "AppKey",
        [201, 400, 401, 403, 413, 422, 503]
    ),
    op!(
        "DELETE",
        "{A}/appkeys/{id}",
        "Revoke an AppKey (admins)",
        Auth::Bearer,
        Body::None,
        "Revoked",
        [200, 400, 401, 403, 404]
    ),
    op!(
        "GET",
        "{A}/configuration/ac-common/mtls",
        "List mappings (ac-revision header)",
        Auth::BearerOrAppKey,
        Body::None,
        "Mappings",
        [200, 400, 401, 403]
    ),
    op!(
        "POST",
        "{A}/configuration/ac-common/mtls",
        "Create mappings, all or none",
        Auth::BearerOrAppKey,
        Body::Json("MappingList"),
        "Mappings",
        [201, 400, 401, 403, 409, 413, 415, 422]
    ),
    op!(
        "GET",
        "{A}/configuration/ac-common/mtls/{id}",
        "Get a mapping",
        Auth::BearerOrAppKey,
        Body::None,
        "MappingView",
        [200, 400, 401, 403, 404]
    ),
    op!(
        "PUT",
        "{A}/configuration/ac-common/mtls/{id}",
        "Replace a mapping (If-Match)",
        Auth::BearerOrAppKey,
        Body::Json("Mapping"),
        "MappingView",
        [200, 400, 401, 403, 404, 409, 412, 413, 415]
    ),
    op!(
        "DELETE",
        "{A}/configuration/ac-common/mtls/{id}",
        "Delete a mapping (If-Match)",
        Auth::BearerOrAppKey,
        Body::None,
        "Deleted",
        [200, 400, 401, 403, 404, 412]
    ),
    op!(
        "GET",
        "{M}/certificates",
        "List certificates",
        Auth::BearerOrAppKey,
        Body::None,
        "Certificates",
        [200, 400, 401, 403]
    ),
    op!(
        "POST",
        "{M}/certificates",
        "Create certificates (p12 as bytes)",
        Auth::BearerOrAppKey,
        Body::Json("NewCertificates"),
        "Saved",
        [201, 400, 401, 403, 409, 413, 415, 422, 503]
    ),
    op!(
        "PUT",
        "{M}/certificates",
        "Update certificates (p12 as bytes)",
        Auth::BearerOrAppKey,
        Body::Json("CertificateUpdates"),
        "Saved",
        [200, 400, 401, 403, 404, 409, 413, 415, 422, 503]
    ),
    op!(
        "POST",
        "{M}/certificates/by-file",
        "Create a certificate from a P12 file",
        Auth::Bearer,
        Body::Multipart("NewCertificateFile"),
        "Saved",
        [201, 400, 401, 403, 409, 413, 415, 422, 503]
    ),
    op!(
        "PUT",
        "{M}/certificates/by-file",
        "Replace a certificate from a P12 file",
        Auth::Bearer,
        Body::Multipart("CertificateFileUpdate"),
        "Saved",
        [200, 400, 401, 403, 404, 409, 413, 415, 422, 503]
    ),
    op!(
        "GET",
        "{M}/certificates/{id}",
        "Get a certificate",
        Auth::BearerOrAppKey,
        Body::None,
        "CertificateView",
        [200, 400, 401, 403, 404]
    ),
    op!(
        "DELETE",
        "{M}/certificates/{id}",
        "Delete a certificate not in use",
        Auth::BearerOrAppKey,
        Body::None,
        "Deleted",
        [200, 400, 401, 403, 404, 409, 503]
    ),
    op!(
        "POST",
        "{M}/p12-test/multipart",
        "Test a P12 file; nothing is stored",
        Auth::Bearer,
        Body::Multipart("P12TestFile"),
        "P12Report",
        [200, 400, 401, 403, 413, 415, 422, 503]
    ),
    op!(
        "GET",
        "{A}/egress",
        "The account's plain-TLS fallback hosts",
        Auth::BearerOrAppKey,
        Body::None,
        "Egress",
        [200, 400, 401, 403]
    ),
    op!(
        "PUT",
        "{A}/egress",
        "Replace the account's plain-TLS fallback hosts, all or none",
        Auth::BearerOrAppKey,
        Body::Json("Egress"),
        "Egress",
        [200, 400, 401, 403, 413, 415]
    ),
    op!(
        "DELETE",
        "/api/operator/accounts/{accountId}",
        "Offboard an account (the operator's credential only): every row deleted, every version of its secrets destroyed",
        Auth::Bearer,
        Body::None,
        "Offboarded",
        [200, 400, 401, 403, 503]
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
        414 => "URI too long (over 64 KiB)",
        415 => "Unsupported media type",
        422 => {
            "Unusable P12 file or key store, or one over the key-store budget (keystore_too_costly)"
        }
        429 => "Too many attempts or pending requests; see Retry-After",
        502 => "The token endpoint refused the exchange or failed",
        503 => {
            "Secret store unavailable (secret_store_unavailable: no active OpenBao node; nothing \
             was saved), (login, user creation) too many passwords being hashed at \
             once, or (key-store uploads, the P12 tester) too many key stores being opened at \
             once (busy, Retry-After)"
        }
        _ => "",
    }
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// The schema of a path parameter: what the router's extractors and the handlers take.
fn path_parameter(name: &str) -> Value {
    let schema = match name {
        "accountId" => json!({"type": "string", "minLength": 1,
                              "maxLength": mtlsgate_filter::account::MAX_LEN,
                              "pattern": "^[A-Za-z0-9_-]+$"}),
        // Ids are positive 64-bit integers; any other integer is simply not found.
        "id" => json!({"type": "integer", "format": "int64", "minimum": 1,
                       "maximum": i64::MAX}),
        _ => json!({"type": "string", "minLength": 1, "maxLength": 256}),
    };
    json!({"name": name, "in": "path", "required": true, "schema": schema})
}

/// Query and header parameters an operation reads besides its path.
fn other_parameters(op: &Operation) -> Vec<Value> {
    let mut out = Vec::new();
    if op.path.starts_with("{A}/configuration/") && matches!(op.method, "PUT" | "DELETE") {
        out.push(json!({"name": "If-Match", "in": "header", "required": false,
                        "description": "The account's revision (the ac-revision of a GET); 412 when it is not the current one.",
                        "schema": {"type": "string", "pattern": "^(?:\\*|\"?[0-9]{1,18}\"?)$"}}));
    }
    if is_write(op) {
        // why: no pattern and no length. RFC 7240 has servers ignore the preferences they do
        // not know, so nearly every value is accepted; only a `wait` whose value is not a
        // number of seconds is refused (400 invalid_preference), which a pattern cannot say
        // simply, and the contract test holds the server to every bound written here.
        out.push(json!({"name": "Prefer", "in": "header", "required": false,
                        "description": PREFER,
                        "schema": {"type": "string"}}));
    }
    if op.path == "/api/oauth2/callback" {
        for (name, required, description) in [
            ("state", true, "What the authorization was started with; single use, 10 minutes (400 invalid_state otherwise)"),
            ("code", false, "The authorization code (one of code and error)"),
            ("error", false, "The authorization server's refusal (one of code and error)"),
            ("error_description", false, "Its explanation"),
        ] {
            out.push(json!({"name": name, "in": "query", "required": required,
                            "description": description,
                            "schema": {"type": "string", "minLength": 1, "maxLength": 4096}}));
        }
    }
    out
}

/// What `Prefer: wait` does (see `api::prefer`).
const PREFER: &str = "RFC 7240. `wait=N` (N seconds, 0 to 60; more is taken as 60): the write \
    answers only once every connected gateway enforces it, with `Preference-Applied: wait=N`; \
    if some did not within N seconds, it answers as usual (the write is committed) with \
    `X-Mtlsgate-Not-Enforced-By` naming them. A `wait` that is not a number of seconds is \
    refused with 400 invalid_preference before anything is written; other preferences are \
    ignored.";

/// Whether an operation is a write, which honours `Prefer: wait`.
fn is_write(op: &Operation) -> bool {
    matches!(op.method, "POST" | "PUT" | "PATCH" | "DELETE")
}

/// The headers a write's success answer may carry after `Prefer: wait`.
fn wait_headers() -> Value {
    json!({
        "Preference-Applied": {"description": "`wait=N`: every connected gateway enforces the write.",
                               "schema": {"type": "string", "pattern": "^wait=[0-9]+$"}},
        "X-Mtlsgate-Not-Enforced-By": {"description": "The connected gateways (node ids, comma-separated) not proven to enforce the write when the wait ran out.",
                                       "schema": {"type": "string"}},
    })
}

/// The OpenAPI 3.0 document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for op in OPERATIONS {
        let path = full_path(op.path);
        let mut responses = Map::new();
        for s in op.statuses {
            let schema = if *s >= 400 {
                schema_ref("Error")
            } else {
                schema_ref(op.answer)
            };
            // why: a URI over the limit is refused by the HTTP server itself, before the
            // router, with no body.
            let mut response = if *s == 414 {
                json!({"description": reason(*s)})
            } else {
                json!({"description": reason(*s), "content": {"application/json": {"schema": schema}}})
            };
            if is_write(op) && (200..300).contains(s) {
                response["headers"] = wait_headers();
            }
            responses.insert(s.to_string(), response);
        }
        let mut parameters: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(path_parameter)
            .collect();
        parameters.extend(other_parameters(op));
        let mut operation = json!({
            "summary": op.summary,
            "operationId": format!("{} {}", op.method, path),
            "responses": responses,
            "parameters": parameters,
            "security": match op.auth {
                Auth::None => json!([]),
                Auth::Bearer => json!([{"bearer": []}]),
                Auth::BearerOrAppKey => json!([{"bearer": []}, {"appKey": []}]),
            },
        });
        match op.body {
            Body::None => {}
            Body::Json(schema) | Body::OptionalJson(schema) => {
                operation["requestBody"] = json!({
                    "required": matches!(op.body, Body::Json(_)),
                    "content": {"application/json": {"schema": schema_ref(schema)}},
                })
            }
            Body::Multipart(schema) => {
                let mut content = json!({"schema": schema_ref(schema)});
                if schema != "P12TestFile" {
                    content["encoding"] =
                        json!({"certificate": {"contentType": "application/json"}});
                }
                operation["requestBody"] =
                    json!({"required": true, "content": {"multipart/form-data": content}})
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
            "schemas": schemas::components(),
        },
    })
}

pub async fn serve() -> axum::Json<Value> {
    axum::Json(document())
}
