//! Certificate material in Vault / OpenBao (KV version 2).
//!
//! Layout: `<mount>/<prefix>accounts/<account>/certificates/<id>` holding
//! `{"certificateChain": PEM, "privateKey": PEM}`. The KV version number of each entry is how
//! the sync notices a certificate rotated directly in Vault.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;
use vaultrs::kv2;

use crate::p12::Material;
use crate::secret::Secret;

/// Errors talking to Vault. Never carries material or tokens.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("invalid Vault address: {0}")]
    Address(String),
    #[error("Vault is unreachable or failed: {0}")]
    Unavailable(String),
    #[error("Vault refused the request (status {0})")]
    Refused(u16),
    #[error("the Vault entry is not in mtlsgate's format")]
    Malformed,
}

type JsonMap = serde_json::Map<String, serde_json::Value>;

/// A handle on the KV v2 mount.
pub struct Vault {
    client: VaultClient,
    mount: String,
    prefix: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AppKeySecrets {
    consumer_secret: String,
    access_token_secret: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    certificate_chain: String,
    private_key: String,
}

impl Vault {
    pub fn new(addr: &str, token: &Secret, mount: &str, prefix: &str) -> Result<Self, VaultError> {
        // why: the builder's `address` setter panics on a bad URL; check it first.
        let url = url::Url::parse(addr).map_err(|_| VaultError::Address(addr.to_owned()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(VaultError::Address(addr.to_owned()));
        }
        let settings = VaultClientSettingsBuilder::default()
            .address(addr)
            .token(token.expose())
            .timeout(Some(Duration::from_secs(10)))
            .build()
            .map_err(|e| VaultError::Address(e.to_string()))?;
        let client =
            VaultClient::new(settings).map_err(|e| VaultError::Unavailable(describe(&e)))?;
        let prefix = if prefix.is_empty() || prefix.ends_with('/') {
            prefix.to_owned()
        } else {
            format!("{prefix}/")
        };
        Ok(Vault {
            client,
            mount: mount.to_owned(),
            prefix,
        })
    }

    fn path(&self, account: &str, id: i64) -> String {
        format!("{}accounts/{account}/certificates/{id}", self.prefix)
    }

    fn system_path(&self, name: &str) -> String {
        format!("{}system/{name}", self.prefix)
    }

    /// Reads one of mtlsgate's own secrets (e.g. the token signing key).
    pub async fn get_system<T: serde::de::DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<Option<T>, VaultError> {
        match kv2::read::<T>(&self.client, &self.mount, &self.system_path(name)).await {
            Ok(v) => Ok(Some(v)),
            Err(ClientError::APIError { code: 404, .. }) => Ok(None),
            Err(e) => Err(classify(e)),
        }
    }

    /// Writes one of mtlsgate's own secrets.
    pub async fn put_system<T: Serialize>(&self, name: &str, value: &T) -> Result<(), VaultError> {
        kv2::set(&self.client, &self.mount, &self.system_path(name), value)
            .await
            .map(|_| ())
            .map_err(classify)
    }

    /// The secrets of an AppKey: `(consumer secret, access token secret)`.
    pub async fn get_appkey(
        &self,
        account: &str,
        id: i64,
    ) -> Result<Option<(Secret, Secret)>, VaultError> {
        match kv2::read::<AppKeySecrets>(&self.client, &self.mount, &self.appkey_path(account, id))
            .await
        {
            Ok(s) => Ok(Some((
                Secret::new(s.consumer_secret),
                Secret::new(s.access_token_secret),
            ))),
            Err(ClientError::APIError { code: 404, .. }) => Ok(None),
            Err(e) => Err(classify(e)),
        }
    }

    pub async fn put_appkey(
        &self,
        account: &str,
        id: i64,
        consumer: &Secret,
        token: &Secret,
    ) -> Result<(), VaultError> {
        let value = AppKeySecrets {
            consumer_secret: consumer.expose().to_owned(),
            access_token_secret: token.expose().to_owned(),
        };
        kv2::set(
            &self.client,
            &self.mount,
            &self.appkey_path(account, id),
            &value,
        )
        .await
        .map(|_| ())
        .map_err(classify)
    }

    pub async fn delete_appkey(&self, account: &str, id: i64) -> Result<(), VaultError> {
        match kv2::delete_metadata(&self.client, &self.mount, &self.appkey_path(account, id)).await
        {
            Ok(()) | Err(ClientError::APIError { code: 404, .. }) => Ok(()),
            Err(e) => Err(classify(e)),
        }
    }

    fn credential_path(&self, account: &str, id: i64) -> String {
        format!("{}accounts/{account}/credentials/{id}", self.prefix)
    }

    /// Where the tokens an authorization-code grant obtained are kept (apart from the
    /// credential's own secrets, which only an update replaces).
    fn credential_tokens_path(&self, account: &str, id: i64) -> String {
        format!("{}accounts/{account}/credential-tokens/{id}", self.prefix)
    }

    async fn read_map(&self, path: &str) -> Result<Option<JsonMap>, VaultError> {
        match kv2::read(&self.client, &self.mount, path).await {
            Ok(v) => Ok(Some(v)),
            Err(ClientError::APIError { code: 404, .. }) => Ok(None),
            Err(e) => Err(classify(e)),
        }
    }

    async fn write_map(&self, path: &str, value: &JsonMap) -> Result<(), VaultError> {
        kv2::set(&self.client, &self.mount, path, value)
            .await
            .map(|_| ())
            .map_err(classify)
    }

    /// Deletes every version of an entry; an entry already gone is fine.
    async fn delete_path(&self, path: &str) -> Result<(), VaultError> {
        match kv2::delete_metadata(&self.client, &self.mount, path).await {
            Ok(()) | Err(ClientError::APIError { code: 404, .. }) => Ok(()),
            Err(e) => Err(classify(e)),
        }
    }

    /// A credential's secret fields.
    pub async fn get_credential(
        &self,
        account: &str,
        id: i64,
    ) -> Result<Option<JsonMap>, VaultError> {
        self.read_map(&self.credential_path(account, id)).await
    }

    pub async fn put_credential(
        &self,
        account: &str,
        id: i64,
        secrets: &JsonMap,
    ) -> Result<(), VaultError> {
        self.write_map(&self.credential_path(account, id), secrets)
            .await
    }

    /// Deletes a credential's secrets and any tokens obtained with it.
    pub async fn delete_credential(&self, account: &str, id: i64) -> Result<(), VaultError> {
        self.delete_path(&self.credential_tokens_path(account, id))
            .await?;
        self.delete_path(&self.credential_path(account, id)).await
    }

    /// The tokens an authorization-code grant obtained for a credential.
    pub async fn get_credential_tokens(
        &self,
        account: &str,
        id: i64,
    ) -> Result<Option<JsonMap>, VaultError> {
        self.read_map(&self.credential_tokens_path(account, id))
            .await
    }

    pub async fn put_credential_tokens(
        &self,
        account: &str,
        id: i64,
        tokens: &JsonMap,
    ) -> Result<(), VaultError> {
        self.write_map(&self.credential_tokens_path(account, id), tokens)
            .await
    }

    pub async fn delete_credential_tokens(&self, account: &str, id: i64) -> Result<(), VaultError> {
        self.delete_path(&self.credential_tokens_path(account, id))
            .await
    }

    fn appkey_path(&self, account: &str, id: i64) -> String {
        format!("{}accounts/{account}/appkeys/{id}", self.prefix)
    }

    /// Checks that the token can reach the mount (at start-up, to fail early and clearly).
    pub async fn check(&self) -> Result<(), VaultError> {
        match kv2::list(&self.client, &self.mount, &self.prefix).await {
            Ok(_) => Ok(()),
            Err(ClientError::APIError { code: 404, .. }) => Ok(()),
            Err(e) => Err(classify(e)),
        }
    }

    /// Writes a new version; answers the KV version number.
    pub async fn put(
        &self,
        account: &str,
        id: i64,
        material: &Material,
    ) -> Result<u64, VaultError> {
        let entry = Entry {
            certificate_chain: material.chain_pem.clone(),
            private_key: material.key_pem.expose().to_owned(),
        };
        kv2::set(&self.client, &self.mount, &self.path(account, id), &entry)
            .await
            .map(|m| m.version)
            .map_err(classify)
    }

    /// The current version number, or `None` when there is no entry.
    pub async fn version(&self, account: &str, id: i64) -> Result<Option<u64>, VaultError> {
        match kv2::read_metadata(&self.client, &self.mount, &self.path(account, id)).await {
            Ok(m) if m.current_version > 0 => {
                let current = m.versions.get(&m.current_version.to_string());
                let live = current.is_none_or(|v| !v.destroyed && v.deletion_time.is_empty());
                Ok(live.then_some(m.current_version))
            }
            Ok(_) | Err(ClientError::APIError { code: 404, .. }) => Ok(None),
            Err(e) => Err(classify(e)),
        }
    }

    /// Reads the given version.
    pub async fn get(
        &self,
        account: &str,
        id: i64,
        version: u64,
    ) -> Result<Option<Material>, VaultError> {
        match kv2::read_version::<Entry>(
            &self.client,
            &self.mount,
            &self.path(account, id),
            version,
        )
        .await
        {
            Ok(e) => Ok(Some(Material {
                chain_pem: e.certificate_chain,
                key_pem: Secret::new(e.private_key),
            })),
            Err(ClientError::APIError { code: 404, .. }) => Ok(None),
            Err(ClientError::JsonParseError { .. }) => Err(VaultError::Malformed),
            Err(e) => Err(classify(e)),
        }
    }

    /// Destroys every version and the metadata.
    pub async fn delete(&self, account: &str, id: i64) -> Result<(), VaultError> {
        match kv2::delete_metadata(&self.client, &self.mount, &self.path(account, id)).await {
            Ok(()) | Err(ClientError::APIError { code: 404, .. }) => Ok(()),
            Err(e) => Err(classify(e)),
        }
    }

    /// Current versions of many entries, for the rotation watch. Entries that are missing
    /// map to `None`.
    pub async fn versions(
        &self,
        entries: impl IntoIterator<Item = (String, i64)>,
    ) -> Result<HashMap<i64, Option<u64>>, VaultError> {
        let mut out = HashMap::new();
        for (account, id) in entries {
            out.insert(id, self.version(&account, id).await?);
        }
        Ok(out)
    }
}

fn classify(e: ClientError) -> VaultError {
    match e {
        ClientError::APIError { code, .. } => VaultError::Refused(code),
        ClientError::JsonParseError { .. } => VaultError::Malformed,
        other => VaultError::Unavailable(describe(&other)),
    }
}

/// A one-line description of a client error. Vault's own error texts never contain the
/// token or the data written.
fn describe(e: &ClientError) -> String {
    match e {
        ClientError::RestClientError { .. } => "connection failed".into(),
        other => other.to_string(),
    }
}
