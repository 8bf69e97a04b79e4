//! Offboarding: everything an account has, gone in one transaction.

use sqlx::Row;

use super::{now, Store, StoreError};

/// What [`Store::offboard_account`] removed, and the ids whose secrets the caller destroys
/// (every row the account ever had, deleted ones included: destroying is idempotent, and a
/// secret a failed earlier delete left behind goes too).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Offboarded {
    pub certificates: u64,
    pub mappings: u64,
    pub credentials: u64,
    pub users: u64,
    pub app_keys: u64,
    pub egress_hosts: u64,
    pub certificate_ids: Vec<i64>,
    pub credential_ids: Vec<i64>,
    pub app_key_ids: Vec<i64>,
}

impl Store {
    /// Marks every live row of `account` deleted (AppKeys revoked), drops its egress list,
    /// settings and waiting authorizations, under the account's lock: after the commit no
    /// token, AppKey, mapping or certificate of the account works on any control plane.
    pub async fn offboard_account(&self, account: &str) -> Result<Offboarded, StoreError> {
        let mut tx = self.begin_write(account).await?;
        let mut out = Offboarded::default();
        for (table, ids) in [
            ("certificates", &mut out.certificate_ids),
            ("credentials", &mut out.credential_ids),
            ("appkeys", &mut out.app_key_ids),
        ] {
            *ids = sqlx::query(tx.sql(&format!(
                "SELECT id FROM {table} WHERE account = ? ORDER BY id"
            )))
            .bind(account)
            .fetch_all(tx.conn())
            .await?
            .iter()
            .map(|r| r.try_get::<i64, _>("id"))
            .collect::<Result<_, _>>()?;
        }
        let t = now();
        // Mappings first: they reference certificates and credentials.
        for (table, count) in [
            ("mappings", &mut out.mappings),
            ("certificates", &mut out.certificates),
            ("credentials", &mut out.credentials),
            ("users", &mut out.users),
        ] {
            *count = sqlx::query(tx.sql(&format!(
                "UPDATE {table} SET deleted = 1, updated_at = ? WHERE account = ? AND deleted = 0"
            )))
            .bind(t)
            .bind(account)
            .execute(tx.conn())
            .await?
            .rows_affected();
        }
        out.app_keys = sqlx::query(
            tx.sql("UPDATE appkeys SET revoked_at = ? WHERE account = ? AND revoked_at IS NULL"),
        )
        .bind(t)
        .bind(account)
        .execute(tx.conn())
        .await?
        .rows_affected();
        out.egress_hosts = sqlx::query(tx.sql("DELETE FROM egress_hosts WHERE account = ?"))
            .bind(account)
            .execute(tx.conn())
            .await?
            .rows_affected();
        for table in ["account_settings", "oauth_pending"] {
            sqlx::query(tx.sql(&format!("DELETE FROM {table} WHERE account = ?")))
                .bind(account)
                .execute(tx.conn())
                .await?;
        }
        tx.commit().await?;
        Ok(out)
    }
}
