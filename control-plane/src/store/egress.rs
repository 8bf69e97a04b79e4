//! The egress allowlist (plain-TLS fallback hosts) of each account.

use sqlx::Row;

use super::{text, Store, StoreError};
use crate::egress::EgressHost;

/// One allowed host of one account, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressRow {
    pub account: String,
    pub host: EgressHost,
}

fn port(p: i64) -> Result<u16, sqlx::Error> {
    u16::try_from(p).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

impl Store {
    /// The account's allowed hosts, in the order it gave them.
    pub async fn egress_hosts(&self, account: &str) -> Result<Vec<EgressHost>, StoreError> {
        let rows = sqlx::query(
            self.sql("SELECT host, port FROM egress_hosts WHERE account = ? ORDER BY position"),
        )
        .bind(account)
        .fetch_all(self.pool())
        .await?;
        let hosts = rows
            .iter()
            .map(|r| {
                Ok(EgressHost {
                    host: text(r, "host")?,
                    port: port(r.try_get("port")?)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()?;
        Ok(hosts)
    }

    /// Every account's allowed hosts (for the desired state), by account then position.
    pub async fn all_egress_hosts(&self) -> Result<Vec<EgressRow>, StoreError> {
        let rows = sqlx::query(
            self.sql("SELECT account, host, port FROM egress_hosts ORDER BY account, position"),
        )
        .fetch_all(self.pool())
        .await?;
        let hosts = rows
            .iter()
            .map(|r| {
                Ok(EgressRow {
                    account: text(r, "account")?,
                    host: EgressHost {
                        host: text(r, "host")?,
                        port: port(r.try_get("port")?)?,
                    },
                })
            })
            .collect::<Result<_, sqlx::Error>>()?;
        Ok(hosts)
    }

    /// Replaces the account's allowed hosts, all or nothing. `hosts` must be free of
    /// duplicates (as [`crate::egress::parse_list`] leaves them).
    pub async fn replace_egress_hosts(
        &self,
        account: &str,
        hosts: &[EgressHost],
    ) -> Result<(), StoreError> {
        let _w = self.write_lock().await;
        let mut tx = self.begin_write(account).await?;
        sqlx::query(tx.sql("DELETE FROM egress_hosts WHERE account = ?"))
            .bind(account)
            .execute(tx.conn())
            .await?;
        for (i, h) in hosts.iter().enumerate() {
            sqlx::query(tx.sql(
                "INSERT INTO egress_hosts (account, position, host, port) VALUES (?, ?, ?, ?)",
            ))
            .bind(account)
            .bind(i as i64)
            .bind(&h.host)
            .bind(i64::from(h.port))
            .execute(tx.conn())
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
