//! Per-account settings.

use super::{now, text, Store, StoreError};

impl Store {
    /// Whether the account lets a caller's `LP-authorization-override` replace a credential
    /// attached to a mapping (default: no).
    pub async fn allows_authorization_override(&self, account: &str) -> Result<bool, StoreError> {
        let v: Option<i64> = sqlx::query_scalar(
            self.sql("SELECT allow_authorization_override FROM account_settings WHERE account = ?"),
        )
        .bind(account)
        .fetch_optional(self.pool())
        .await?;
        Ok(v == Some(1))
    }

    pub async fn set_authorization_override(
        &self,
        account: &str,
        allow: bool,
    ) -> Result<(), StoreError> {
        let _w = self.write_lock().await;
        let upsert = self.dialect().upsert(
            "account_settings",
            "account",
            &["allow_authorization_override", "updated_at"],
        );
        sqlx::query(self.sql(&upsert))
            .bind(account)
            .bind(i64::from(allow))
            .bind(now())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// The accounts that let the override win (for the desired state).
    pub async fn accounts_allowing_override(&self) -> Result<Vec<String>, StoreError> {
        self.fetch_rows(
            sqlx::query(self.sql(
                "SELECT account FROM account_settings WHERE allow_authorization_override = 1",
            )),
            |r| text(r, "account"),
        )
        .await
    }
}
