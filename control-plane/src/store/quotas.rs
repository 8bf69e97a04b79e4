//! How many live rows of each kind an account holds: what the per-account quotas count.

use super::{Store, StoreError, Tx};

/// A kind of row an account's quota bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    Mappings,
    Certificates,
    Credentials,
    AppKeys,
}

impl Counted {
    fn query(self) -> &'static str {
        match self {
            Counted::Mappings => "SELECT COUNT(*) FROM mappings WHERE account = ? AND deleted = 0",
            Counted::Certificates => {
                "SELECT COUNT(*) FROM certificates WHERE account = ? AND deleted = 0"
            }
            Counted::Credentials => {
                "SELECT COUNT(*) FROM credentials WHERE account = ? AND deleted = 0"
            }
            Counted::AppKeys => {
                "SELECT COUNT(*) FROM appkeys WHERE account = ? AND revoked_at IS NULL"
            }
        }
    }
}

impl Store {
    /// Live rows of `what` in `account`, read in the writer's transaction (under the write
    /// lock), so a quota check and the insert it allows cannot interleave with another's.
    pub async fn live_count(tx: &mut Tx, account: &str, what: Counted) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(tx.sql(what.query()))
            .bind(account)
            .fetch_one(tx.conn())
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}
