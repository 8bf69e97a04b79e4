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
use crate::certinfo::CertInfo;
use crate::p12::{self, Material, Opened, P12Error};
use crate::secret::Secret;
use crate::secret_store::WriteId;
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
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_upload",
                    "unknown field: the upload has the fields 'file' and 'certificate' only",
                ))
            }
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

/// A certificate to save, owned, so the write can run in a task of its own
/// ([`super::detached`]).
struct Pending {
    /// `None`: a new certificate; else the one to update.
    id: Option<i64>,
    name: String,
    display_name: String,
    info: CertInfo,
    material: Material,
}

impl Pending {
    fn new(id: Option<i64>, name: &str, display_name: Option<&str>, opened: Opened) -> Pending {
        Pending {
            id,
            name: name.to_owned(),
            display_name: display_name.unwrap_or(name).to_owned(),
            info: opened.info,
            material: opened.material,
        }
    }
}

/// Saves certificates in order, in a task of its own holding the write lock, so a request
/// dropped by its deadline cannot stop a write between Vault and the commit. Answers each
/// one's outcome; stops at the first failure that is not Vault's (as the batch API says).
async fn save_all(
    state: &AppState,
    account: &str,
    pending: Vec<Pending>,
) -> Result<Vec<Result<CertificateRow, ApiError>>, ApiError> {
    let (state, account) = (state.clone(), account.to_owned());
    super::detached(async move {
        let _w = state.store.write_lock().await;
        let mut out = Vec::with_capacity(pending.len());
        for p in pending {
            let new = NewCertificate {
                account: &account,
                name: &p.name,
                display_name: &p.display_name,
                info: &p.info,
            };
            let result = match p.id {
                Some(id) => save_update(&state, &account, id, &new, p.material).await,
                None => save_new(&state, &account, &new, p.material).await,
            };
            let stop = matches!(&result, Err(e) if e.code != "secret_store_unavailable");
            out.push(result);
            if stop {
                break;
            }
        }
        Ok(out)
    })
    .await
}

/// Saves one certificate through [`save_all`].
async fn save_one(state: &AppState, account: &str, p: Pending) -> Result<CertificateRow, ApiError> {
    save_all(state, account, vec![p])
        .await?
        .pop()
        .unwrap_or_else(|| Err(ApiError::not_found("certificate vanished")))
}

/// Saves a new certificate: the row and the Vault entry, both or neither. The caller holds
/// the store's write lock.
///
/// Order: row inserted (uncommitted, for its id), Vault written, row pinned to the version
/// written, commit. Any failure after the Vault write destroys the entry again; if that
/// fails too, what remains is an entry no committed row names, which nothing serves.
async fn save_new(
    state: &AppState,
    account: &str,
    new: &NewCertificate<'_>,
    material: Material,
) -> Result<CertificateRow, ApiError> {
    let mut tx = state.store.begin_write(account).await?;
    if let Some(existing) = Store::certificate_named(&mut tx, account, new.name).await? {
        return Err(duplicate_name(new.name, existing));
    }
    state
        .quotas
        .check(&mut tx, account, Counted::Certificates, 1)
        .await?;
    let id = Store::insert_certificate(&mut tx, new).await?;
    let write_id = WriteId::new();
    let version = state
        .secrets
        .put_certificate(account, id, &material, &write_id)
        .await?;
    let undo = || async {
        if let Err(e) = state.secrets.delete_certificate(account, id).await {
            tracing::warn!(account, certificate = id, error = %e, "a certificate whose commit failed left its secret entry behind; no row names it, so it is never served");
        }
    };
    if let Err(e) = Store::set_vault_version(&mut tx, id, version, write_id.as_str()).await {
        drop(tx);
        undo().await;
        return Err(e.into());
    }
    Store::commit_or_undo(tx, undo).await?;
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
///
/// The new material is a new Vault version, marked with a fresh [`WriteId`]; the row is
/// re-pinned to it in the transaction that commits the new metadata. Until that commit the
/// row names the old version, which stays untouched, so the gateway keeps presenting it; if
/// the commit fails, the new version is destroyed, and should that fail too its mark (which
/// no row names) keeps the watch from ever adopting it.
async fn save_update(
    state: &AppState,
    account: &str,
    id: i64,
    new: &NewCertificate<'_>,
    material: Material,
) -> Result<CertificateRow, ApiError> {
    let mut tx = state.store.begin_write(account).await?;
    if let Some(other) = Store::certificate_named(&mut tx, account, new.name)
        .await?
        .filter(|o| *o != id)
    {
        return Err(duplicate_name(new.name, other));
    }
    // why: the guard is this update, under the account's lock, before the secret store is
    // written: a certificate deleted meanwhile (by any control plane) gets no new version.
    if !Store::update_certificate(&mut tx, id, new).await? {
        return Err(ApiError::not_found(format!(
            "no certificate {id} in this account"
        )));
    }
    let write_id = WriteId::new();
    let version = state
        .secrets
        .put_certificate(account, id, &material, &write_id)
        .await?;
    let undo = || async {
        if let Err(e) = state
            .secrets
            .destroy_certificate_version(account, id, version)
            .await
        {
            tracing::warn!(account, certificate = id, version, error = %e, "a certificate update whose commit failed left its new version behind; no row names its write id, so it is never served");
        }
    };
    if let Err(e) = Store::set_vault_version(&mut tx, id, version, write_id.as_str()).await {
        drop(tx);
        undo().await;
        return Err(e.into());
    }
    Store::commit_or_undo(tx, undo).await?;
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
    let opened = open(&state, upload.file, upload.meta.password.clone()).await?;
    let pending = Pending::new(
        None,
        &upload.meta.name,
        upload.meta.display_name.as_deref(),
        opened,
    );
    let row = save_one(&state, &account, pending).await?;
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
    let opened = open(&state, upload.file, upload.meta.password.clone()).await?;
    let pending = Pending::new(
        Some(id),
        &upload.meta.name,
        upload.meta.display_name.as_deref(),
        opened,
    );
    let row = save_one(&state, &account, pending).await?;
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
    let pending: Vec<Pending> = items
        .iter()
        .zip(opened)
        .map(|(item, (opened, id))| {
            Pending::new(id, &item.name, item.display_name.as_deref(), opened)
        })
        .collect();
    let mut rows = Vec::new();
    let mut failed = Vec::new();
    for (item, result) in items.iter().zip(save_all(&state, &account, pending).await?) {
        match result {
            Ok(row) => rows.push(view(&state, &row).await),
            Err(e) if e.code == "secret_store_unavailable" => {
                let id = item.id.as_ref().and_then(id_of);
                failed.push(
                    json!({"name": item.name, "id": id, "code": e.code, "message": e.message}),
                )
            }
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
    super::detached(delete_detached(state, account.clone(), id)).await?;
    tracing::info!(account, certificate = id, "certificate deleted");
    Ok(JsonOut(json!({"id": id, "deleted": true})))
}

/// [`delete`]'s write, in a task of its own: the row is marked deleted and committed, then
/// the secret entry destroyed — never before, so a failed commit leaves the certificate
/// exactly as it was, key included — and a request dropped in between does not skip it.
async fn delete_detached(state: AppState, account: String, id: i64) -> Result<(), ApiError> {
    let account = account.as_str();
    let _w = state.store.write_lock().await;
    let mut tx = state.store.begin_write(account).await?;
    // why: before looking at which mappings use it, or a 409 would list another account's
    // mappings (URLs, names, CA bundles) to whoever guesses its certificate id; under the
    // account's lock, so it cannot go between this check and the delete.
    if state.store.certificate(account, id).await?.is_none() {
        return Err(ApiError::not_found(format!(
            "no certificate {id} in this account"
        )));
    }
    let users = Store::mappings_using(&mut tx, account, id).await?;
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
    if !Store::mark_certificate_deleted(&mut tx, account, id).await? {
        return Err(ApiError::not_found(format!(
            "no certificate {id} in this account"
        )));
    }
    Store::commit_or_undo(tx, || async {}).await?;
    state.reconciler.forget(id).await;
    // why: a destroy that fails now leaves an orphaned entry (logged), never a live mapping
    // without its key.
    if let Err(e) = state.secrets.delete_certificate(account, id).await {
        tracing::warn!(account, certificate = id, error = %e, "certificate deleted, but its secret entry could not be destroyed; destroy it in the secret store");
    }
    Ok(())
}
