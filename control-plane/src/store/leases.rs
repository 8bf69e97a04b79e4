//! Leases: exactly one control plane at a time does a piece of work (see migration 0009).

use super::{Store, StoreError};

impl Store {
    /// Takes (or keeps) the lease `name` for `holder` for `ttl_secs` seconds of the
    /// database's clock: true when `holder` has it now — it was free, expired, or already
    /// `holder`'s. One statement, so two control planes asking at once cannot both get it.
    pub async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        ttl_secs: i64,
    ) -> Result<bool, StoreError> {
        let d = self.dialect();
        let insert = d.insert_missing("leases", &["name", "holder", "expires_at"]);
        sqlx::query(self.sql(&insert))
            .bind(name)
            .bind("")
            .bind(0i64)
            .execute(self.pool())
            .await?;
        let now = d.unix_now();
        let take = format!(
            "UPDATE leases SET holder = ?, expires_at = {now} + ? \
             WHERE name = ? AND (holder = ? OR expires_at < {now})"
        );
        let done = sqlx::query(self.sql(&take))
            .bind(holder)
            .bind(ttl_secs)
            .bind(name)
            .bind(holder)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives the lease back, if `holder` has it, so another may take it at once.
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        sqlx::query(
            self.sql("UPDATE leases SET holder = '', expires_at = 0 WHERE name = ? AND holder = ?"),
        )
        .bind(name)
        .bind(holder)
        .execute(self.pool())
        .await?;
        Ok(())
    }
}
