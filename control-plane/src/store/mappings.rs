//! Mapping rows: (account, service, url) → certificate.

use mtlsgate_filter::service::Service;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, Sqlite, Transaction};

use super::{now, SoftDeleted, Store, StoreError};

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

fn from_row(r: &SqliteRow) -> Result<MappingRow, sqlx::Error> {
    let service_id: i64 = r.try_get("service_id")?;
    let service = u8::try_from(service_id)
        .ok()
        .and_then(|id| Service::from_id(id).ok())
        .ok_or_else(|| sqlx::Error::Decode(format!("unknown service id {service_id}").into()))?;
    Ok(MappingRow {
        id: r.try_get("id")?,
        account: r.try_get("account")?,
        name: r.try_get("name")?,
        service,
        url: r.try_get("url")?,
        certificate_id: r.try_get("certificate_id")?,
        enabled: r.try_get("enabled")?,
        deleted: r.try_get("deleted")?,
        ca_certificates: r.try_get("ca_certificates")?,
        credential_id: r.try_get("credential_id")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

impl Store {
    /// The account's live mappings, oldest first.
    pub async fn mappings(&self, account: &str) -> Result<Vec<MappingRow>, StoreError> {
        self.fetch_rows(
            sqlx::query(&format!(
                "SELECT {COLUMNS} FROM mappings WHERE account = ? AND deleted = 0 ORDER BY id"
            ))
            .bind(account),
            from_row,
        )
        .await
    }

    /// Every enabled, live mapping of every account: what the gateway serves.
    pub async fn enabled_mappings(&self) -> Result<Vec<MappingRow>, StoreError> {
        self.fetch_rows(
            sqlx::query(&format!(
                "SELECT {COLUMNS} FROM mappings WHERE enabled = 1 AND deleted = 0 ORDER BY id"
            )),
            from_row,
        )
        .await
    }

    /// Live, enabled mappings that use a certificate.
    pub async fn mappings_using(
        tx: &mut Transaction<'_, Sqlite>,
        account: &str,
        certificate_id: i64,
    ) -> Result<Vec<MappingRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM mappings WHERE account = ? AND certificate_id = ? AND enabled = 1 AND deleted = 0 ORDER BY id"
        ))
        .bind(account)
        .bind(certificate_id)
        .fetch_all(&mut **tx)
        .await?;
        Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
    }

    /// The live mapping of the account with this name, if any.
    pub async fn mapping_named(
        tx: &mut Transaction<'_, Sqlite>,
        account: &str,
        name: &str,
    ) -> Result<Option<MappingRow>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM mappings WHERE account = ? AND name = ? AND deleted = 0"
        ))
        .bind(account)
        .bind(name)
        .fetch_optional(&mut **tx)
        .await?;
        Ok(row.as_ref().map(from_row).transpose()?)
    }

    /// The live mapping of the account for this triplet, if any.
    pub async fn mapping_for(
        tx: &mut Transaction<'_, Sqlite>,
        account: &str,
        service: Service,
        url: &str,
    ) -> Result<Option<MappingRow>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM mappings WHERE account = ? AND service_id = ? AND url = ? AND deleted = 0"
        ))
        .bind(account)
        .bind(i64::from(service.id()))
        .bind(url)
        .fetch_optional(&mut **tx)
        .await?;
        Ok(row.as_ref().map(from_row).transpose()?)
    }

    pub async fn insert_mapping(
        tx: &mut Transaction<'_, Sqlite>,
        account: &str,
        m: &NewMapping,
    ) -> Result<MappingRow, StoreError> {
        let t = now();
        let row = sqlx::query(&format!(
            "INSERT INTO mappings (account, name, service_id, url, certificate_id, enabled, ca_certificates, \
             credential_id, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING {COLUMNS}"
        ))
        .bind(account)
        .bind(&m.name)
        .bind(i64::from(m.service.id()))
        .bind(&m.url)
        .bind(m.certificate_id)
        .bind(m.enabled)
        .bind(&m.ca_certificates)
        .bind(m.credential_id)
        .bind(t)
        .bind(t)
        .fetch_one(&mut **tx)
        .await?;
        Ok(from_row(&row)?)
    }

    /// Bumps the account's mapping revision (its `ac-revision`) and answers the new value.
    pub async fn bump_revision(
        tx: &mut Transaction<'_, Sqlite>,
        account: &str,
    ) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "INSERT INTO account_revisions (account, revision) VALUES (?, 1) \
             ON CONFLICT (account) DO UPDATE SET revision = revision + 1 RETURNING revision",
        )
        .bind(account)
        .fetch_one(&mut **tx)
        .await?)
    }

    /// The account's current mapping revision (0 before any change).
    pub async fn revision(&self, account: &str) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT revision FROM account_revisions WHERE account = ?")
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
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM mappings WHERE account = ? AND id = ? AND deleted = 0"
        ))
        .bind(account)
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(from_row).transpose()?)
    }

    pub async fn update_mapping(
        tx: &mut Transaction<'_, Sqlite>,
        account: &str,
        id: i64,
        m: &NewMapping,
    ) -> Result<Option<MappingRow>, StoreError> {
        let row = sqlx::query(&format!(
            "UPDATE mappings SET name = ?, service_id = ?, url = ?, certificate_id = ?, enabled = ?, \
             ca_certificates = ?, credential_id = ?, updated_at = ? WHERE account = ? AND id = ? AND deleted = 0 \
             RETURNING {COLUMNS}"
        ))
        .bind(&m.name)
        .bind(i64::from(m.service.id()))
        .bind(&m.url)
        .bind(m.certificate_id)
        .bind(m.enabled)
        .bind(&m.ca_certificates)
        .bind(m.credential_id)
        .bind(now())
        .bind(account)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
        Ok(row.as_ref().map(from_row).transpose()?)
    }

    /// Marks a mapping deleted; false when there was no such live mapping.
    pub async fn delete_mapping(
        tx: &mut Transaction<'_, Sqlite>,
        account: &str,
        id: i64,
    ) -> Result<bool, StoreError> {
        Store::mark_deleted(&mut **tx, SoftDeleted::Mappings, account, id).await
    }

    /// The account's revision, read inside a write transaction.
    pub async fn revision_in(
        tx: &mut Transaction<'_, Sqlite>,
        account: &str,
    ) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT revision FROM account_revisions WHERE account = ?")
                .bind(account)
                .fetch_optional(&mut **tx)
                .await?
                .unwrap_or(0),
        )
    }
}
