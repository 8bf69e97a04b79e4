//! Certificate rows.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{flag, now, opt_text, text, SoftDeleted, Store, StoreError, Tx};
use crate::certinfo::CertInfo;

/// A certificate's metadata as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateRow {
    pub id: i64,
    pub account: String,
    pub name: String,
    pub display_name: String,
    pub deleted: bool,
    pub info: CertInfo,
    /// The Vault KV version that holds this certificate's material; 0 before the first write.
    pub vault_version: u64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// What a create or update writes.
#[derive(Debug, Clone)]
pub struct NewCertificate<'a> {
    pub account: &'a str,
    pub name: &'a str,
    pub display_name: &'a str,
    pub info: &'a CertInfo,
}

const COLUMNS: &str = "id, account, name, display_name, deleted, subject, issuer, serial_number, \
    not_before, not_after, sha256_fingerprint, key_algorithm, key_size, vault_version, created_at, updated_at";

fn from_row(r: &AnyRow) -> Result<CertificateRow, sqlx::Error> {
    Ok(CertificateRow {
        id: r.try_get("id")?,
        account: text(r, "account")?,
        name: text(r, "name")?,
        display_name: text(r, "display_name")?,
        deleted: flag(r, "deleted")?,
        info: CertInfo {
            subject: text(r, "subject")?,
            issuer: text(r, "issuer")?,
            serial_number: text(r, "serial_number")?,
            not_before: r.try_get("not_before")?,
            not_after: r.try_get("not_after")?,
            sha256_fingerprint: text(r, "sha256_fingerprint")?,
            key_algorithm: text(r, "key_algorithm")?,
            key_size: u32::try_from(r.try_get::<i64, _>("key_size")?)
                .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        },
        vault_version: u64::try_from(r.try_get::<i64, _>("vault_version")?)
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

impl Store {
    /// A live (not deleted) certificate of the account.
    pub async fn certificate(
        &self,
        account: &str,
        id: i64,
    ) -> Result<Option<CertificateRow>, StoreError> {
        let row = sqlx::query(self.sql(&format!(
            "SELECT {COLUMNS} FROM certificates WHERE account = ? AND id = ? AND deleted = 0"
        )))
        .bind(account)
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(from_row).transpose()?)
    }

    /// The account's live certificates, oldest first.
    pub async fn certificates(&self, account: &str) -> Result<Vec<CertificateRow>, StoreError> {
        self.fetch_rows(
            sqlx::query(self.sql(&format!(
                "SELECT {COLUMNS} FROM certificates WHERE account = ? AND deleted = 0 ORDER BY id"
            )))
            .bind(account),
            from_row,
        )
        .await
    }

    /// Every live certificate of every account.
    pub async fn all_certificates(&self) -> Result<Vec<CertificateRow>, StoreError> {
        self.fetch_rows(
            sqlx::query(self.sql(&format!(
                "SELECT {COLUMNS} FROM certificates WHERE deleted = 0 ORDER BY id"
            ))),
            from_row,
        )
        .await
    }

    /// The id of a live certificate of the account with this name.
    pub async fn certificate_named(
        tx: &mut Tx,
        account: &str,
        name: &str,
    ) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            tx.sql("SELECT id FROM certificates WHERE account = ? AND name = ? AND deleted = 0"),
        )
        .bind(account)
        .bind(name)
        .fetch_optional(tx.conn())
        .await?)
    }

    pub async fn insert_certificate(
        tx: &mut Tx,
        c: &NewCertificate<'_>,
    ) -> Result<i64, StoreError> {
        let t = now();
        let id = tx
            .insert_id(
                "INSERT INTO certificates (account, name, display_name, subject, issuer, serial_number, \
                 not_before, not_after, sha256_fingerprint, key_algorithm, key_size, created_at, updated_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                |q| {
                    q.bind(c.account)
                        .bind(c.name)
                        .bind(c.display_name)
                        .bind(&c.info.subject)
                        .bind(&c.info.issuer)
                        .bind(&c.info.serial_number)
                        .bind(c.info.not_before)
                        .bind(c.info.not_after)
                        .bind(&c.info.sha256_fingerprint)
                        .bind(&c.info.key_algorithm)
                        .bind(i64::from(c.info.key_size))
                        .bind(t)
                        .bind(t)
                },
            )
            .await?;
        Ok(id)
    }

    /// Writes new metadata; false when the account has no such live certificate.
    pub async fn update_certificate(
        tx: &mut Tx,
        id: i64,
        c: &NewCertificate<'_>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(tx.sql("UPDATE certificates SET name = ?, display_name = ?, subject = ?, issuer = ?, serial_number = ?, \
             not_before = ?, not_after = ?, sha256_fingerprint = ?, key_algorithm = ?, key_size = ?, \
             updated_at = ? WHERE id = ? AND account = ? AND deleted = 0",
        ))
        .bind(c.name)
        .bind(c.display_name)
        .bind(&c.info.subject)
        .bind(&c.info.issuer)
        .bind(&c.info.serial_number)
        .bind(c.info.not_before)
        .bind(c.info.not_after)
        .bind(&c.info.sha256_fingerprint)
        .bind(&c.info.key_algorithm)
        .bind(i64::from(c.info.key_size))
        .bind(now())
        .bind(id)
        .bind(c.account)
        .execute(tx.conn())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Pins the row to the Vault version the API just wrote (`write_id` is that version's
    /// mark), in the transaction that commits the write: until it commits, the row keeps
    /// naming the version before, and the gateway keeps presenting it.
    pub async fn set_vault_version(
        tx: &mut Tx,
        id: i64,
        version: u64,
        write_id: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            tx.sql("UPDATE certificates SET vault_version = ?, vault_write_id = ? WHERE id = ?"),
        )
        .bind(version as i64)
        .bind(write_id)
        .bind(id)
        .execute(tx.conn())
        .await?;
        Ok(())
    }

    /// The mark of the API write that made the version a live certificate's row pins
    /// (`None`: an operator's version, or one from before marks existed), with that version.
    pub async fn certificate_pin(
        &self,
        id: i64,
    ) -> Result<Option<(u64, Option<String>)>, StoreError> {
        let row = sqlx::query(self.sql(
            "SELECT vault_version, vault_write_id FROM certificates WHERE id = ? AND deleted = 0",
        ))
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row
            .map(|r| {
                Ok::<_, sqlx::Error>((
                    u64::try_from(r.try_get::<i64, _>("vault_version")?)
                        .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
                    opt_text(&r, "vault_write_id")?,
                ))
            })
            .transpose()?)
    }

    /// [`Store::certificate_pin`], read inside a write transaction (under the account's lock).
    pub async fn certificate_pin_in(
        tx: &mut Tx,
        id: i64,
    ) -> Result<Option<(u64, Option<String>)>, StoreError> {
        let row = sqlx::query(tx.sql(
            "SELECT vault_version, vault_write_id FROM certificates WHERE id = ? AND deleted = 0",
        ))
        .bind(id)
        .fetch_optional(tx.conn())
        .await?;
        Ok(row
            .map(|r| {
                Ok::<_, sqlx::Error>((
                    u64::try_from(r.try_get::<i64, _>("vault_version")?)
                        .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
                    opt_text(&r, "vault_write_id")?,
                ))
            })
            .transpose()?)
    }

    /// Adopts a version an operator wrote directly in Vault: re-pins the row from `from` to
    /// `to` (with `to`'s mark, if it kept one), only if the row still pins `from`
    /// (compare-and-set: an API write committed meanwhile wins, and the next watch looks
    /// again). Answers whether the row was re-pinned.
    pub async fn adopt_vault_version(
        &self,
        id: i64,
        from: u64,
        to: u64,
        write_id: Option<&str>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(self.sql(
            "UPDATE certificates SET vault_version = ?, vault_write_id = ?, updated_at = ? \
             WHERE id = ? AND vault_version = ? AND deleted = 0",
        ))
        .bind(to as i64)
        .bind(write_id)
        .bind(now())
        .bind(id)
        .bind(from as i64)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Marks the certificate deleted. The caller checks for mappings first.
    pub async fn mark_certificate_deleted(
        tx: &mut Tx,
        account: &str,
        id: i64,
    ) -> Result<bool, StoreError> {
        Store::mark_deleted(tx, SoftDeleted::Certificates, account, id).await
    }
}
