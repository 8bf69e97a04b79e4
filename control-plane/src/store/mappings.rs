//! Mapping rows: (account, service, url) → certificate.

use mtlsgate_filter::service::Service;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{flag, now, opt_text, text, SoftDeleted, Store, StoreError, Tx};

/// A mapping as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingRow {
    pub id: i64,
    pub account: String,
    pub name: String,
    pub service: Service,
    pub url: String,
    pub certificate_id: i64,
    pub enabled: bool,
    pub deleted: bool,
    /// PEM bundle to verify the target's server certificate with, instead of the system
    /// trust store.
    pub ca_certificates: Option<String>,
    /// The credential whose `Authorization` header goes with every forward.
    pub credential_id: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A validated mapping to insert.
#[derive(Debug, Clone)]
pub struct NewMapping {
    pub name: String,
    pub service: Service,
    pub url: String,
    pub certificate_id: i64,
    pub enabled: bool,
    pub ca_certificates: Option<String>,
    pub credential_id: Option<i64>,
}

const COLUMNS: &str =
    "id, account, name, service_id, url, certificate_id, enabled, deleted, ca_certificates, \
    credential_id, created_at, updated_at";

fn from_row(r: &AnyRow) -> Result<MappingRow, sqlx::Error> {
    let service_id: i64 = r.try_get("service_id")?;
    let service = u8::try_from(service_id)
        .ok()
        .and_then(|id| Service::from_id(id).ok())
        .ok_or_else(|| sqlx::Error::Decode(format!("unknown service id {service_id}").into()))?;
    Ok(MappingRow {
        id: r.try_get("id")?,
        account: text(r, "account")?,
        name: text(r, "name")?,
        service,
        url: text(r, "url")?,
        certificate_id: r.try_get("certificate_id")?,
        enabled: flag(r, "enabled")?,
        deleted: flag(r, "deleted")?,
        ca_certificates: opt_text(r, "ca_certificates")?,
        credential_id: r.try_get("credential_id")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

impl Store {
    /// The account's live mappings, oldest first.
    pub async fn mappings(&self, account: &str) -> Result<Vec<MappingRow>, StoreError> {
        self.fetch_rows(
            sqlx::query(self.sql(&format!(
                "SELECT {COLUMNS} FROM mappings WHERE account = ? AND deleted = 0 ORDER BY id"
            )))
            .bind(account),
            from_row,
        )
        .await
    }

    /// Every enabled, live mapping of every account: what the gateway serves.
    pub async fn enabled_mappings(&self) -> Result<Vec<MappingRow>, StoreError> {
        self.fetch_rows(
            sqlx::query(self.sql(&format!(
                "SELECT {COLUMNS} FROM mappings WHERE enabled = 1 AND deleted = 0 ORDER BY id"
            ))),
            from_row,
        )
        .await
    }

    /// Live, enabled mappings that use a certificate.
    pub async fn mappings_using(
        tx: &mut Tx,
        account: &str,
        certificate_id: i64,
    ) -> Result<Vec<MappingRow>, StoreError> {
        let rows = sqlx::query(tx.sql(&format!(
            "SELECT {COLUMNS} FROM mappings WHERE account = ? AND certificate_id = ? AND enabled = 1 AND deleted = 0 ORDER BY id"
        )))
        .bind(account)
        .bind(certificate_id)
        .fetch_all(tx.conn())
        .await?;
        Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
    }

    /// The live mapping of the account with this name, if any.
    pub async fn mapping_named(
        tx: &mut Tx,
        account: &str,
        name: &str,
    ) -> Result<Option<MappingRow>, StoreError> {
        let row = sqlx::query(tx.sql(&format!(
            "SELECT {COLUMNS} FROM mappings WHERE account = ? AND name = ? AND deleted = 0"
        )))
        .bind(account)
        .bind(name)
        .fetch_optional(tx.conn())
        .await?;
        Ok(row.as_ref().map(from_row).transpose()?)
    }

    /// The live mapping of the account for this triplet, if any.
    pub async fn mapping_for(
        tx: &mut Tx,
        account: &str,
        service: Service,
        url: &str,
    ) -> Result<Option<MappingRow>, StoreError> {
        let row = sqlx::query(tx.sql(&format!(
            "SELECT {COLUMNS} FROM mappings WHERE account = ? AND service_id = ? AND url = ? AND deleted = 0"
        )))
        .bind(account)
        .bind(i64::from(service.id()))
        .bind(url)
        .fetch_optional(tx.conn())
        .await?;
        Ok(row.as_ref().map(from_row).transpose()?)
    }

    pub async fn insert_mapping(
        tx: &mut Tx,
        account: &str,
        m: &NewMapping,
    ) -> Result<MappingRow, StoreError> {
        let t = now();
        let id = tx
            .insert_id(
                "INSERT INTO mappings (account, name, service_id, url, certificate_id, enabled, \
                 ca_certificates, credential_id, created_at, updated_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                |q| {
                    q.bind(account)
                        .bind(&m.name)
                        .bind(i64::from(m.service.id()))
                        .bind(&m.url)
                        .bind(m.certificate_id)
                        .bind(i64::from(m.enabled))
                        .bind(&m.ca_certificates)
                        .bind(m.credential_id)
                        .bind(t)
                        .bind(t)
                },
            )
            .await?;
        Store::mapping_in(tx, account, id)
            .await?
            .ok_or_else(|| sqlx::Error::RowNotFound.into())
    }

    /// A live mapping of the account, read inside a write transaction.
    async fn mapping_in(
        tx: &mut Tx,
        account: &str,
        id: i64,
    ) -> Result<Option<MappingRow>, StoreError> {
        let row = sqlx::query(tx.sql(&format!(
            "SELECT {COLUMNS} FROM mappings WHERE account = ? AND id = ? AND deleted = 0"
        )))
        .bind(account)
        .bind(id)
        .fetch_optional(tx.conn())
        .await?;
        Ok(row.as_ref().map(from_row).transpose()?)
    }

    /// Bumps the account's mapping revision (its `ac-revision`) and answers the new value.
    pub async fn bump_revision(tx: &mut Tx, account: &str) -> Result<i64, StoreError> {
        let upsert = tx
            .dialect()
            .upsert_increment("account_revisions", "account", "revision", &[]);
        sqlx::query(tx.sql(&upsert))
            .bind(account)
            .bind(1i64)
            .execute(tx.conn())
            .await?;
        // The row is ours (locked) until the commit: this reads the value just written.
        Store::revision_in(tx, account).await
    }

    /// The account's current mapping revision (0 before any change).
    pub async fn revision(&self, account: &str) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar(
                self.sql("SELECT revision FROM account_revisions WHERE account = ?"),
            )
            .bind(account)
            .fetch_optional(self.pool())
            .await?
            .unwrap_or(0),
        )
    }
}

impl Store {
    /// A live mapping of the account.
    pub async fn mapping(&self, account: &str, id: i64) -> Result<Option<MappingRow>, StoreError> {
        let row = sqlx::query(self.sql(&format!(
            "SELECT {COLUMNS} FROM mappings WHERE account = ? AND id = ? AND deleted = 0"
        )))
        .bind(account)
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(from_row).transpose()?)
    }

    pub async fn update_mapping(
        tx: &mut Tx,
        account: &str,
        id: i64,
        m: &NewMapping,
    ) -> Result<Option<MappingRow>, StoreError> {
        let done = sqlx::query(tx.sql(
            "UPDATE mappings SET name = ?, service_id = ?, url = ?, certificate_id = ?, enabled = ?, \
             ca_certificates = ?, credential_id = ?, updated_at = ? WHERE account = ? AND id = ? AND deleted = 0",
        ))
        .bind(&m.name)
        .bind(i64::from(m.service.id()))
        .bind(&m.url)
        .bind(m.certificate_id)
        .bind(i64::from(m.enabled))
        .bind(&m.ca_certificates)
        .bind(m.credential_id)
        .bind(now())
        .bind(account)
        .bind(id)
        .execute(tx.conn())
        .await?;
        if done.rows_affected() != 1 {
            return Ok(None);
        }
        Store::mapping_in(tx, account, id).await
    }

    /// Marks a mapping deleted; false when there was no such live mapping.
    pub async fn delete_mapping(tx: &mut Tx, account: &str, id: i64) -> Result<bool, StoreError> {
        Store::mark_deleted(tx, SoftDeleted::Mappings, account, id).await
    }

    /// The account's revision, read inside a write transaction.
    pub async fn revision_in(tx: &mut Tx, account: &str) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar(tx.sql("SELECT revision FROM account_revisions WHERE account = ?"))
                .bind(account)
                .fetch_optional(tx.conn())
                .await?
                .unwrap_or(0),
        )
    }
}
