//! Certificate CRUD. Material goes to Vault, metadata to the store, both or neither.

use axum::extract::multipart::{Multipart, MultipartError, MultipartRejection};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json as JsonOut;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::extract::{too_large, Path};
use super::{check_account, views, AppState, Principal};
use crate::p12::{self, Opened, P12Error};
use crate::secret::Secret;
use crate::store::{now, CertificateRow, NewCertificate, Store};

/// Longest certificate name.
const NAME_MAX: usize = 128;

/// The `certificate` field of a by-file upload.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CertificateField {
    name: String,
    #[serde(default)]
    password: Secret,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    id: Option<serde_json::Value>,
}

struct Upload {
    file: Vec<u8>,
    meta: CertificateField,
}

fn multipart_error(e: MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        too_large()
    } else {
        ApiError::bad_request(
            "malformed_multipart",
            "the multipart body could not be read",
        )
    }
}

async fn read_upload(multipart: Result<Multipart, MultipartRejection>) -> Result<Upload, ApiError> {
    let mut multipart = multipart.map_err(|_| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected multipart/form-data with fields 'file' and 'certificate'",
        )
    })?;
    let mut file = None;
    let mut meta = None;
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        match field.name() {
            Some("file") => {
                if file.is_some() {
                    return Err(ApiError::bad_request(
                        "invalid_upload",
                        "the 'file' field appears twice",
                    ));
                }
                file = Some(field.bytes().await.map_err(multipart_error)?.to_vec());
            }
            Some("certificate") => {
                if meta.is_some() {
                    return Err(ApiError::bad_request(
                        "invalid_upload",
                        "the 'certificate' field appears twice",
                    ));
                }
                let text = field.bytes().await.map_err(multipart_error)?;
                let parsed: CertificateField = serde_json::from_slice(&text).map_err(|_| {
                    ApiError::bad_request(
                        "invalid_certificate_field",
                        "the 'certificate' field must be JSON: {\"name\": ..., \"password\": ...}",
                    )
                })?;
                meta = Some(parsed);
            }
            _ => {} // other fields are ignored
        }
    }
    let file = file
        .ok_or_else(|| ApiError::bad_request("invalid_upload", "the 'file' field is required"))?;
    let meta = meta.ok_or_else(|| {
        ApiError::bad_request("invalid_upload", "the 'certificate' field is required")
    })?;
    check_name(&meta.name)?;
    if let Some(d) = &meta.display_name {
        check_name(d)?;
    }
    Ok(Upload { file, meta })
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if name.trim().is_empty()
        || name.chars().count() > NAME_MAX
        || name.chars().any(char::is_control)
    {
        return Err(ApiError::bad_request(
            "invalid_name",
            format!("a name must be 1-{NAME_MAX} characters with no control characters"),
        ));
    }
    Ok(())
}

fn p12_error(e: P12Error) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.code(), e.to_string())
}

fn open(upload: &Upload) -> Result<Opened, ApiError> {
    p12::open(&upload.file, upload.meta.password.expose()).map_err(p12_error)
}

fn id_of(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

async fn view(state: &AppState, row: &CertificateRow) -> Value {
    views::certificate(row, state.sync.has_material(row.id).await, now())
}

/// `POST /mtls/account/{account}/certificates/by-file`
pub async fn create_by_file(
    State(state): State<AppState>,
    Path(account): Path<String>,
    principal: Principal,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<(StatusCode, JsonOut<Value>), ApiError> {
    check_account(&account)?;
    principal.require_admin(&account)?;
    let upload = read_upload(multipart).await?;
    if upload.meta.id.is_some() {
        return Err(ApiError::bad_request(
            "invalid_upload",
            "a new certificate has no 'id'; use PUT to update",
        ));
    }
    let opened = open(&upload)?;
    let name = upload.meta.name.as_str();
    let new = NewCertificate {
        account: &account,
        name,
        display_name: upload.meta.display_name.as_deref().unwrap_or(name),
        info: &opened.info,
    };
    let row = {
        let _w = state.store.write_lock().await;
        let mut tx = state.store.begin().await?;
        if let Some(existing) = Store::certificate_named(&mut tx, &account, name).await? {
            return Err(ApiError::conflict(
                "duplicate_certificate_name",
                format!("a certificate named {name:?} already exists in this account"),
            )
            .with("existingCertificateId", json!(existing)));
        }
        let id = Store::insert_certificate(&mut tx, &new).await?;
        // Vault first, commit second: if Vault fails, the transaction rolls back and no row
        // remains; if the commit fails, the Vault entry is removed again.
        let version = state.vault.put(&account, id, &opened.material).await?;
        Store::set_vault_version(&mut tx, id, version).await?;
        if let Err(e) = tx.commit().await {
            let _ = state.vault.delete(&account, id).await;
            return Err(crate::store::StoreError::from(e).into());
        }
        state.sync.remember(id, version, opened.material).await;
        state
            .store
            .certificate(&account, id)
            .await?
            .ok_or_else(|| ApiError::not_found("certificate vanished"))?
    };
    tracing::info!(account, certificate = row.id, serial = %row.info.serial_number, "certificate created");
    Ok((
        StatusCode::CREATED,
        JsonOut(json!({
            "successfulySavedCertificates": [view(&state, &row).await],
            "failedSaveToVaultCertificates": [],
        })),
    ))
}

/// `PUT /mtls/account/{account}/certificates/by-file`: replaces the certificate's material
/// (rotation) and optionally its name. Mappings keep pointing at it and pick up the new
/// certificate without any other change.
pub async fn update_by_file(
    State(state): State<AppState>,
    Path(account): Path<String>,
    principal: Principal,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<JsonOut<Value>, ApiError> {
    check_account(&account)?;
    principal.require_admin(&account)?;
    let upload = read_upload(multipart).await?;
    let id = upload.meta.id.as_ref().and_then(id_of).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_upload",
            "the 'certificate' field needs the numeric 'id'",
        )
    })?;
    let opened = open(&upload)?;
    let name = upload.meta.name.as_str();
    let new = NewCertificate {
        account: &account,
        name,
        display_name: upload.meta.display_name.as_deref().unwrap_or(name),
        info: &opened.info,
    };
    let row = {
        let _w = state.store.write_lock().await;
        let mut tx = state.store.begin().await?;
        if state.store.certificate(&account, id).await?.is_none() {
            return Err(ApiError::not_found(format!(
                "no certificate {id} in this account"
            )));
        }
        if let Some(other) = Store::certificate_named(&mut tx, &account, name)
            .await?
            .filter(|o| *o != id)
        {
            return Err(ApiError::conflict(
                "duplicate_certificate_name",
                format!("another certificate is named {name:?}"),
            )
            .with("existingCertificateId", json!(other)));
        }
        Store::update_certificate(&mut tx, id, &new).await?;
        let version = state.vault.put(&account, id, &opened.material).await?;
        Store::set_vault_version(&mut tx, id, version).await?;
        tx.commit().await.map_err(crate::store::StoreError::from)?;
        state.sync.remember(id, version, opened.material).await;
        state
            .store
            .certificate(&account, id)
            .await?
            .ok_or_else(|| ApiError::not_found("certificate vanished"))?
    };
    tracing::info!(account, certificate = id, serial = %row.info.serial_number, "certificate updated");
    Ok(JsonOut(json!({
        "successfulySavedCertificates": [view(&state, &row).await],
        "failedSaveToVaultCertificates": [],
    })))
}

/// `GET /mtls/account/{account}/certificates`
pub async fn list(
    State(state): State<AppState>,
    Path(account): Path<String>,
    principal: Principal,
) -> Result<JsonOut<Value>, ApiError> {
    check_account(&account)?;
    principal.require_admin(&account)?;
    let mut out = Vec::new();
    for row in state.store.certificates(&account).await? {
        out.push(view(&state, &row).await);
    }
    Ok(JsonOut(Value::Array(out)))
}

/// `GET /mtls/account/{account}/certificates/{id}`
pub async fn get_one(
    State(state): State<AppState>,
    Path((account, id)): Path<(String, i64)>,
    principal: Principal,
) -> Result<JsonOut<Value>, ApiError> {
    check_account(&account)?;
    principal.require_admin(&account)?;
    let row = state
        .store
        .certificate(&account, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no certificate {id} in this account")))?;
    Ok(JsonOut(view(&state, &row).await))
}

/// `DELETE /mtls/account/{account}/certificates/{id}`: refused while an enabled mapping
/// uses the certificate.
pub async fn delete(
    State(state): State<AppState>,
    Path((account, id)): Path<(String, i64)>,
    principal: Principal,
) -> Result<JsonOut<Value>, ApiError> {
    check_account(&account)?;
    principal.require_admin(&account)?;
    let _w = state.store.write_lock().await;
    let mut tx = state.store.begin().await?;
    let users = Store::mappings_using(&mut tx, id).await?;
    if !users.is_empty() {
        return Err(ApiError::conflict(
            "certificate_in_use",
            format!(
                "{} enabled mapping(s) use this certificate; remove or disable them first",
                users.len()
            ),
        )
        .with(
            "mappings",
            Value::Array(users.iter().map(views::mapping).collect()),
        ));
    }
    if !Store::mark_certificate_deleted(&mut tx, &account, id).await? {
        return Err(ApiError::not_found(format!(
            "no certificate {id} in this account"
        )));
    }
    state.vault.delete(&account, id).await?;
    tx.commit().await.map_err(crate::store::StoreError::from)?;
    state.sync.forget(id).await;
    tracing::info!(account, certificate = id, "certificate deleted");
    Ok(JsonOut(json!({"id": id, "deleted": true})))
}
