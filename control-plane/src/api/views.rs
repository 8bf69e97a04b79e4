//! How stored rows are shown in answers.

use serde_json::{json, Value};

use crate::store::{CertificateRow, MappingRow};

/// `Available` when the certificate is in both the database and Vault and not expired;
/// `Expired` past its end date; `UnAvailable` otherwise (the seeds' definitions).
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

/// A mapping object, in the shape the seeds' POST body uses.
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

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::rfc3339;

    #[test]
    fn formats_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_000_000), "2026-11-18T11:06:40Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
    }
}
