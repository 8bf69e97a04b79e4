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
            let row = sqlx::query("SELECT locked_until FROM login_failures WHERE scope = ?")
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
        let mut tx = self.begin().await?;
        let stale = now.saturating_sub(window);
        sqlx::query("DELETE FROM login_failures WHERE last_failure < ?")
            .bind(stale)
            .execute(&mut *tx)
            .await?;
        let failures: i64 = sqlx::query_scalar(
            "INSERT INTO login_failures (scope, failures, last_failure, locked_until) \
             VALUES (?, 1, ?, 0) \
             ON CONFLICT (scope) DO UPDATE SET failures = failures + 1, last_failure = excluded.last_failure \
             RETURNING failures",
        )
        .bind(scope)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let lock = lock_for(failures);
        let until = if lock > 0 {
            now.saturating_add(lock)
        } else {
            0
        };
        sqlx::query("UPDATE login_failures SET locked_until = ? WHERE scope = ?")
            .bind(until)
            .bind(scope)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(until)
    }

    /// Forgets the failures of `scope` (a successful login).
    pub async fn login_succeeded(&self, scope: &str) -> Result<(), StoreError> {
        let _w = self.write_lock().await;
        sqlx::query("DELETE FROM login_failures WHERE scope = ?")
            .bind(scope)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
