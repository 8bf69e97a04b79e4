//! Secret material — certificate keys and chains, AppKey secrets, credential secrets, the
//! tokens an authorization-code grant obtained, mtlsgate's own signing key — behind one
//! trait, [`SecretStore`], with the semantics of a KV version 2 engine: every write makes a
//! new numbered version, a version can be read back, an entry can be destroyed whole.
//!
//! - [`OpenBao`] is the production store: OpenBao or Vault KV v2 (the same HTTP API).
//! - [`MemoryStore`] keeps everything in this process, for tests: the API's handlers run
//!   in-process in milliseconds against it, failure paths included (it can be switched off).
//! - [`Secrets`] is the typed facade the rest of the control plane uses: it knows where each
//!   kind of secret lives (`accounts/<account>/certificates/<id>`, …) and its shape.
//!
//! The contract tests at the bottom of this module run the same assertions against both
//! stores, so the in-memory one cannot drift from the real thing.

#[cfg(test)]
mod memory;
mod openbao;

use std::sync::Arc;

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::p12::Material;
use crate::secret::Secret;

#[cfg(test)]
pub(crate) use memory::MemoryStore;
pub(crate) use openbao::OpenBao;

/// A JSON object: what one entry holds.
pub(crate) type JsonMap = serde_json::Map<String, serde_json::Value>;

/// Errors talking to the secret store. Never carries material or tokens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretStoreError {
    #[error("invalid secret store address: {0}")]
    Address(String),
    #[error("the secret store is unreachable or failed: {0}")]
    Unavailable(String),
    #[error("the secret store refused the request (status {0})")]
    Refused(u16),
    #[error("the secret store entry is not in mtlsgate's format")]
    Malformed,
}

/// A KV version 2 engine, as mtlsgate uses it. Paths are relative to mtlsgate's own place
/// in the store (the mount and prefix are the implementation's business).
#[async_trait::async_trait]
pub(crate) trait SecretStore: Send + Sync {
    /// Writes a new version of the entry; answers its version number (1 for a new entry,
    /// one more than the last for an existing one).
    async fn write(&self, path: &str, value: &JsonMap) -> Result<u64, SecretStoreError>;
    /// Reads a version of the entry (`None`: the current one). `Ok(None)` when there is no
    /// such entry or version, or it was deleted or destroyed.
    async fn read(
        &self,
        path: &str,
        version: Option<u64>,
    ) -> Result<Option<JsonMap>, SecretStoreError>;
    /// The entry's current version, `None` when there is none or it is deleted.
    async fn current_version(&self, path: &str) -> Result<Option<u64>, SecretStoreError>;
    /// Destroys every version and the entry's metadata; an entry already gone is fine.
    async fn destroy(&self, path: &str) -> Result<(), SecretStoreError>;
    /// Whether the store can be reached and written (at start-up, to fail early and clearly).
    async fn check(&self) -> Result<(), SecretStoreError>;
}

/// mtlsgate's secrets, typed, over a [`SecretStore`]. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Secrets {
    store: Arc<dyn SecretStore>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AppKeySecrets {
    consumer_secret: String,
    access_token_secret: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CertificateEntry {
    certificate_chain: String,
    private_key: String,
}

fn to_map<T: Serialize>(value: &T) -> Result<JsonMap, SecretStoreError> {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        _ => Err(SecretStoreError::Malformed),
    }
}

fn from_map<T: DeserializeOwned>(map: JsonMap) -> Result<T, SecretStoreError> {
    serde_json::from_value(serde_json::Value::Object(map)).map_err(|_| SecretStoreError::Malformed)
}

fn certificate_path(account: &str, id: i64) -> String {
    format!("accounts/{account}/certificates/{id}")
}

fn appkey_path(account: &str, id: i64) -> String {
    format!("accounts/{account}/appkeys/{id}")
}

fn credential_path(account: &str, id: i64) -> String {
    format!("accounts/{account}/credentials/{id}")
}

/// Where the tokens an authorization-code grant obtained are kept (apart from the
/// credential's own secrets, which only an update replaces).
fn credential_tokens_path(account: &str, id: i64) -> String {
    format!("accounts/{account}/credential-tokens/{id}")
}

fn system_path(name: &str) -> String {
    format!("system/{name}")
}

impl Secrets {
    pub(crate) fn new(store: Arc<dyn SecretStore>) -> Secrets {
        Secrets { store }
    }

    /// Whether the store can be reached (at start-up).
    pub(crate) async fn check(&self) -> Result<(), SecretStoreError> {
        self.store.check().await
    }

    /// Reads one of mtlsgate's own secrets (e.g. the token signing key).
    pub(crate) async fn get_system<T: DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<Option<T>, SecretStoreError> {
        match self.store.read(&system_path(name), None).await? {
            Some(m) => from_map(m).map(Some),
            None => Ok(None),
        }
    }

    /// Writes one of mtlsgate's own secrets.
    pub(crate) async fn put_system<T: Serialize>(
        &self,
        name: &str,
        value: &T,
    ) -> Result<(), SecretStoreError> {
        self.store
            .write(&system_path(name), &to_map(value)?)
            .await
            .map(|_| ())
    }

    /// The secrets of an AppKey: `(consumer secret, access token secret)`.
    pub(crate) async fn get_appkey(
        &self,
        account: &str,
        id: i64,
    ) -> Result<Option<(Secret, Secret)>, SecretStoreError> {
        match self.store.read(&appkey_path(account, id), None).await? {
            Some(m) => {
                let s: AppKeySecrets = from_map(m)?;
                Ok(Some((
                    Secret::new(s.consumer_secret),
                    Secret::new(s.access_token_secret),
                )))
            }
            None => Ok(None),
        }
    }

    pub(crate) async fn put_appkey(
        &self,
        account: &str,
        id: i64,
        consumer: &Secret,
        token: &Secret,
    ) -> Result<(), SecretStoreError> {
        let value = AppKeySecrets {
            consumer_secret: consumer.expose().to_owned(),
            access_token_secret: token.expose().to_owned(),
        };
        self.store
            .write(&appkey_path(account, id), &to_map(&value)?)
            .await
            .map(|_| ())
    }

    pub(crate) async fn delete_appkey(
        &self,
        account: &str,
        id: i64,
    ) -> Result<(), SecretStoreError> {
        self.store.destroy(&appkey_path(account, id)).await
    }

    /// A credential's secret fields.
    pub(crate) async fn get_credential(
        &self,
        account: &str,
        id: i64,
    ) -> Result<Option<JsonMap>, SecretStoreError> {
        self.store.read(&credential_path(account, id), None).await
    }

    pub(crate) async fn put_credential(
        &self,
        account: &str,
        id: i64,
        secrets: &JsonMap,
    ) -> Result<(), SecretStoreError> {
        self.store
            .write(&credential_path(account, id), secrets)
            .await
            .map(|_| ())
    }

    /// Deletes a credential's secrets and any tokens obtained with it.
    pub(crate) async fn delete_credential(
        &self,
        account: &str,
        id: i64,
    ) -> Result<(), SecretStoreError> {
        self.store
            .destroy(&credential_tokens_path(account, id))
            .await?;
        self.store.destroy(&credential_path(account, id)).await
    }

    /// The tokens an authorization-code grant obtained for a credential.
    pub(crate) async fn get_credential_tokens(
        &self,
        account: &str,
        id: i64,
    ) -> Result<Option<JsonMap>, SecretStoreError> {
        self.store
            .read(&credential_tokens_path(account, id), None)
            .await
    }

    pub(crate) async fn put_credential_tokens(
        &self,
        account: &str,
        id: i64,
        tokens: &JsonMap,
    ) -> Result<(), SecretStoreError> {
        self.store
            .write(&credential_tokens_path(account, id), tokens)
            .await
            .map(|_| ())
    }

    pub(crate) async fn delete_credential_tokens(
        &self,
        account: &str,
        id: i64,
    ) -> Result<(), SecretStoreError> {
        self.store
            .destroy(&credential_tokens_path(account, id))
            .await
    }

    /// Writes a new version of a certificate's key and chain; answers its version number.
    pub(crate) async fn put_certificate(
        &self,
        account: &str,
        id: i64,
        material: &Material,
    ) -> Result<u64, SecretStoreError> {
        let entry = CertificateEntry {
            certificate_chain: material.chain_pem.clone(),
            private_key: material.key_pem.expose().to_owned(),
        };
        self.store
            .write(&certificate_path(account, id), &to_map(&entry)?)
            .await
    }

    /// A certificate's current version, or `None` when there is no entry.
    pub(crate) async fn certificate_version(
        &self,
        account: &str,
        id: i64,
    ) -> Result<Option<u64>, SecretStoreError> {
        self.store
            .current_version(&certificate_path(account, id))
            .await
    }

    /// Reads the given version of a certificate's key and chain.
    pub(crate) async fn get_certificate(
        &self,
        account: &str,
        id: i64,
        version: u64,
    ) -> Result<Option<Material>, SecretStoreError> {
        match self
            .store
            .read(&certificate_path(account, id), Some(version))
            .await?
        {
            Some(m) => {
                let e: CertificateEntry = from_map(m)?;
                Ok(Some(Material {
                    chain_pem: e.certificate_chain,
                    key_pem: Secret::new(e.private_key),
                }))
            }
            None => Ok(None),
        }
    }

    /// Destroys every version of a certificate's key and chain.
    pub(crate) async fn delete_certificate(
        &self,
        account: &str,
        id: i64,
    ) -> Result<(), SecretStoreError> {
        self.store.destroy(&certificate_path(account, id)).await
    }
}

#[cfg(test)]
mod contract;
