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
