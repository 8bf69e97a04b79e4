//! Do the database and the secret store agree? Every live row that names secrets is read
//! against the secret store: the version it pins must be there (and, for a certificate, be
//! the one the row's write made), and a newer version nobody pins is named too. This is what
//! to run after restoring the two from backups taken apart (`mtlsgate check`), and what an
//! auditor runs to show which certificate each mapping really presents.

use serde::Serialize;

use crate::secret_store::{SecretStoreError, Secrets};
use crate::store::{Store, StoreError};

/// One row whose secrets do not match it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Difference {
    /// `certificate`, `credential` or `appKey`.
    pub kind: &'static str,
    pub account: String,
    pub id: i64,
    pub name: String,
    /// What differs, in words (never a secret).
    pub problem: String,
}

/// What [`check`] read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub certificates: usize,
    pub credentials: usize,
    pub app_keys: usize,
    pub differences: Vec<Difference>,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error("secret store: {0}")]
    Secrets(#[from] SecretStoreError),
}

/// Reads every live certificate, credential and AppKey of every account against the secret
/// store. A secret store that does not answer is an error (not a difference): nothing can be
/// said then.
pub async fn check(store: &Store, secrets: &Secrets) -> Result<Report, CheckError> {
    let mut report = Report::default();
    for c in store.all_certificates().await? {
        report.certificates += 1;
        let mut differ = |problem: String| {
            report.differences.push(Difference {
                kind: "certificate",
                account: c.account.clone(),
                id: c.id,
                name: c.name.clone(),
                problem,
            })
        };
        let newest = secrets.certificate_version(&c.account, c.id).await?;
        if c.vault_version == 0 {
            differ("the row pins no version: its material was never written".into());
            continue;
        }
        match secrets
            .get_certificate(&c.account, c.id, c.vault_version)
            .await?
        {
            None => differ(format!(
                "the secret store has no version {} (the one the row pins){}",
                c.vault_version,
                newest.map_or(String::new(), |n| format!("; its newest is {n}"))
            )),
            Some(stored) => {
                let pin = store.certificate_pin(c.id).await?;
                let row_mark = pin.and_then(|(_, mark)| mark);
                let stored_mark = stored.write_id.as_ref().map(|w| w.as_str().to_owned());
                if let (Some(row), Some(stored)) = (&row_mark, &stored_mark) {
                    if row != stored {
                        differ(format!(
                            "version {} was written by another write than the row's",
                            c.vault_version
                        ));
                    }
                }
                if let Some(n) = newest.filter(|n| *n > c.vault_version) {
                    differ(format!(
                        "the secret store holds version {n}, newer than the {} the row pins (a write the database does not know of, or an operator's rotation not yet adopted)",
                        c.vault_version
                    ));
                }
            }
        }
    }
    {
        for cr in store.all_credentials().await? {
            report.credentials += 1;
            if secrets
                .get_credential(&cr.account, cr.id, cr.secret_version)
                .await?
                .is_none()
            {
                report.differences.push(Difference {
                    kind: "credential",
                    account: cr.account.clone(),
                    id: cr.id,
                    name: cr.name.clone(),
                    problem: match cr.secret_version {
                        0 => "the secret store has no secrets for it".into(),
                        v => format!("the secret store has no version {v} (the one the row pins)"),
                    },
                });
            }
        }
    }
    for k in store.all_appkeys().await? {
        report.app_keys += 1;
        if secrets.get_appkey(&k.account, k.id).await?.is_none() {
            report.differences.push(Difference {
                kind: "appKey",
                account: k.account.clone(),
                id: k.id,
                name: k.consumer_key.clone(),
                problem: "the secret store has no secrets for it: it cannot sign".into(),
            });
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::certinfo::CertInfo;
    use crate::p12::Material;
    use crate::secret::Secret;
    use crate::secret_store::{MemoryStore, SecretStore, WriteId};
    use crate::store::NewCertificate;

    #[tokio::test]
    async fn rows_and_secrets_that_disagree_are_named_and_agreement_is_silent() {
        let dir = std::env::temp_dir().join(format!(
            "mtlsgate-consistency-{}",
            hex::encode(crate::random::bytes::<8>())
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let store = crate::store::contract::test_store(&dir).await;
        let memory = Arc::new(MemoryStore::new());
        let secrets = Secrets::new(memory.clone());
        let info = CertInfo {
            subject: "CN=x".into(),
            issuer: "CN=x".into(),
            serial_number: "01".into(),
            not_before: 0,
            not_after: 1,
            sha256_fingerprint: "00".into(),
            key_algorithm: "EC".into(),
            key_size: 256,
        };
        let material = Material {
            chain_pem: "CHAIN-PEM-OF-THE-TEST".into(),
            key_pem: Secret::new("PRIVATE-KEY-OF-THE-TEST"),
        };
        // Two certificates written as the API writes them: row, secret, pin, commit.
        let mut ids = Vec::new();
        for name in ["kept", "lost"] {
            let mut tx = store.begin_write("a").await.unwrap();
            let id = Store::insert_certificate(
                &mut tx,
                &NewCertificate {
                    account: "a",
                    name,
                    display_name: name,
                    info: &info,
                },
            )
            .await
            .unwrap();
            let write = WriteId::new();
            let v = secrets
                .put_certificate("a", id, &material, &write)
                .await
                .unwrap();
            Store::set_vault_version(&mut tx, id, v, write.as_str())
                .await
                .unwrap();
            tx.commit().await.unwrap();
            ids.push(id);
        }
        let report = check(&store, &secrets).await.unwrap();
        assert_eq!(report.certificates, 2);
        assert_eq!(report.differences, vec![], "agreement is silent");

        // As after restoring a secret-store backup older than the database's: one
        // certificate's secrets are gone; and a version newer than the other's pin appears.
        memory
            .destroy(&format!("accounts/a/certificates/{}", ids[1]))
            .await
            .unwrap();
        secrets
            .put_certificate("a", ids[0], &material, &WriteId::new())
            .await
            .unwrap();
        let report = check(&store, &secrets).await.unwrap();
        let named: Vec<(&str, i64)> = report
            .differences
            .iter()
            .map(|d| (d.name.as_str(), d.id))
            .collect();
        assert_eq!(named, [("kept", ids[0]), ("lost", ids[1])], "{report:?}");
        assert!(report.differences[0].problem.contains("newer"));
        assert!(report.differences[1].problem.contains("no version 1"));
        // Never a secret in a report.
        let text = serde_json::to_string(&report).unwrap();
        assert!(!text.contains("PRIVATE-KEY-OF-THE-TEST") && !text.contains("CHAIN-PEM"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
