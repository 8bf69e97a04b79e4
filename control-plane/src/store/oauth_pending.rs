//! Authorization-code requests waiting for their callback (migration 0010): in the database,
//! so whichever control plane the user's browser comes back to finds it. Keyed by the SHA-256
//! of the `state`, never the state itself.

use sqlx::Row;

use super::{flag, text, Store, StoreError};

/// A request waiting for its callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingAuthorization {
    pub account: String,
    pub credential_id: i64,
    /// A PKCE verifier was kept for it in the secret store.
    pub has_verifier: bool,
    pub created_at: i64,
}

/// What [`Store::insert_pending_authorization`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PendingInsert {
    /// Kept; expired requests and the account's oldest beyond its bound were dropped (their
    /// state hashes, for their secrets to be destroyed).
    Kept { dropped: Vec<String> },
    /// Refused: as many requests as the deployment keeps are waiting (expired ones dropped
    /// on the way).
    Full { dropped: Vec<String> },
}

impl Store {
    /// Keeps a new request of `account`, after dropping everyone's requests created before
    /// `expired_before`. An account keeps at most `per_account` (its oldest go, never another
    /// account's); all accounts together at most `total` (then refused). Under the account's
    /// lock, so two control planes cannot both take the last place.
    #[allow(clippy::too_many_arguments)]
    pub async fn insert_pending_authorization(
        &self,
        state_sha256: &str,
        p: &PendingAuthorization,
        expired_before: i64,
        per_account: usize,
        total: usize,
    ) -> Result<PendingInsert, StoreError> {
        let mut tx = self.begin_write(&p.account).await?;
        let mut dropped: Vec<String> =
            sqlx::query(tx.sql("SELECT state_sha256 FROM oauth_pending WHERE created_at < ?"))
                .bind(expired_before)
                .fetch_all(tx.conn())
                .await?
                .iter()
                .map(|r| text(r, "state_sha256"))
                .collect::<Result<_, _>>()?;
        sqlx::query(tx.sql("DELETE FROM oauth_pending WHERE created_at < ?"))
            .bind(expired_before)
            .execute(tx.conn())
            .await?;
        let own: Vec<String> = sqlx::query(tx.sql(
            "SELECT state_sha256 FROM oauth_pending WHERE account = ? ORDER BY created_at, state_sha256",
        ))
        .bind(&p.account)
        .fetch_all(tx.conn())
        .await?
        .iter()
        .map(|r| text(r, "state_sha256"))
        .collect::<Result<_, _>>()?;
        if own.len() >= per_account {
            let excess = own.len() + 1 - per_account;
            for hash in own.into_iter().take(excess) {
                sqlx::query(tx.sql("DELETE FROM oauth_pending WHERE state_sha256 = ?"))
                    .bind(&hash)
                    .execute(tx.conn())
                    .await?;
                dropped.push(hash);
            }
        } else {
            let all: i64 = sqlx::query_scalar(tx.sql("SELECT COUNT(*) FROM oauth_pending"))
                .fetch_one(tx.conn())
                .await?;
            if usize::try_from(all).unwrap_or(usize::MAX) >= total {
                // The expired ones are gone all the same.
                tx.commit().await?;
                return Ok(PendingInsert::Full { dropped });
            }
        }
        sqlx::query(tx.sql(
            "INSERT INTO oauth_pending (state_sha256, account, credential_id, has_verifier, created_at) \
             VALUES (?, ?, ?, ?, ?)",
        ))
        .bind(state_sha256)
        .bind(&p.account)
        .bind(p.credential_id)
        .bind(i64::from(p.has_verifier))
        .bind(p.created_at)
        .execute(tx.conn())
        .await?;
        tx.commit().await?;
        Ok(PendingInsert::Kept { dropped })
    }

    /// Takes the request of this state: answered once, whichever control plane asks (the
    /// delete decides), and only if created at or after `expired_before`.
    pub async fn take_pending_authorization(
        &self,
        state_sha256: &str,
        expired_before: i64,
    ) -> Result<Option<PendingAuthorization>, StoreError> {
        let mut tx = self.begin().await?;
        let row = sqlx::query(tx.sql(
            "SELECT account, credential_id, has_verifier, created_at FROM oauth_pending \
             WHERE state_sha256 = ?",
        ))
        .bind(state_sha256)
        .fetch_optional(tx.conn())
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let done = sqlx::query(tx.sql("DELETE FROM oauth_pending WHERE state_sha256 = ?"))
            .bind(state_sha256)
            .execute(tx.conn())
            .await?;
        tx.commit().await?;
        if done.rows_affected() != 1 {
            return Ok(None);
        }
        let p = PendingAuthorization {
            account: text(&row, "account")?,
            credential_id: row.try_get("credential_id")?,
            has_verifier: flag(&row, "has_verifier")?,
            created_at: row.try_get("created_at")?,
        };
        Ok((p.created_at >= expired_before).then_some(p))
    }

    /// Drops a credential's waiting requests (it changed or went); answers their state
    /// hashes, for their secrets to be destroyed.
    pub async fn forget_pending_authorizations(
        &self,
        credential_id: i64,
    ) -> Result<Vec<String>, StoreError> {
        let mut tx = self.begin().await?;
        let hashes: Vec<String> =
            sqlx::query(tx.sql("SELECT state_sha256 FROM oauth_pending WHERE credential_id = ?"))
                .bind(credential_id)
                .fetch_all(tx.conn())
                .await?
                .iter()
                .map(|r| text(r, "state_sha256"))
                .collect::<Result<_, _>>()?;
        sqlx::query(tx.sql("DELETE FROM oauth_pending WHERE credential_id = ?"))
            .bind(credential_id)
            .execute(tx.conn())
            .await?;
        tx.commit().await?;
        Ok(hashes)
    }
}
