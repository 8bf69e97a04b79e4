//! AppKey rows: public identifiers only (secrets live in Vault).

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{now, text, Store, StoreError, Tx};

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

fn from_row(r: &AnyRow) -> Result<AppKeyRow, sqlx::Error> {
    let privileges = text(r, "privileges")?;
    Ok(AppKeyRow {
        id: r.try_get("id")?,
        account: text(r, "account")?,
        consumer_key: text(r, "consumer_key")?,
        access_token: text(r, "access_token")?,
        privileges: serde_json::from_str(&privileges)
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        created_by: text(r, "created_by")?,
        created_at: r.try_get("created_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

impl Store {
    /// The account's AppKeys that are not revoked.
    pub async fn appkeys(&self, account: &str) -> Result<Vec<AppKeyRow>, StoreError> {
        self.fetch_rows(
            sqlx::query(self.sql(&format!(
            "SELECT {COLUMNS} FROM appkeys WHERE account = ? AND revoked_at IS NULL ORDER BY id"
        )))
            .bind(account),
            from_row,
        )
        .await
    }

    /// Every live AppKey of every account (for the gateway's snapshot).
    pub async fn all_appkeys(&self) -> Result<Vec<AppKeyRow>, StoreError> {
        self.fetch_rows(
            sqlx::query(self.sql(&format!(
                "SELECT {COLUMNS} FROM appkeys WHERE revoked_at IS NULL ORDER BY id"
            ))),
            from_row,
        )
        .await
    }

    pub async fn insert_appkey(
        tx: &mut Tx,
        account: &str,
        consumer_key: &str,
        access_token: &str,
        privileges: &[String],
        created_by: &str,
    ) -> Result<AppKeyRow, StoreError> {
        let privileges = serde_json::to_string(privileges).unwrap_or_else(|_| "[]".into());
        let id = tx
            .insert_id(
                "INSERT INTO appkeys (account, consumer_key, access_token, privileges, created_by, created_at) \
                 VALUES (?, ?, ?, ?, ?, ?)",
                |q| {
                    q.bind(account)
                        .bind(consumer_key)
                        .bind(access_token)
                        .bind(privileges)
                        .bind(created_by)
                        .bind(now())
                },
            )
            .await?;
        let row = sqlx::query(tx.sql(&format!("SELECT {COLUMNS} FROM appkeys WHERE id = ?")))
            .bind(id)
            .fetch_one(tx.conn())
            .await?;
        Ok(from_row(&row)?)
    }

    /// Revokes; false when there was no such live AppKey.
    pub async fn revoke_appkey(tx: &mut Tx, account: &str, id: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(tx.sql(
            "UPDATE appkeys SET revoked_at = ? WHERE account = ? AND id = ? AND revoked_at IS NULL",
        ))
        .bind(now())
        .bind(account)
        .bind(id)
        .execute(tx.conn())
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
