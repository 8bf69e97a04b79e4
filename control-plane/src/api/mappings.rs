//! Mapping CRUD on the `accountConfigReadWrite` domain (`ac-common/mtls`).

use std::collections::{HashMap, HashSet};

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::Json as JsonOut;
use mtlsgate_filter::service::Service;
use mtlsgate_filter::snapshot::Unavailable;
use mtlsgate_filter::target::Target;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::extract::{Json, Path};
use super::{check_account, views, AppState, Principal};
use crate::address_policy::AddressPolicy;
use crate::store::{Counted, MappingRow, NewMapping, Store};

/// Most mappings in one request.
const BATCH_MAX: usize = 1000;
/// Largest `caCertificates` bundle.
const CA_MAX: usize = 64 * 1024;

/// A mapping as the POST body of LivePerson's mTLS API "Overview" has it. Ids may come as strings or numbers.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MappingInput {
    certification_id: Value,
    service_id: Value,
    #[serde(default = "yes")]
    enable: bool,
    url: String,
    site_id: Option<Value>,
    name: String,
    #[serde(default)]
    deleted: bool,
    #[serde(default)]
    ca_certificates: Option<String>,
    /// A credential of the account to authenticate to the target with.
    #[serde(default)]
    credential_id: Option<Value>,
    /// Ignored on create (ids are assigned); accepted so a GET body can be posted back.
    #[serde(default)]
    #[allow(dead_code)]
    id: Option<Value>,
    /// Ignored (what the gateway does with the mapping is not written); accepted so a GET
    /// body can be posted back.
    #[serde(default)]
    #[allow(dead_code)]
    status: Option<Value>,
}

fn yes() -> bool {
    true
}

fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn invalid(index: usize, code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::bad_request(code, message).with("index", json!(index))
}

/// Checks one mapping on its own (no database).
fn validate(
    index: usize,
    account: &str,
    m: &MappingInput,
    policy: &AddressPolicy,
) -> Result<NewMapping, ApiError> {
    let certificate_id = text_of(&m.certification_id)
        .and_then(|s| s.parse::<i64>().ok())
        .filter(|id| *id > 0)
        .ok_or_else(|| {
            invalid(
                index,
                "invalid_certification_id",
                "certificationId must be a certificate id",
            )
        })?;
    let service = text_of(&m.service_id)
        .and_then(|s| s.parse::<Service>().ok())
        .ok_or_else(|| {
            invalid(
                index,
                "invalid_service_id",
                "serviceId must be 0 (TEST_SERVICE), 1 (IDP) or 2 (WEBHOOKS)",
            )
        })?;
    if let Some(site) = &m.site_id {
        if text_of(site).as_deref() != Some(account) {
            return Err(invalid(
                index,
                "site_id_mismatch",
                "siteId must equal the account in the path",
            ));
        }
    }
    let target =
        Target::parse(&m.url).map_err(|e| invalid(index, "invalid_url", format!("url: {e}")))?;
    // An IP literal or `localhost` can be judged now; names are judged each time they
    // resolve (the reconciler), and refused at the gateway with the same code.
    policy
        .check_written(target.host(), target.port())
        .map_err(|why| invalid(index, "target_not_allowed", format!("url: {why}")))?;
    if m.name.trim().is_empty()
        || m.name.chars().count() > 128
        || m.name.chars().any(char::is_control)
    {
        return Err(invalid(
            index,
            "invalid_name",
            "name must be 1-128 characters with no control characters",
        ));
    }
    if m.deleted {
        return Err(invalid(
            index,
            "invalid_deleted",
            "a new mapping cannot be created deleted",
        ));
    }
    let ca_certificates = match &m.ca_certificates {
        None => None,
        Some(pem) if pem.trim().is_empty() => None,
        Some(pem) => {
            check_ca_bundle(pem).map_err(|msg| invalid(index, "invalid_ca_certificates", msg))?;
            Some(pem.clone())
        }
    };
    let credential_id = match &m.credential_id {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            text_of(v)
                .and_then(|s| s.parse::<i64>().ok())
                .filter(|id| *id > 0)
                .ok_or_else(|| {
                    invalid(
                        index,
                        "invalid_credential_id",
                        "credentialId must be a credential id",
                    )
                })?,
        ),
    };
    Ok(NewMapping {
        name: m.name.clone(),
        service,
        url: m.url.clone(),
        certificate_id,
        enabled: m.enable,
        ca_certificates,
        credential_id,
    })
}

/// A PEM bundle of one or more readable X.509 certificates and nothing else.
fn check_ca_bundle(pem: &str) -> Result<(), String> {
    if pem.len() > CA_MAX {
        return Err(format!("caCertificates is larger than {CA_MAX} bytes"));
    }
    let mut count = 0;
    for block in x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes()) {
        let block = block.map_err(|_| "caCertificates is not valid PEM".to_owned())?;
        if block.label != "CERTIFICATE" || block.parse_x509().is_err() {
            return Err("caCertificates must contain only X.509 certificates".into());
        }
        count += 1;
    }
    if count == 0 {
        return Err("caCertificates holds no certificate".into());
    }
    Ok(())
}

fn revision_header(revision: i64) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&revision.to_string()) {
        h.insert("ac-revision", v);
    }
    h
}

/// `POST /api/account/{account}/configuration/ac-common/mtls?v=3.0`: creates every mapping
/// in the array, or none.
pub async fn create(
    State(state): State<AppState>,
    Path(account): Path<String>,
    principal: Principal,
    Json(input): Json<Vec<MappingInput>>,
) -> Result<(StatusCode, HeaderMap, JsonOut<Value>), ApiError> {
    check_account(&account)?;
    principal.require_manage(&account)?;
    if input.is_empty() {
        return Err(ApiError::bad_request(
            "empty_body",
            "the body must be a non-empty array of mappings",
        ));
    }
    if input.len() > BATCH_MAX {
        return Err(ApiError::bad_request(
            "batch_too_large",
            format!("at most {BATCH_MAX} mappings per request"),
        ));
    }
    let mut valid = Vec::with_capacity(input.len());
    let mut names = HashSet::new();
    let mut triplets = HashSet::new();
    for (i, m) in input.iter().enumerate() {
        let v = validate(i, &account, m, state.dns.policy())?;
        if !names.insert(v.name.clone()) {
            return Err(ApiError::conflict(
                "duplicate_mapping_name",
                format!("name {:?} appears twice in the request", v.name),
            )
            .with("index", json!(i)));
        }
        if !triplets.insert((v.service, v.url.clone())) {
            return Err(ApiError::conflict(
                "duplicate_mapping",
                "the same service and url appear twice in the request",
            )
            .with("index", json!(i)));
        }
        valid.push(v);
    }

    let (rows, revision) = {
        let _w = state.store.write_lock().await;
        let mut tx = state.store.begin_write(&account).await?;
        state
            .quotas
            .check(
                &mut tx,
                &account,
                Counted::Mappings,
                u64::try_from(valid.len()).unwrap_or(u64::MAX),
            )
            .await?;
        for (i, v) in valid.iter().enumerate() {
            check_against_store(&state, &mut tx, &account, i, v, None).await?;
        }
        let mut rows = Vec::with_capacity(valid.len());
        for v in &valid {
            rows.push(Store::insert_mapping(&mut tx, &account, v).await?);
        }
        let revision = Store::bump_revision(&mut tx, &account).await?;
        tx.commit().await?;
        (rows, revision)
    };
    state.reconciler.kick();
    tracing::info!(account, count = rows.len(), revision, "mappings created");
    Ok((
        StatusCode::CREATED,
        revision_header(revision),
        JsonOut(Value::Array(rows.iter().map(views::mapping).collect())),
    ))
}

/// A mapping as the GETs answer it, with `status`: what the gateway does with it now —
/// `active`, `unavailable` (with the `code` and `message` its forwards are refused with),
/// `pending` (written, not built into the gateway's configuration yet), `disabled` or
/// `deleted`. A tenant sees why a mapping is refused without sending a request through it.
fn with_status(row: &MappingRow, built: &HashMap<u64, Option<Unavailable>>) -> Value {
    let status = if row.deleted {
        json!({"state": "deleted"})
    } else if !row.enabled {
        json!({"state": "disabled"})
    } else {
        match u64::try_from(row.id).ok().and_then(|id| built.get(&id)) {
            Some(None) => json!({"state": "active"}),
            Some(Some(why)) => json!({
                "state": "unavailable",
                "code": why.code(),
                "message": why.message(),
            }),
            None => json!({"state": "pending"}),
        }
    };
    let mut v = views::mapping(row);
    if let Some(obj) = v.as_object_mut() {
        obj.insert("status".into(), status);
    }
    v
}

/// `GET /api/account/{account}/configuration/ac-common/mtls`
pub async fn list(
    State(state): State<AppState>,
    Path(account): Path<String>,
    principal: Principal,
) -> Result<(HeaderMap, JsonOut<Value>), ApiError> {
    check_account(&account)?;
    principal.require_manage(&account)?;
    let revision = state.store.revision(&account).await?;
    let rows = state.store.mappings(&account).await?;
    let built = state.reconciler.mapping_states();
    Ok((
        revision_header(revision),
        JsonOut(Value::Array(
            rows.iter().map(|r| with_status(r, &built)).collect(),
        )),
    ))
}

/// Checks a validated mapping against what is stored: its certificate exists in the account,
/// and neither its name nor its triplet is taken by another live mapping (`except` is the
/// mapping being updated).
async fn check_against_store(
    state: &AppState,
    tx: &mut crate::store::Tx,
    account: &str,
    index: usize,
    v: &NewMapping,
    except: Option<i64>,
) -> Result<(), ApiError> {
    if let Some(cid) = v.credential_id {
        let credential = state.store.credential(account, cid).await?.ok_or_else(|| {
            invalid(
                index,
                "unknown_credential",
                format!("credential {cid} does not exist in this account"),
            )
        })?;
        if !credential.kind().attachable() {
            return Err(invalid(
                index,
                "credential_not_attachable",
                format!(
                    "a {} credential cannot be attached to a mapping in this version",
                    credential.kind()
                ),
            ));
        }
    }
    if state
        .store
        .certificate(account, v.certificate_id)
        .await?
        .is_none()
    {
        return Err(invalid(
            index,
            "unknown_certificate",
            format!(
                "certificate {} does not exist in this account",
                v.certificate_id
            ),
        ));
    }
    if let Some(existing) = Store::mapping_named(tx, account, &v.name)
        .await?
        .filter(|m| Some(m.id) != except)
    {
        return Err(ApiError::conflict(
            "duplicate_mapping_name",
            format!("a mapping named {:?} already exists", v.name),
        )
        .with("index", json!(index))
        .with("existingMapping", views::mapping(&existing)));
    }
    if let Some(existing) = Store::mapping_for(tx, account, v.service, &v.url)
        .await?
        .filter(|m| Some(m.id) != except)
    {
        return Err(ApiError::conflict(
            "duplicate_mapping",
            "a mapping for this account, service and url already exists",
        )
        .with("index", json!(index))
        .with("existingMapping", views::mapping(&existing)));
    }
    Ok(())
}

/// `If-Match: <revision>`, when given, must be the account's current revision.
fn check_if_match(headers: &HeaderMap, current: i64) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(());
    };
    let given = value.to_str().ok().map(|v| v.trim().trim_matches('"'));
    if given == Some("*") || given.and_then(|g| g.parse::<i64>().ok()) == Some(current) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "revision_mismatch",
            format!("If-Match does not name the current revision ({current})"),
        )
        .with("currentRevision", json!(current)))
    }
}

/// `GET /api/account/{account}/configuration/ac-common/mtls/{id}`
pub async fn get_one(
    State(state): State<AppState>,
    Path((account, id)): Path<(String, i64)>,
    principal: Principal,
) -> Result<(HeaderMap, JsonOut<Value>), ApiError> {
    check_account(&account)?;
    principal.require_manage(&account)?;
    let revision = state.store.revision(&account).await?;
    let row = state
        .store
        .mapping(&account, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no mapping {id} in this account")))?;
    let built = state.reconciler.mapping_states();
    Ok((
        revision_header(revision),
        JsonOut(with_status(&row, &built)),
    ))
}

/// `PUT /api/account/{account}/configuration/ac-common/mtls/{id}`: replaces the mapping,
/// honouring `If-Match`.
pub async fn update(
    State(state): State<AppState>,
    Path((account, id)): Path<(String, i64)>,
    principal: Principal,
    headers: HeaderMap,
    Json(input): Json<MappingInput>,
) -> Result<(HeaderMap, JsonOut<Value>), ApiError> {
    check_account(&account)?;
    principal.require_manage(&account)?;
    let v = validate(0, &account, &input, state.dns.policy())?;
    let (row, revision) = {
        let _w = state.store.write_lock().await;
        let mut tx = state.store.begin_write(&account).await?;
        check_if_match(&headers, Store::revision_in(&mut tx, &account).await?)?;
        if state.store.mapping(&account, id).await?.is_none() {
            return Err(ApiError::not_found(format!(
                "no mapping {id} in this account"
            )));
        }
        check_against_store(&state, &mut tx, &account, 0, &v, Some(id)).await?;
        let row = Store::update_mapping(&mut tx, &account, id, &v)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no mapping {id} in this account")))?;
        let revision = Store::bump_revision(&mut tx, &account).await?;
        tx.commit().await?;
        (row, revision)
    };
    state.reconciler.kick();
    tracing::info!(account, mapping = id, revision, "mapping updated");
    Ok((revision_header(revision), JsonOut(views::mapping(&row))))
}

/// `DELETE /api/account/{account}/configuration/ac-common/mtls/{id}`, honouring `If-Match`.
pub async fn delete(
    State(state): State<AppState>,
    Path((account, id)): Path<(String, i64)>,
    principal: Principal,
    headers: HeaderMap,
) -> Result<(HeaderMap, JsonOut<Value>), ApiError> {
    check_account(&account)?;
    principal.require_manage(&account)?;
    let revision = {
        let _w = state.store.write_lock().await;
        let mut tx = state.store.begin_write(&account).await?;
        check_if_match(&headers, Store::revision_in(&mut tx, &account).await?)?;
        if !Store::delete_mapping(&mut tx, &account, id).await? {
            return Err(ApiError::not_found(format!(
                "no mapping {id} in this account"
            )));
        }
        let revision = Store::bump_revision(&mut tx, &account).await?;
        tx.commit().await?;
        revision
    };
    state.reconciler.kick();
    tracing::info!(account, mapping = id, revision, "mapping deleted");
    Ok((
        revision_header(revision),
        JsonOut(json!({"id": id, "deleted": true})),
    ))
}
