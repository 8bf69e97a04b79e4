//! Credential rows: kind and public settings (secrets live in the secret store).

use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{now, text, SoftDeleted, Store, StoreError, Tx};
use crate::credential_kind::{CredentialKind, CredentialSettings};

/// A credential as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct CredentialRow {
    pub id: i64,
    pub account: String,
    pub name: String,
    /// Its public settings, which say its kind.
    pub settings: CredentialSettings,
    /// The secret store version that holds its secrets (`0`: a row from before rows pinned
    /// their version, which reads the newest).
    pub secret_version: u64,
    pub created_at: i64,
    pub updated_at: i64,
}

impl CredentialRow {
    pub(crate) fn kind(&self) -> CredentialKind {
        self.settings.kind()
    }
}

/// A row's `kind` and `settings` columns, read as the typed settings they must be.
fn settings(kind: &str, json: &str) -> Result<CredentialSettings, sqlx::Error> {
    let kind = CredentialKind::parse(kind)
        .ok_or_else(|| sqlx::Error::Decode(format!("unknown credential kind {kind:?}").into()))?;
    let json: Value = serde_json::from_str(json).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    CredentialSettings::from_json(kind, json).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

const COLUMNS: &str = "id, account, name, kind, settings, secret_version, created_at, updated_at";

fn from_row(r: &AnyRow) -> Result<CredentialRow, sqlx::Error> {
    let kind = text(r, "kind")?;
    let json = text(r, "settings")?;
    Ok(CredentialRow {
        id: r.try_get("id")?,
        account: text(r, "account")?,
        name: text(r, "name")?,
        settings: settings(&kind, &json)?,
        secret_version: u64::try_from(r.try_get::<i64, _>("secret_version")?)
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

impl Store {
    pub async fn credentials(&self, account: &str) -> Result<Vec<CredentialRow>, StoreError> {
        self.fetch_rows(
            sqlx::query(self.sql(&format!(
                "SELECT {COLUMNS} FROM credentials WHERE account = ? AND deleted = 0 ORDER BY id"
            )))
            .bind(account),
            from_row,
        )
        .await
    }

    /// Every live credential of every account, oldest first.
    pub async fn all_credentials(&self) -> Result<Vec<CredentialRow>, StoreError> {
        self.fetch_rows(
            sqlx::query(self.sql(&format!(
                "SELECT {COLUMNS} FROM credentials WHERE deleted = 0 ORDER BY id"
            ))),
            from_row,
        )
        .await
    }

    pub async fn credential(
        &self,
        account: &str,
        id: i64,
    ) -> Result<Option<CredentialRow>, StoreError> {
        let row = sqlx::query(self.sql(&format!(
            "SELECT {COLUMNS} FROM credentials WHERE account = ? AND id = ? AND deleted = 0"
        )))
        .bind(account)
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(from_row).transpose()?)
    }

    /// Every live credential used by an enabled mapping (for the gateway).
    pub async fn attached_credentials(&self) -> Result<Vec<CredentialRow>, StoreError> {
        self.fetch_rows(sqlx::query(self.sql(&format!(
            "SELECT {COLUMNS} FROM credentials WHERE deleted = 0 AND id IN \
             (SELECT credential_id FROM mappings WHERE deleted = 0 AND enabled = 1 AND credential_id IS NOT NULL)"
        ))), from_row).await
    }

    /// Every live credential whose kind needs access tokens (OAuth 2.0, Transfer to
    /// Messaging), in every account: what [`crate::credential_tokens`] keeps current.
    pub async fn token_credentials(&self) -> Result<Vec<CredentialRow>, StoreError> {
        let kinds: Vec<CredentialKind> = CredentialKind::ALL
            .into_iter()
            .filter(|k| k.needs_tokens())
            .collect();
        let marks = vec!["?"; kinds.len()].join(", ");
        let sql = format!(
            "SELECT {COLUMNS} FROM credentials WHERE deleted = 0 AND kind IN ({marks}) ORDER BY id"
        );
        let mut query = sqlx::query(self.sql(&sql));
        for k in kinds {
            query = query.bind(k.as_str());
        }
        self.fetch_rows(query, from_row).await
    }

    /// The id of another live credential of the account with this name, or of the account's
    /// Consumer Pre-Authentication credential when `kind` is that.
    pub async fn credential_clash(
        tx: &mut Tx,
        account: &str,
        name: &str,
        kind: CredentialKind,
        except: Option<i64>,
    ) -> Result<Option<(i64, &'static str)>, StoreError> {
        let by_name: Option<i64> = sqlx::query_scalar(tx.sql("SELECT id FROM credentials WHERE account = ? AND name = ? AND deleted = 0 AND (? IS NULL OR id <> ?)",
        ))
        .bind(account)
        .bind(name)
        .bind(except)
        .bind(except)
        .fetch_optional(tx.conn())
        .await?;
        if let Some(id) = by_name {
            return Ok(Some((id, "duplicate_credential_name")));
        }
        if kind.one_per_account() {
            let existing: Option<i64> = sqlx::query_scalar(tx.sql("SELECT id FROM credentials WHERE account = ? AND kind = ? AND deleted = 0 AND (? IS NULL OR id <> ?)",
            ))
            .bind(account)
            .bind(kind.as_str())
            .bind(except)
            .bind(except)
            .fetch_optional(tx.conn())
            .await?;
            if let Some(id) = existing {
                return Ok(Some((id, "consumer_pre_authentication_exists")));
            }
        }
        Ok(None)
    }

    pub async fn insert_credential(
        tx: &mut Tx,
        account: &str,
        name: &str,
        settings: &CredentialSettings,
    ) -> Result<i64, StoreError> {
        let t = now();
        tx.insert_id(
            "INSERT INTO credentials (account, name, kind, settings, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?)",
            |q| {
                q.bind(account)
                    .bind(name)
                    .bind(settings.kind().as_str())
                    .bind(Value::Object(settings.to_json()).to_string())
                    .bind(t)
                    .bind(t)
            },
        )
        .await
    }

    pub async fn update_credential(
        tx: &mut Tx,
        account: &str,
        id: i64,
        name: &str,
        settings: &CredentialSettings,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(tx.sql("UPDATE credentials SET name = ?, kind = ?, settings = ?, updated_at = ? WHERE account = ? AND id = ? AND deleted = 0",
        ))
        .bind(name)
        .bind(settings.kind().as_str())
        .bind(Value::Object(settings.to_json()).to_string())
        .bind(now())
        .bind(account)
        .bind(id)
        .execute(tx.conn())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Pins the row to the secrets version the API just wrote, in the transaction that
    /// commits the write: until it commits, the row keeps naming the version before.
    pub async fn set_credential_secret_version(
        tx: &mut Tx,
        account: &str,
        id: i64,
        version: u64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            tx.sql("UPDATE credentials SET secret_version = ? WHERE account = ? AND id = ?"),
        )
        .bind(version as i64)
        .bind(account)
        .bind(id)
        .execute(tx.conn())
        .await?;
        Ok(())
    }

    /// Pins a row written before rows pinned their version (`secret_version` 0) to `version`,
    /// the newest in the secret store, before anything writes a newer one. Answers whether
    /// it did (false: pinned already, or gone).
    pub async fn pin_legacy_credential(
        &self,
        account: &str,
        id: i64,
        version: u64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(self.sql(
            "UPDATE credentials SET secret_version = ? \
             WHERE account = ? AND id = ? AND secret_version = 0 AND deleted = 0",
        ))
        .bind(version as i64)
        .bind(account)
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn delete_credential(
        tx: &mut Tx,
        account: &str,
        id: i64,
    ) -> Result<bool, StoreError> {
        Store::mark_deleted(tx, SoftDeleted::Credentials, account, id).await
    }

    /// Ids and names of live mappings that use a credential.
    pub async fn mappings_using_credential(
        tx: &mut Tx,
        account: &str,
        id: i64,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        let rows = sqlx::query(tx.sql("SELECT id, name FROM mappings WHERE account = ? AND credential_id = ? AND deleted = 0 ORDER BY id",
        ))
        .bind(account)
        .bind(id)
        .fetch_all(tx.conn())
        .await?;
        Ok(rows
            .iter()
            .map(|r| Ok((r.try_get("id")?, text(r, "name")?)))
            .collect::<Result<_, sqlx::Error>>()?)
    }
}
