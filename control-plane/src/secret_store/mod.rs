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
pub(crate) use openbao::{AppRole, Auth, OpenBao};

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
    /// The AppRole files cannot be read (names the file, never its content).
    #[error("secret store credentials: {0}")]
    Credentials(String),
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
    /// The entry's newest live version (neither deleted nor destroyed), `None` when there is
    /// none.
    async fn current_version(&self, path: &str) -> Result<Option<u64>, SecretStoreError>;
    /// Destroys every version and the entry's metadata; an entry already gone is fine.
    async fn destroy(&self, path: &str) -> Result<(), SecretStoreError>;
    /// Destroys these versions of the entry, leaving the others as they are (what undoes
    /// one write); versions or an entry already gone are fine.
    async fn destroy_versions(&self, path: &str, versions: &[u64]) -> Result<(), SecretStoreError>;
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
    /// The mark of the API write that made this version ([`WriteId`]); absent in a version
    /// an operator wrote directly in the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mtlsgate_write_id: Option<String>,
}

/// The mark the API puts in every certificate version it writes, and records in the
/// certificate's row with the version number when (and only when) the write commits.
///
/// why: the periodic watch must tell apart the two kinds of version it can find newer than
/// the one a row pins. One an operator wrote directly in Vault (a rotation behind
/// mtlsgate's back) carries no mark, or — `bao kv patch` keeps the other fields — the mark
/// of the version it replaced, which is the row's own: the watch adopts it. One the API
/// wrote whose commit failed, was interrupted or has not happened yet carries a fresh mark
/// that no row names: the watch leaves it alone, so the gateway keeps presenting what the
/// database says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WriteId(String);

impl WriteId {
    /// A fresh, unguessable mark (128 random bits).
    pub(crate) fn new() -> WriteId {
        WriteId(hex::encode(crate::random::bytes::<16>()))
    }

    /// A mark as stored (in a row or a version).
    pub(crate) fn from_stored(s: String) -> WriteId {
        WriteId(s)
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// One version of a certificate's entry: its material and the API's mark, if any.
pub(crate) struct StoredCertificate {
    pub(crate) material: Material,
    pub(crate) write_id: Option<WriteId>,
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

    /// Offboarding: destroys every version of the named secrets of `account` (certificates,
    /// credentials with their kept tokens, AppKeys). Answers the entries destroyed and the
    /// ones that could not be (to be destroyed again: destroying is idempotent).
    pub(crate) async fn destroy_account(
        &self,
        account: &str,
        certificates: &[i64],
        credentials: &[i64],
        appkeys: &[i64],
    ) -> (Vec<String>, Vec<String>) {
        let mut paths: Vec<String> = certificates
            .iter()
            .map(|id| certificate_path(account, *id))
            .collect();
        for id in credentials {
            paths.push(credential_path(account, *id));
            paths.push(credential_tokens_path(account, *id));
        }
        paths.extend(appkeys.iter().map(|id| appkey_path(account, *id)));
        let (mut done, mut failed) = (Vec::new(), Vec::new());
        for path in paths {
            match self.store.destroy(&path).await {
                Ok(()) => done.push(path),
                Err(e) => {
                    tracing::warn!(path, error = %e, "offboarding: cannot destroy a secret");
                    failed.push(path);
                }
            }
        }
        (done, failed)
    }

    /// Destroys one of mtlsgate's own secrets (every version); gone already is fine.
    pub(crate) async fn delete_system(&self, name: &str) -> Result<(), SecretStoreError> {
        self.store.destroy(&system_path(name)).await
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

    /// A credential's secret fields, as the given version holds them (`0`: the newest, for a
    /// row written before rows pinned their version).
    pub(crate) async fn get_credential(
        &self,
        account: &str,
        id: i64,
        version: u64,
    ) -> Result<Option<JsonMap>, SecretStoreError> {
        let version = (version > 0).then_some(version);
        self.store
            .read(&credential_path(account, id), version)
            .await
    }

    /// Writes a new version of a credential's secrets; answers its version number, which
    /// the credential's row must pin (the version before stays until then, and after).
    pub(crate) async fn put_credential(
        &self,
        account: &str,
        id: i64,
        secrets: &JsonMap,
    ) -> Result<u64, SecretStoreError> {
        self.store
            .write(&credential_path(account, id), secrets)
            .await
    }

    /// A credential's newest live version (to pin a row written before rows pinned theirs).
    pub(crate) async fn credential_version(
        &self,
        account: &str,
        id: i64,
    ) -> Result<Option<u64>, SecretStoreError> {
        self.store
            .current_version(&credential_path(account, id))
            .await
    }

    /// Destroys one version of a credential's secrets: the undo of a write whose commit
    /// failed.
    pub(crate) async fn destroy_credential_version(
        &self,
        account: &str,
        id: i64,
        version: u64,
    ) -> Result<(), SecretStoreError> {
        self.store
            .destroy_versions(&credential_path(account, id), &[version])
            .await
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

    /// Writes a new version of a certificate's key and chain, marked with `write_id`;
    /// answers its version number.
    pub(crate) async fn put_certificate(
        &self,
        account: &str,
        id: i64,
        material: &Material,
        write_id: &WriteId,
    ) -> Result<u64, SecretStoreError> {
        let entry = CertificateEntry {
            certificate_chain: material.chain_pem.clone(),
            private_key: material.key_pem.expose().to_owned(),
            mtlsgate_write_id: Some(write_id.as_str().to_owned()),
        };
        self.store
            .write(&certificate_path(account, id), &to_map(&entry)?)
            .await
    }

    /// A certificate's newest live version, or `None` when there is no entry.
    pub(crate) async fn certificate_version(
        &self,
        account: &str,
        id: i64,
    ) -> Result<Option<u64>, SecretStoreError> {
        self.store
            .current_version(&certificate_path(account, id))
            .await
    }

    /// Reads the given version of a certificate's key and chain, with its mark.
    pub(crate) async fn get_certificate(
        &self,
        account: &str,
        id: i64,
        version: u64,
    ) -> Result<Option<StoredCertificate>, SecretStoreError> {
        match self
            .store
            .read(&certificate_path(account, id), Some(version))
            .await?
        {
            Some(m) => {
                let e: CertificateEntry = from_map(m)?;
                Ok(Some(StoredCertificate {
                    material: Material {
                        chain_pem: e.certificate_chain,
                        key_pem: Secret::new(e.private_key),
                    },
                    write_id: e.mtlsgate_write_id.map(WriteId),
                }))
            }
            None => Ok(None),
        }
    }

    /// Destroys one version of a certificate's key and chain: the undo of a write whose
    /// commit failed, or the garbage such a write left when its undo failed too.
    pub(crate) async fn destroy_certificate_version(
        &self,
        account: &str,
        id: i64,
        version: u64,
    ) -> Result<(), SecretStoreError> {
        self.store
            .destroy_versions(&certificate_path(account, id), &[version])
            .await
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
mod cluster_tests;
#[cfg(test)]
mod contract;
