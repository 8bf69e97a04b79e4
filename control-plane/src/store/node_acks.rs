//! What Envoy nodes acknowledged, shared between control planes (migration 0011).

use std::collections::HashSet;

use super::{flag, text, Store, StoreError};

/// A node's acknowledgements as another control plane recorded them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedAcks {
    pub node: String,
    pub clusters: HashSet<String>,
    pub secrets: HashSet<String>,
    pub holder: String,
    /// The holder's ADS stream of the node is open.
    pub live: bool,
}

fn names(json: &str) -> Result<HashSet<String>, sqlx::Error> {
    serde_json::from_str(json).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

impl Store {
    /// Records what `node` acknowledged on this control plane's (`holder`'s) stream.
    pub async fn put_node_acks(
        &self,
        node: &str,
        clusters: &HashSet<String>,
        secrets: &HashSet<String>,
        holder: &str,
        live: bool,
    ) -> Result<(), StoreError> {
        let mut c: Vec<&String> = clusters.iter().collect();
        c.sort();
        let mut s: Vec<&String> = secrets.iter().collect();
        s.sort();
        let upsert = self.dialect().upsert(
            "node_acks",
            "node",
            &["clusters", "secrets", "holder", "live", "updated_at"],
        );
        sqlx::query(self.sql(&upsert))
            .bind(node)
            .bind(serde_json::to_string(&c).unwrap_or_else(|_| "[]".into()))
            .bind(serde_json::to_string(&s).unwrap_or_else(|_| "[]".into()))
            .bind(holder)
            .bind(i64::from(live))
            .bind(super::now())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// The node's stream on `holder` closed: its row stops counting as live, unless another
    /// control plane's stream has taken it over since.
    pub async fn node_acks_closed(&self, node: &str, holder: &str) -> Result<(), StoreError> {
        sqlx::query(self.sql("UPDATE node_acks SET live = 0 WHERE node = ? AND holder = ?"))
            .bind(node)
            .bind(holder)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Every node's acknowledgements recorded by another control plane than `me`.
    pub async fn others_node_acks(&self, me: &str) -> Result<Vec<SharedAcks>, StoreError> {
        self.fetch_rows(
            sqlx::query(self.sql(
                "SELECT node, clusters, secrets, holder, live FROM node_acks WHERE holder <> ? ORDER BY node",
            ))
            .bind(me),
            |r| {
                Ok(SharedAcks {
                    node: text(r, "node")?,
                    clusters: names(&text(r, "clusters")?)?,
                    secrets: names(&text(r, "secrets")?)?,
                    holder: text(r, "holder")?,
                    live: flag(r, "live")?,
                })
            },
        )
        .await
    }
}
