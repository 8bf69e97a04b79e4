//! Failed-login counters (see `identity::LoginPolicy` for what they allow).

use sqlx::Row;

use super::{Store, StoreError};

impl Store {
    /// The latest `locked_until` (Unix seconds) among `scopes`, if any is locked at `now`.
    pub async fn login_locked_until(
        &self,
        scopes: &[String],
        now: i64,
    ) -> Result<Option<i64>, StoreError> {
        let mut latest: Option<i64> = None;
        for scope in scopes {
            let row =
                sqlx::query(self.sql("SELECT locked_until FROM login_failures WHERE scope = ?"))
                    .bind(scope)
                    .fetch_optional(self.pool())
                    .await?;
            if let Some(r) = row {
                let until: i64 = r.try_get("locked_until")?;
                if until > now {
                    latest = Some(latest.map_or(until, |l| l.max(until)));
                }
            }
        }
        Ok(latest)
    }

    /// Counts a failure in `scope` (a new count when the last one is older than `window`
    /// seconds) and locks it until what `lock_for(failures)` says. Rows idle for longer than
    /// the window are dropped on the way, so the table stays small whatever is tried.
    /// Answers the new `locked_until` (0: not locked).
    pub async fn login_failed(
        &self,
        scope: &str,
        now: i64,
        window: i64,
        lock_for: impl Fn(i64) -> i64,
    ) -> Result<i64, StoreError> {
        let _w = self.write_lock().await;
        let stale = now.saturating_sub(window);
        let until = self
            .retrying(|| async {
                let mut tx = self.begin().await?;
                // A count older than the window starts again from one.
                sqlx::query(
                    tx.sql("DELETE FROM login_failures WHERE scope = ? AND last_failure < ?"),
                )
                .bind(scope)
                .bind(stale)
                .execute(tx.conn())
                .await?;
                // The upsert locks the scope's row until the commit, so concurrent failures of
                // one scope count one after the other, on every replica.
                let upsert = tx.dialect().upsert_increment(
                    "login_failures",
                    "scope",
                    "failures",
                    &["last_failure", "locked_until"],
                );
                sqlx::query(tx.sql(&upsert))
                    .bind(scope)
                    .bind(1i64)
                    .bind(now)
                    .bind(0i64)
                    .execute(tx.conn())
                    .await?;
                let failures: i64 = sqlx::query_scalar(
                    tx.sql("SELECT failures FROM login_failures WHERE scope = ?"),
                )
                .bind(scope)
                .fetch_one(tx.conn())
                .await?;
                let lock = lock_for(failures);
                let until = if lock > 0 {
                    now.saturating_add(lock)
                } else {
                    0
                };
                sqlx::query(tx.sql("UPDATE login_failures SET locked_until = ? WHERE scope = ?"))
                    .bind(until)
                    .bind(scope)
                    .execute(tx.conn())
                    .await?;
                tx.commit().await?;
                Ok(until)
            })
            .await?;
        // Other idle rows go on the way, so the table stays small whatever is tried: on their
        // own, after the commit (a range delete inside the transaction could deadlock two
        // replicas counting at once).
        sqlx::query(self.sql("DELETE FROM login_failures WHERE last_failure < ?"))
            .bind(stale)
            .execute(self.pool())
            .await?;
        Ok(until)
    }

    /// Forgets the failures of `scope` (a successful login).
    pub async fn login_succeeded(&self, scope: &str) -> Result<(), StoreError> {
        let _w = self.write_lock().await;
        sqlx::query(self.sql("DELETE FROM login_failures WHERE scope = ?"))
            .bind(scope)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
