//! The production [`SecretStore`]: OpenBao or Vault, KV version 2 engine.
//!
//! Layout: `<mount>/<prefix><path>`; the KV version number of each entry is how the
//! reconciler notices a certificate rotated directly in the store.

use std::time::Duration;

use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;
use vaultrs::kv2;

use super::{JsonMap, SecretStore, SecretStoreError};
use crate::secret::Secret;

/// A handle on a KV v2 mount of OpenBao or Vault.
pub(crate) struct OpenBao {
    client: VaultClient,
    mount: String,
    prefix: String,
}

/// Whether the URL's host is a loopback address (a literal: a name could resolve anywhere).
fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        _ => false,
    }
}

/// The HTTP client for the store: no proxy, no redirects, verified TLS against the system's
/// roots and `ca_file`.
fn http_client(
    url: &url::Url,
    ca_file: Option<&std::path::Path>,
) -> Result<reqwest::Client, SecretStoreError> {
    let mut b = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none());
    if url.scheme() == "https" {
        if let Some(path) = ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                SecretStoreError::Address(format!("cannot read {}: {e}", path.display()))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|_| {
                SecretStoreError::Address(format!("{} holds no PEM certificate", path.display()))
            })?;
            b = b.tls_certs_merge(certs);
        }
    } else {
        // (No TLS on this link: no roots to load.)
        b = b.tls_certs_only(Vec::new());
    }
    b.build()
        .map_err(|e| SecretStoreError::Unavailable(format!("HTTP client: {e}")))
}

impl OpenBao {
    /// `ca_file`: the CA (PEM) that verifies an `https` store's certificate, besides the
    /// system's roots.
    pub(crate) fn new(
        addr: &str,
        token: &Secret,
        mount: &str,
        prefix: &str,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Self, SecretStoreError> {
        // why: the builder's `address` setter panics on a bad URL; check it first.
        let url = url::Url::parse(addr).map_err(|_| SecretStoreError::Address(addr.to_owned()))?;
        match url.scheme() {
            "https" => {}
            // The link carries private keys and the store's token: in the clear only where
            // it never leaves the host.
            "http" if is_loopback(&url) => {}
            "http" => {
                return Err(SecretStoreError::Address(format!(
                    "{addr}: plain http to a secret store off loopback; use https (the link carries private keys)"
                )))
            }
            _ => return Err(SecretStoreError::Address(addr.to_owned())),
        }
        let settings = VaultClientSettingsBuilder::default()
            .address(addr)
            .token(token.expose())
            .timeout(Some(Duration::from_secs(10)))
            // Explicit: the builder's defaults would read VAULT_SKIP_VERIFY and VAULT_CACERT
            // from the environment behind the flags' back. Verification is never off.
            .verify(true)
            .ca_certs(
                ca_file
                    .map(|p| vec![p.to_string_lossy().into_owned()])
                    .unwrap_or_default(),
            )
            .build()
            .map_err(|e| SecretStoreError::Address(e.to_string()))?;
        let mut client =
            VaultClient::new(settings).map_err(|e| SecretStoreError::Unavailable(describe(&e)))?;
        // why: the library's own HTTP client would take HTTP_PROXY/ALL_PROXY from the
        // environment (and send the token and private keys through that proxy, in the clear
        // for a loopback http store) and follow redirects with the X-Vault-Token header (a
        // standby's redirect could send it to another host, or from https to http). This one
        // connects where --vault-addr says and nowhere else.
        client.http.http = http_client(&url, ca_file)?;
        let prefix = if prefix.is_empty() || prefix.ends_with('/') {
            prefix.to_owned()
        } else {
            format!("{prefix}/")
        };
        Ok(OpenBao {
            client,
            mount: mount.to_owned(),
            prefix,
        })
    }

    fn full(&self, path: &str) -> String {
        format!("{}{path}", self.prefix)
    }

    /// Whether version `v` of the entry at `full` (a full path) is known to be gone:
    /// destroyed, deleted, or never there.
    async fn gone(&self, full: &str, v: u64) -> bool {
        match kv2::read_metadata(&self.client, &self.mount, full).await {
            Ok(m) => m
                .versions
                .get(&v.to_string())
                .is_none_or(|m| m.destroyed || !m.deletion_time.is_empty()),
            Err(ClientError::APIError { code: 404, .. }) => true,
            Err(_) => false,
        }
    }
}

#[async_trait::async_trait]
impl SecretStore for OpenBao {
    async fn write(&self, path: &str, value: &JsonMap) -> Result<u64, SecretStoreError> {
        kv2::set(&self.client, &self.mount, &self.full(path), value)
            .await
            .map(|m| m.version)
            .map_err(classify)
    }

    async fn read(
        &self,
        path: &str,
        version: Option<u64>,
    ) -> Result<Option<JsonMap>, SecretStoreError> {
        let path = self.full(path);
        let read = match version {
            Some(v) => kv2::read_version::<JsonMap>(&self.client, &self.mount, &path, v).await,
            None => kv2::read::<JsonMap>(&self.client, &self.mount, &path).await,
        };
        match read {
            Ok(v) => Ok(Some(v)),
            // A deleted version answers 404 too.
            Err(ClientError::APIError { code: 404, .. }) => Ok(None),
            // why: a destroyed version answers 404 with its metadata as the body, which the
            // client does not read as an API error; the metadata says whether that is it.
            Err(e) => match version {
                Some(v) if self.gone(&path, v).await => Ok(None),
                _ => Err(classify(e)),
            },
        }
    }

    async fn current_version(&self, path: &str) -> Result<Option<u64>, SecretStoreError> {
        match kv2::read_metadata(&self.client, &self.mount, &self.full(path)).await {
            // why: the newest *live* version, not KV's `current_version`: when the API undoes
            // a failed write by destroying the version it made, that version is still the
            // entry's "current" one, yet the entry is as it was before the write.
            Ok(m) => Ok(m
                .versions
                .iter()
                .filter(|(_, v)| !v.destroyed && v.deletion_time.is_empty())
                .filter_map(|(n, _)| n.parse::<u64>().ok())
                .max()),
            Err(ClientError::APIError { code: 404, .. }) => Ok(None),
            Err(e) => Err(classify(e)),
        }
    }

    async fn destroy_versions(&self, path: &str, versions: &[u64]) -> Result<(), SecretStoreError> {
        if versions.is_empty() {
            return Ok(());
        }
        match kv2::destroy_versions(
            &self.client,
            &self.mount,
            &self.full(path),
            versions.to_vec(),
        )
        .await
        {
            Ok(()) | Err(ClientError::APIError { code: 404, .. }) => Ok(()),
            Err(e) => Err(classify(e)),
        }
    }

    async fn destroy(&self, path: &str) -> Result<(), SecretStoreError> {
        match kv2::delete_metadata(&self.client, &self.mount, &self.full(path)).await {
            Ok(()) | Err(ClientError::APIError { code: 404, .. }) => Ok(()),
            Err(e) => Err(classify(e)),
        }
    }

    async fn check(&self) -> Result<(), SecretStoreError> {
        match kv2::list(&self.client, &self.mount, &self.prefix).await {
            Ok(_) | Err(ClientError::APIError { code: 404, .. }) => Ok(()),
            Err(e) => Err(classify(e)),
        }
    }
}

fn classify(e: ClientError) -> SecretStoreError {
    match e {
        ClientError::APIError { code, .. } => SecretStoreError::Refused(code),
        ClientError::JsonParseError { .. } => SecretStoreError::Malformed,
        other => SecretStoreError::Unavailable(describe(&other)),
    }
}

/// A one-line description of a client error. OpenBao's own error texts never contain the
/// token or the data written.
fn describe(e: &ClientError) -> String {
    match e {
        ClientError::RestClientError { .. } => "connection failed".into(),
        other => other.to_string(),
    }
}
