//! How stored rows are shown in answers.

pub(crate) use crate::clock::rfc3339;

use serde_json::{json, Value};

use crate::store::{CertificateRow, MappingRow};

/// `Available` when the certificate is in both the database and Vault and not expired;
/// `Expired` past its end date; `UnAvailable` otherwise (the definitions of LivePerson's mTLS API "Overview").
pub fn certificate_status(row: &CertificateRow, in_vault: bool, now: i64) -> &'static str {
    if row.info.not_after < now {
        "Expired"
    } else if in_vault && !row.deleted {
        "Available"
    } else {
        "UnAvailable"
    }
}

/// A certificate object. Never includes key material or passwords.
pub fn certificate(row: &CertificateRow, in_vault: bool, now: i64) -> Value {
    json!({
        "id": row.id,
        "deleted": row.deleted,
        "name": row.name,
        "displayName": row.display_name,
        "siteId": row.account,
        "status": certificate_status(row, in_vault, now),
        "expirationDate": row.info.not_after.saturating_mul(1000),
        "subject": row.info.subject,
        "issuer": row.info.issuer,
        "serialNumber": row.info.serial_number,
        "notBefore": rfc3339(row.info.not_before),
        "notAfter": rfc3339(row.info.not_after),
        "sha256Fingerprint": row.info.sha256_fingerprint,
        "keyAlgorithm": row.info.key_algorithm,
        "keySize": row.info.key_size,
    })
}

/// A mapping object, in the shape the POST body of LivePerson's mTLS API "Overview" uses.
pub fn mapping(row: &MappingRow) -> Value {
    let mut v = json!({
        "id": row.id,
        "certificationId": row.certificate_id.to_string(),
        "serviceId": row.service.id_text(),
        "enable": row.enabled,
        "url": row.url,
        "siteId": row.account,
        "name": row.name,
        "deleted": row.deleted,
    });
    if let (Some(pem), Some(obj)) = (&row.ca_certificates, v.as_object_mut()) {
        obj.insert("caCertificates".into(), json!(pem));
    }
    if let (Some(c), Some(obj)) = (row.credential_id, v.as_object_mut()) {
        obj.insert("credentialId".into(), json!(c.to_string()));
    }
    v
}
