//! Certificate CRUD. Material goes to Vault, metadata to the store, both or neither.

use axum::extract::multipart::{Multipart, MultipartError, MultipartRejection};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json as JsonOut;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::extract::{too_large, Json, Path};
use super::{check_account, views, AppState, Principal};
use crate::p12::{self, Material, Opened, P12Error};
use crate::secret::Secret;
use crate::store::{now, CertificateRow, Counted, NewCertificate, Store};

/// Longest certificate name.
const NAME_MAX: usize = 128;

/// The `certificate` field of a by-file upload.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct CertificateField {
    name: String,
    #[serde(default)]
    pub(crate) password: Secret,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    id: Option<serde_json::Value>,
}

pub(crate) struct Upload {
    pub(crate) file: Vec<u8>,
    pub(crate) meta: CertificateField,
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

pub(crate) async fn read_upload(
    multipart: Result<Multipart, MultipartRejection>,
    max_bytes: usize,
) -> Result<Upload, ApiError> {
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
                let bytes = field.bytes().await.map_err(multipart_error)?;
                if bytes.len() > max_bytes {
                    return Err(too_large());
                }
                file = Some(bytes.to_vec());
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

/// Opens an uploaded P12 on the bounded CPU pool (its key derivations, within the
/// key-store budget, take up to about a second), never on an async worker thread.
async fn open(state: &AppState, file: Vec<u8>, password: Secret) -> Result<Opened, ApiError> {
    super::on_cpu_pool(state, move || open_here(&file, &password)).await?
}

/// Opens an uploaded P12 on the calling thread: what [`open`] runs on the pool (and what
/// the fuzz targets call).
pub(crate) fn open_here(file: &[u8], password: &Secret) -> Result<Opened, ApiError> {
    p12::open(file, password.expose()).map_err(p12_error)
}

fn id_of(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

async fn view(state: &AppState, row: &CertificateRow) -> Value {
    views::certificate(row, state.reconciler.has_material(row.id).await, now())
}

/// Saves a new certificate: the row and the Vault entry, both or neither. The caller holds
/// the store's write lock.
async fn save_new(
    state: &AppState,
    account: &str,
    new: &NewCertificate<'_>,
    material: Material,
) -> Result<CertificateRow, ApiError> {
    let mut tx = state.store.begin().await?;
    if let Some(existing) = Store::certificate_named(&mut tx, account, new.name).await? {
        return Err(duplicate_name(new.name, existing));
    }
    state
        .quotas
        .check(&mut tx, account, Counted::Certificates, 1)
        .await?;
    let id = Store::insert_certificate(&mut tx, new).await?;
    let version = state
        .secrets
        .put_certificate(account, id, &material)
        .await?;
    Store::set_vault_version(&mut tx, id, version).await?;
    Store::commit_or_undo(tx, || state.secrets.delete_certificate(account, id)).await?;
    state.reconciler.remember(id, version, material).await;
    let row = state
        .store
        .certificate(account, id)
        .await?
        .ok_or_else(|| ApiError::not_found("certificate vanished"))?;
    tracing::info!(account, certificate = id, serial = %row.info.serial_number, "certificate created");
    Ok(row)
}

/// Replaces a certificate's material (rotation) and name. Mappings keep pointing at it and
/// pick up the new certificate without any other change. The caller holds the write lock.
async fn save_update(
    state: &AppState,
    account: &str,
    id: i64,
    new: &NewCertificate<'_>,
    material: Material,
) -> Result<CertificateRow, ApiError> {
    if state.store.certificate(account, id).await?.is_none() {
        return Err(ApiError::not_found(format!(
            "no certificate {id} in this account"
        )));
    }
    let mut tx = state.store.begin().await?;
    if let Some(other) = Store::certificate_named(&mut tx, account, new.name)
        .await?
        .filter(|o| *o != id)
    {
        return Err(duplicate_name(new.name, other));
    }
    Store::update_certificate(&mut tx, id, new).await?;
    let version = state
        .secrets
        .put_certificate(account, id, &material)
        .await?;
    Store::set_vault_version(&mut tx, id, version).await?;
    tx.commit().await.map_err(crate::store::StoreError::from)?;
    state.reconciler.remember(id, version, material).await;
    let row = state
        .store
        .certificate(account, id)
        .await?
        .ok_or_else(|| ApiError::not_found("certificate vanished"))?;
    tracing::info!(account, certificate = id, serial = %row.info.serial_number, "certificate updated");
    Ok(row)
}

fn duplicate_name(name: &str, existing: i64) -> ApiError {
    ApiError::conflict(
        "duplicate_certificate_name",
        format!("a certificate named {name:?} already exists in this account"),
    )
    .with("existingCertificateId", json!(existing))
}

fn saved(rows: &[Value], failed: Vec<Value>) -> Value {
    json!({"successfulySavedCertificates": rows, "failedSaveToVaultCertificates": failed})
}

/// `POST /mtls/account/{account}/certificates/by-file`
pub async fn create_by_file(
    State(state): State<AppState>,
    Path(account): Path<String>,
    principal: Principal,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<(StatusCode, JsonOut<Value>), ApiError> {
    check_account(&account)?;
    principal.require_bearer_manage(&account)?;
    let upload = read_upload(multipart, state.max_upload_bytes).await?;
    if upload.meta.id.is_some() {
        return Err(ApiError::bad_request(
            "invalid_upload",
            "a new certificate has no 'id'; use PUT to update",
        ));
    }
    let Opened { material, info } = open(&state, upload.file, upload.meta.password.clone()).await?;
    let name = upload.meta.name.as_str();
    let new = NewCertificate {
        account: &account,
        name,
        display_name: upload.meta.display_name.as_deref().unwrap_or(name),
        info: &info,
    };
    let row = {
        let _w = state.store.write_lock().await;
        save_new(&state, &account, &new, material).await?
    };
    Ok((
        StatusCode::CREATED,
        JsonOut(saved(&[view(&state, &row).await], vec![])),
    ))
}

/// `PUT /mtls/account/{account}/certificates/by-file`
pub async fn update_by_file(
    State(state): State<AppState>,
    Path(account): Path<String>,
    principal: Principal,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<JsonOut<Value>, ApiError> {
    check_account(&account)?;
    principal.require_bearer_manage(&account)?;
    let upload = read_upload(multipart, state.max_upload_bytes).await?;
    let id = upload.meta.id.as_ref().and_then(id_of).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_upload",
            "the 'certificate' field needs the numeric 'id'",
        )
    })?;
    let Opened { material, info } = open(&state, upload.file, upload.meta.password.clone()).await?;
    let name = upload.meta.name.as_str();
    let new = NewCertificate {
        account: &account,
        name,
        display_name: upload.meta.display_name.as_deref().unwrap_or(name),
        info: &info,
    };
    let row = {
        let _w = state.store.write_lock().await;
        save_update(&state, &account, id, &new, material).await?
    };
    Ok(JsonOut(saved(&[view(&state, &row).await], vec![])))
}

/// A certificate in a JSON create or update body.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CertificateJson {
    name: String,
    p12: P12Bytes,
    #[serde(default)]
    password: Secret,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    id: Option<Value>,
}

/// The P12 file in a JSON body: an array of byte values as LivePerson's mTLS API "Overview" shows (Java's signed
/// bytes, -128..127, are accepted too), or a base64 string as Java's Jackson writes `byte[]`.
pub struct P12Bytes(Vec<u8>);

impl<'de> Deserialize<'de> for P12Bytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use base64::Engine;
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(Vec<i16>),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bytes(v) => v
                .into_iter()
                .map(|b| match b {
                    0..=255 => Ok(b as u8),
                    -128..=-1 => Ok((b + 256) as u8),
                    _ => Err(serde::de::Error::custom(
                        "p12 bytes must be from -128 to 255",
                    )),
                })
                .collect::<Result<_, _>>()
                .map(P12Bytes),
            Raw::Text(t) => base64::engine::general_purpose::STANDARD
                .decode(t.trim())
                .map(P12Bytes)
                .map_err(|_| serde::de::Error::custom("p12 must be an array of bytes or base64")),
        }
    }
}

/// Opens and checks every certificate of a JSON body before anything is written: a bad
/// item refuses the whole request. Each file is opened on the CPU pool in turn, so a
/// batch takes one slot at a time and a dropped request stops after the current file.
async fn open_all(
    state: &AppState,
    items: &[CertificateJson],
    updating: bool,
    max_bytes: usize,
) -> Result<Vec<(Opened, Option<i64>)>, ApiError> {
    open_all_with(items, updating, max_bytes, |file, password| {
        open(state, file, password)
    })
    .await
}

/// [`open_all`]'s checks, with each file opened by `open` (the handlers: [`open`] on the CPU
/// pool; the fuzz targets: [`open_here`]).
pub(crate) async fn open_all_with<F, Fut>(
    items: &[CertificateJson],
    updating: bool,
    max_bytes: usize,
    mut open: F,
) -> Result<Vec<(Opened, Option<i64>)>, ApiError>
where
    F: FnMut(Vec<u8>, Secret) -> Fut,
    Fut: std::future::Future<Output = Result<Opened, ApiError>>,
{
    if items.is_empty() {
        return Err(ApiError::bad_request(
            "empty_body",
            "the body must be a non-empty array of certificates",
        ));
    }
    if items.len() > 100 {
        return Err(ApiError::bad_request(
            "batch_too_large",
            "at most 100 certificates per request",
        ));
    }
    let mut names = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(items.len());
    for (i, c) in items.iter().enumerate() {
        let at = |e: ApiError| e.with("index", json!(i));
        check_name(&c.name).map_err(at)?;
        if let Some(d) = &c.display_name {
            check_name(d).map_err(at)?;
        }
        if !names.insert(c.name.as_str()) {
            return Err(at(ApiError::conflict(
                "duplicate_certificate_name",
                format!("name {:?} appears twice", c.name),
            )));
        }
        if c.p12.0.len() > max_bytes {
            return Err(at(super::extract::too_large()));
        }
        let id = c.id.as_ref().and_then(id_of);
        match (updating, id, &c.id) {
            (true, None, _) => {
                return Err(at(ApiError::bad_request(
                    "invalid_body",
                    "each certificate needs its numeric 'id'",
                )))
            }
            (false, _, Some(_)) => {
                return Err(at(ApiError::bad_request(
                    "invalid_body",
                    "a new certificate has no 'id'; use PUT to update",
                )))
            }
            _ => {}
        }
        let opened = open(c.p12.0.clone(), c.password.clone())
            .await
            .map_err(at)?;
        out.push((opened, id));
    }
    Ok(out)
}

/// Saves a JSON array of certificates (new ones, or updates when `updating`) and answers
/// as the API documents: 201 (create) or 200 (update) with what was saved and what Vault
/// refused; 503 when Vault refused them all.
async fn save_json(
    state: AppState,
    account: String,
    principal: Principal,
    items: Vec<CertificateJson>,
    updating: bool,
) -> Result<(StatusCode, JsonOut<Value>), ApiError> {
    check_account(&account)?;
    principal.require_manage(&account)?;
    let opened = open_all(&state, &items, updating, state.max_upload_bytes).await?;
    let _w = state.store.write_lock().await;
    let mut rows = Vec::new();
    let mut failed = Vec::new();
    for (item, (Opened { material, info }, id)) in items.iter().zip(opened) {
        let new = NewCertificate {
            account: &account,
            name: &item.name,
            display_name: item.display_name.as_deref().unwrap_or(&item.name),
            info: &info,
        };
        let result = match id {
            Some(id) => save_update(&state, &account, id, &new, material).await,
            None => save_new(&state, &account, &new, material).await,
        };
        match result {
            Ok(row) => rows.push(view(&state, &row).await),
            Err(e) if e.code == "vault_unavailable" => failed
                .push(json!({"name": item.name, "id": id, "code": e.code, "message": e.message})),
            Err(e) => return Err(e),
        }
    }
    let status = match (rows.is_empty(), updating) {
        (true, _) => StatusCode::SERVICE_UNAVAILABLE,
        (false, false) => StatusCode::CREATED,
        (false, true) => StatusCode::OK,
    };
    Ok((status, JsonOut(saved(&rows, failed))))
}

/// `POST /mtls/account/{account}/certificates`: JSON array, `p12` as bytes.
pub async fn create_json(
    State(state): State<AppState>,
    Path(account): Path<String>,
    principal: Principal,
    Json(items): Json<Vec<CertificateJson>>,
) -> Result<(StatusCode, JsonOut<Value>), ApiError> {
    save_json(state, account, principal, items, false).await
}

/// `PUT /mtls/account/{account}/certificates`: JSON array, each with its `id`.
pub async fn update_json(
    State(state): State<AppState>,
    Path(account): Path<String>,
    principal: Principal,
    Json(items): Json<Vec<CertificateJson>>,
) -> Result<(StatusCode, JsonOut<Value>), ApiError> {
    save_json(state, account, principal, items, true).await
}

/// `GET /mtls/account/{account}/certificates`
pub async fn list(
    State(state): State<AppState>,
    Path(account): Path<String>,
    principal: Principal,
) -> Result<JsonOut<Value>, ApiError> {
    check_account(&account)?;
    principal.require_manage(&account)?;
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
    principal.require_manage(&account)?;
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
    principal.require_manage(&account)?;
    let _w = state.store.write_lock().await;
    // why: before looking at which mappings use it, or a 409 would list another account's
    // mappings (URLs, names, CA bundles) to whoever guesses its certificate id.
    if state.store.certificate(&account, id).await?.is_none() {
        return Err(ApiError::not_found(format!(
            "no certificate {id} in this account"
        )));
    }
    let mut tx = state.store.begin().await?;
    let users = Store::mappings_using(&mut tx, &account, id).await?;
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
    tx.commit().await.map_err(crate::store::StoreError::from)?;
    state.reconciler.forget(id).await;
    // why: destroyed only once the row is gone for good: a failed commit must leave the
    // certificate exactly as it was, key included. A destroy that fails now leaves an
    // orphaned entry (logged), never a live mapping without its key.
    if let Err(e) = state.secrets.delete_certificate(&account, id).await {
        tracing::warn!(account, certificate = id, error = %e, "certificate deleted, but its secret entry could not be destroyed; destroy it in the secret store");
    }
    tracing::info!(account, certificate = id, "certificate deleted");
    Ok(JsonOut(json!({"id": id, "deleted": true})))
}
