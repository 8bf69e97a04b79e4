//! `POST /mtls/account/{account}/p12-test/multipart`: the P12 key tester. Nothing is stored.

use std::path::PathBuf;

use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json as JsonOut;
use serde_json::{json, Value};

use super::error::{ApiError, REQUEST_ID};
use super::extract::{too_large, Path};
use super::{check_account, AppState, Principal};
use crate::p12test::{self, JavaCheckError};
use crate::secret::Secret;

/// Answers the report: 200 when the file is usable, 422 (with `code`, `message` and
/// `requestId` beside the report) when it is not.
pub async fn test(
    State(state): State<AppState>,
    Path(account): Path<String>,
    principal: Principal,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<(StatusCode, JsonOut<Value>), ApiError> {
    check_account(&account)?;
    principal.require_bearer_manage(&account)?;
    let (file, password) = read_upload(multipart, state.max_upload_bytes).await?;
    let keytool = state.keytool.clone();
    let report = super::on_cpu_pool(&state, move || {
        let mut report = p12test::analyze(&file, password.expose(), crate::clock::now());
        if report.password_opens_file {
            if let Some(keytool) = keytool {
                match p12test::java_check(&file, password.expose(), &keytool) {
                    Ok(readable) => report.record_java_check(readable),
                    Err(JavaCheckError::Spawn(_)) => {
                        tracing::warn!(keytool = %keytool.display(), "keytool not found; Java compatibility not checked")
                    }
                    Err(e) => tracing::warn!(error = ?e, "Java compatibility check failed"),
                }
            }
        }
        report
    })
    .await?;
    let mut body = serde_json::to_value(&report).map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    })?;
    if report.usable {
        return Ok((StatusCode::OK, JsonOut(body)));
    }
    if let Some(o) = body.as_object_mut() {
        let errors = report
            .findings
            .iter()
            .filter(|f| f.severity == p12test::Severity::Error)
            .count();
        // why: a file over the key-store budget is refused for that reason on every path;
        // the tester says so with the same code.
        let code = if report
            .findings
            .iter()
            .any(|f| f.code == p12test::codes::KEYSTORE_TOO_COSTLY)
        {
            p12test::codes::KEYSTORE_TOO_COSTLY
        } else {
            "p12_not_usable"
        };
        o.insert("code".into(), json!(code));
        o.insert(
            "message".into(),
            json!(format!(
                "the file is not usable: {errors} problem(s) to fix, see findings"
            )),
        );
        o.insert(
            "requestId".into(),
            json!(REQUEST_ID.try_with(Clone::clone).unwrap_or_default()),
        );
    }
    Ok((StatusCode::UNPROCESSABLE_ENTITY, JsonOut(body)))
}

/// Reads the tester's multipart body: the `file` field (at most `max_bytes`) and the
/// optional `password` field (UTF-8; none means the empty password).
pub(crate) async fn read_upload(
    multipart: Result<Multipart, MultipartRejection>,
    max_bytes: usize,
) -> Result<(Vec<u8>, Secret), ApiError> {
    let mut multipart = multipart.map_err(|_| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected multipart/form-data with fields 'file' and 'password'",
        )
    })?;
    let bad = |_| {
        ApiError::bad_request(
            "malformed_multipart",
            "the multipart body could not be read",
        )
    };
    let (mut file, mut password) = (None, None);
    while let Some(field) = multipart.next_field().await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large()
        } else {
            bad(e)
        }
    })? {
        match field.name() {
            Some("file") => {
                let bytes = field.bytes().await.map_err(bad)?;
                if bytes.len() > max_bytes {
                    return Err(too_large());
                }
                file = Some(bytes.to_vec());
            }
            Some("password") => {
                let bytes = field.bytes().await.map_err(bad)?;
                let text = String::from_utf8(bytes.to_vec()).map_err(|_| {
                    ApiError::bad_request("invalid_upload", "the password must be UTF-8 text")
                })?;
                password = Some(Secret::new(text));
            }
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_upload",
                    "unknown field: the test takes the fields 'file' and 'password' only",
                ))
            }
        }
    }
    let file = file
        .ok_or_else(|| ApiError::bad_request("invalid_upload", "the 'file' field is required"))?;
    Ok((file, password.unwrap_or_default()))
}

/// Where `keytool` is: the flag, else `$JAVA_HOME/bin/keytool`, else the `PATH`.
pub fn find_keytool(flag: Option<PathBuf>) -> Option<PathBuf> {
    if flag.is_some() {
        return flag;
    }
    if let Some(home) = std::env::var_os("JAVA_HOME") {
        let p = PathBuf::from(home).join("bin/keytool");
        if p.exists() {
            return Some(p);
        }
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("keytool"))
            .find(|p| p.exists())
    })
}
