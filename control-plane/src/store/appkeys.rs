//! AppKey rows: public identifiers only (secrets live in Vault).

use sqlx::sqlite::SqliteRow;
use sqlx::{Row, Sqlite, Transaction};

use super::{now, Store, StoreError};

/// An AppKey as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppKeyRow {
    pub id: i64,
    pub account: String,
    pub consumer_key: String,
    pub access_token: String,
    pub privileges: Vec<String>,
    pub created_by: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

const COLUMNS: &str =
    "id, account, consumer_key, access_token, privileges, created_by, created_at, revoked_at";

fn from_row(r: &SqliteRow) -> Result<AppKeyRow, sqlx::Error> {
    let privileges: String = r.try_get("privileges")?;
    Ok(AppKeyRow {
        id: r.try_get("id")?,
        account: r.try_get("account")?,
        consumer_key: r.try_get("consumer_key")?,
        access_token: r.try_get("access_token")?,
        privileges: serde_json::from_str(&privileges)
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

impl Store {
    /// The account's AppKeys that are not revoked.
    pub async fn appkeys(&self, account: &str) -> Result<Vec<AppKeyRow>, StoreError> {
        self.fetch_rows(
            sqlx::query(&format!(
            "SELECT {COLUMNS} FROM appkeys WHERE account = ? AND revoked_at IS NULL ORDER BY id"
        ))
            .bind(account),
            from_row,
        )
        .await
    }

    /// Every live AppKey of every account (for the gateway's snapshot).
    pub async fn all_appkeys(&self) -> Result<Vec<AppKeyRow>, StoreError> {
        self.fetch_rows(
            sqlx::query(&format!(
                "SELECT {COLUMNS} FROM appkeys WHERE revoked_at IS NULL ORDER BY id"
            )),
            from_row,
        )
        .await
    }

    pub async fn insert_appkey(
        tx: &mut Transaction<'_, Sqlite>,
        account: &str,
        consumer_key: &str,
        access_token: &str,
        privileges: &[String],
        created_by: &str,
    ) -> Result<AppKeyRow, StoreError> {
        let privileges = serde_json::to_string(privileges).unwrap_or_else(|_| "[]".into());
        let row = sqlx::query(&format!(
            "INSERT INTO appkeys (account, consumer_key, access_token, privileges, created_by, created_at) \
             VALUES (?, ?, ?, ?, ?, ?) RETURNING {COLUMNS}"
        ))
        .bind(account)
        .bind(consumer_key)
        .bind(access_token)
        .bind(privileges)
        .bind(created_by)
        .bind(now())
        .fetch_one(&mut **tx)
        .await?;
        Ok(from_row(&row)?)
    }

    /// Revokes; false when there was no such live AppKey.
    pub async fn revoke_appkey(
        tx: &mut Transaction<'_, Sqlite>,
        account: &str,
        id: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE appkeys SET revoked_at = ? WHERE account = ? AND id = ? AND revoked_at IS NULL",
        )
        .bind(now())
        .bind(account)
        .bind(id)
        .execute(&mut **tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
