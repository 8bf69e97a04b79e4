//! The AppKey directory: every live AppKey with its secrets, in memory, so an OAuth1
//! signature is checked without a database or Vault round trip per request.
//!
//! Loaded from the store and Vault at start; the API updates it on create and revoke. The
//! same content is what the gateway's snapshot carries (the filter verifies signatures
//! itself).

use std::collections::HashMap;
use std::sync::RwLock;

use mtlsgate_filter::oauth1::Secrets as SigningSecrets;

use crate::secret::Secret;
use crate::secret_store::{SecretStoreError, Secrets};
use crate::store::{AppKeyRow, Store, StoreError};

/// One AppKey and its secrets.
#[derive(Debug, Clone)]
pub struct AppKey {
    pub row: AppKeyRow,
    pub consumer_secret: Secret,
    pub token_secret: Secret,
}

impl AppKey {
    pub fn secrets(&self) -> SigningSecrets {
        SigningSecrets::new(self.consumer_secret.expose(), self.token_secret.expose())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Secrets(#[from] SecretStoreError),
}

/// AppKeys by (consumer key, access token).
#[derive(Default)]
pub struct Directory {
    keys: RwLock<HashMap<(String, String), AppKey>>,
}

impl Directory {
    /// Loads every live AppKey. One whose secrets are missing from Vault is skipped (and
    /// logged): it cannot sign anything.
    pub async fn load(store: &Store, secrets: &Secrets) -> Result<Directory, LoadError> {
        let dir = Directory::default();
        for row in store.all_appkeys().await? {
            match secrets.get_appkey(&row.account, row.id).await? {
                Some((consumer_secret, token_secret)) => dir.insert(AppKey {
                    row,
                    consumer_secret,
                    token_secret,
                }),
                None => tracing::warn!(
                    appkey = row.id,
                    "AppKey has no secrets in Vault; it cannot be used"
                ),
            }
        }
        Ok(dir)
    }

    /// Brings the directory in line with the store: AppKeys revoked since (by any process)
    /// go, AppKeys created since are read with their secrets. Answers whether anything
    /// changed. The caller holds the store's write lock, so this process's own creations and
    /// revocations are not in the middle of committing.
    pub async fn sync(&self, store: &Store, secrets: &Secrets) -> Result<bool, LoadError> {
        let rows = store.all_appkeys().await?;
        let live: std::collections::HashSet<(&str, i64)> =
            rows.iter().map(|r| (r.account.as_str(), r.id)).collect();
        let mut changed = false;
        let known: std::collections::HashSet<(String, i64)> = {
            let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
            let before = keys.len();
            keys.retain(|_, v| live.contains(&(v.row.account.as_str(), v.row.id)));
            changed |= keys.len() != before;
            keys.values()
                .map(|v| (v.row.account.clone(), v.row.id))
                .collect()
        };
        for row in rows {
            if known.contains(&(row.account.clone(), row.id)) {
                continue;
            }
            match secrets.get_appkey(&row.account, row.id).await? {
                Some((consumer_secret, token_secret)) => {
                    self.insert(AppKey {
                        row,
                        consumer_secret,
                        token_secret,
                    });
                    changed = true;
                }
                None => tracing::warn!(
                    appkey = row.id,
                    "AppKey has no secrets in Vault; it cannot be used"
                ),
            }
        }
        Ok(changed)
    }

    pub fn insert(&self, key: AppKey) {
        let k = (key.row.consumer_key.clone(), key.row.access_token.clone());
        self.keys
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(k, key);
    }

    pub fn remove(&self, account: &str, id: i64) {
        self.keys
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, v| !(v.row.account == account && v.row.id == id));
    }

    /// Drops every AppKey of an account (offboarded).
    pub fn remove_account(&self, account: &str) {
        self.keys
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, v| v.row.account != account);
    }

    pub fn get(&self, consumer_key: &str, token: &str) -> Option<AppKey> {
        self.keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(consumer_key.to_owned(), token.to_owned()))
            .cloned()
    }

    /// Every AppKey, for the gateway's snapshot.
    pub fn all(&self) -> Vec<AppKey> {
        self.keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }
}
