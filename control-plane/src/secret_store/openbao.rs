//! The production [`SecretStore`]: OpenBao or Vault, KV version 2 engine, on one server or a
//! cluster (integrated storage, Raft).
//!
//! Layout: `<mount>/<prefix><path>`; the KV version number of each entry is how the
//! reconciler notices a certificate rotated directly in the store.
//!
//! - **Several addresses.** A request goes to the node that last answered as the active
//!   one; when that node cannot be reached, or answers as a standby, sealed or leaderless
//!   node would (307, 429, 472, 473, 503, a 500 "not active"), the next address is tried, and
//!   the one that answers is remembered. A 307 is never followed: its `Location` is whatever
//!   the node believes the leader is (during an election, the dead one), and following it
//!   would send the token to an address the operator never named.
//! - **Authentication.** A fixed token (`--vault-token`, for development), or AppRole: a
//!   login with the role id and secret id from files, the client token kept in memory only
//!   ([`Secret`]), renewed at about 2/3 of its TTL by a background task, and obtained again
//!   by a new login when renewal fails or a request is refused as with an expired token.
//!
//! The client is plain `reqwest` against the KV v2 HTTP API, so every status and error text
//! is seen as OpenBao sent it (which decides whether to try another node).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use tokio::sync::{Mutex, RwLock};
use tokio::time::Instant;

use super::{JsonMap, SecretStore, SecretStoreError};
use crate::secret::Secret;

/// How mtlsgate proves itself to the store.
pub(crate) enum Auth {
    /// A token given as is (`--vault-token`): never renewed, never replaced. Development.
    Token(Secret),
    /// AppRole: log in with a role id and a secret id (`auth/<mount>/login`).
    AppRole(AppRole),
}

/// AppRole credentials: the role id (read once, at start) and the file holding the secret
/// id, read again at every login so a rotated secret id is picked up without a restart.
pub(crate) struct AppRole {
    mount: String,
    role_id: Secret,
    secret_id_file: PathBuf,
}

impl AppRole {
    /// Reads both files now, so a missing or empty one stops the start, not the first
    /// request.
    pub(crate) fn from_files(
        mount: &str,
        role_id_file: &Path,
        secret_id_file: &Path,
    ) -> Result<AppRole, SecretStoreError> {
        let role_id = read_secret_file(role_id_file)?;
        read_secret_file(secret_id_file)?;
        Ok(AppRole {
            mount: mount.trim_matches('/').to_owned(),
            role_id,
            secret_id_file: secret_id_file.to_owned(),
        })
    }
}

/// A file's content, trimmed, as a secret; an error names the file, never its content.
fn read_secret_file(path: &Path) -> Result<Secret, SecretStoreError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        SecretStoreError::Credentials(format!("cannot read {}: {}", path.display(), e.kind()))
    })?;
    let value = text.trim();
    if value.is_empty() {
        return Err(SecretStoreError::Credentials(format!(
            "{} is empty",
            path.display()
        )));
    }
    Ok(Secret::new(value))
}

/// A handle on a KV v2 mount of OpenBao or Vault. Cheap to clone (shared state).
#[derive(Clone)]
pub(crate) struct OpenBao {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    /// The addresses, as given (`scheme://host:port`, no path).
    nodes: Vec<url::Url>,
    /// The index of the node that last answered: tried first.
    preferred: AtomicUsize,
    /// Whether `preferred` was found active by `sys/health` and has not failed since; until
    /// it is, each request asks the nodes' health first.
    active_known: AtomicBool,
    mount: String,
    prefix: String,
    auth: Auth,
    /// The current AppRole session (`None` before the first login, or with a fixed token).
    session: RwLock<Option<Session>>,
    /// Held while logging in or renewing, so concurrent requests that all see an expired
    /// token cause one login, not one each.
    refreshing: Mutex<()>,
    /// Whether the background renewal runs (started at the first login).
    renewing: AtomicBool,
    logins: AtomicU64,
    renewals: AtomicU64,
}

/// A client token from a login, and when to renew it.
struct Session {
    token: Secret,
    /// Counts logins and renewals, so a request that was refused with an old token does not
    /// throw away a newer one another request already obtained.
    generation: u64,
    renew_at: Instant,
    /// The TTL the login gave: a renewal answering much less (the role's maximum TTL is
    /// near) means a new login instead.
    login_ttl: Duration,
}

/// What a node's answer means for the request.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// This node handled the request (whatever the status): it is the active one.
    Answered,
    /// This node cannot serve now (standby, sealed, no leader, unreachable): try another.
    NextNode(String),
    /// The token is not (or no longer) valid: log in again, then retry once.
    Reauthenticate,
}

/// Classifies one node's answer. `errors` is the body's `errors` array, joined.
///
/// why: OpenBao answers 307 from a standby (to the leader's address, stale during an
/// election), 429/472/473 from standbys and performance standbys on `sys/health`, 503 when
/// sealed or without a leader, and 500 "local node not active but active cluster node not
/// found" while the election runs. None of these means the request was carried out.
fn verdict(status: StatusCode, errors: &str) -> Verdict {
    let lower = errors.to_ascii_lowercase();
    match status.as_u16() {
        307 | 429 | 472 | 473 | 503 => Verdict::NextNode(format!("status {status}")),
        500 if [
            "not active",
            "sealed",
            "standby",
            "no leader",
            "leader not found",
        ]
        .iter()
        .any(|s| lower.contains(s)) =>
        {
            Verdict::NextNode(format!("status {status} (no active node)"))
        }
        403 if lower.contains("permission denied") || lower.contains("invalid token") => {
            Verdict::Reauthenticate
        }
        _ => Verdict::Answered,
    }
}

/// The order to try nodes in: the preferred one first, then the others in turn.
fn rotation(preferred: usize, n: usize) -> impl Iterator<Item = usize> {
    (0..n).map(move |i| (preferred % n.max(1) + i) % n.max(1))
}

/// Whether the URL's host is a loopback address (a literal: a name could resolve anywhere).
fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        _ => false,
    }
}

/// Parses `--vault-addr`: one address or several, comma-separated; each `https`, or plain
/// `http` to a loopback IP literal.
fn parse_nodes(addrs: &str) -> Result<Vec<url::Url>, SecretStoreError> {
    let mut nodes = Vec::new();
    for addr in addrs.split(',').map(str::trim).filter(|a| !a.is_empty()) {
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
        if url.host().is_none() || !matches!(url.path(), "" | "/") || url.query().is_some() {
            return Err(SecretStoreError::Address(format!(
                "{addr}: give scheme://host:port only"
            )));
        }
        nodes.push(url);
    }
    if nodes.is_empty() {
        return Err(SecretStoreError::Address("no address given".into()));
    }
    Ok(nodes)
}

/// The HTTP client for the store: no proxy, no redirects, verified TLS against the system's
/// roots and `ca_file`.
///
/// why: no proxy, because one from HTTP_PROXY/ALL_PROXY would see the token and private
/// keys (in the clear for a loopback http store); no redirects, because a standby's 307
/// could send the token to another host, or from https to http.
fn http_client(
    any_https: bool,
    ca_file: Option<&Path>,
) -> Result<reqwest::Client, SecretStoreError> {
    let mut b = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        // why: a dead node on another host must not cost the whole timeout before the next
        // address is tried.
        .connect_timeout(Duration::from_secs(3))
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none());
    if any_https {
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
        // (No TLS on these links: no roots to load.)
        b = b.tls_certs_only(Vec::new());
    }
    b.build()
        .map_err(|e| SecretStoreError::Unavailable(format!("HTTP client: {e}")))
}

/// The parts of OpenBao's answers mtlsgate reads.
#[derive(Deserialize, Default)]
struct Envelope {
    #[serde(default)]
    data: Option<serde_json::Value>,
    #[serde(default)]
    auth: Option<AuthAnswer>,
    #[serde(default)]
    errors: Vec<String>,
}

#[derive(Deserialize)]
struct AuthAnswer {
    client_token: Secret,
    #[serde(default)]
    lease_duration: u64,
    #[serde(default)]
    renewable: bool,
}

#[derive(Deserialize)]
struct VersionMeta {
    #[serde(default)]
    destroyed: bool,
    #[serde(default)]
    deletion_time: String,
}

#[derive(Deserialize)]
struct Metadata {
    #[serde(default)]
    versions: std::collections::BTreeMap<String, VersionMeta>,
}

#[derive(Deserialize)]
struct WriteAnswer {
    version: u64,
}

#[derive(Deserialize)]
struct ReadAnswer {
    data: Option<JsonMap>,
}

/// One answer from the active node.
struct Answer {
    status: StatusCode,
    body: Envelope,
}

impl OpenBao {
    /// `addrs`: one address or several, comma-separated (the nodes of a cluster).
    /// `ca_file`: the CA (PEM) that verifies an `https` store's certificate, besides the
    /// system's roots. Nothing is sent until the first request (`check` at start).
    pub(crate) fn new(
        addrs: &str,
        auth: Auth,
        mount: &str,
        prefix: &str,
        ca_file: Option<&Path>,
    ) -> Result<Self, SecretStoreError> {
        let nodes = parse_nodes(addrs)?;
        let http = http_client(nodes.iter().any(|u| u.scheme() == "https"), ca_file)?;
        let prefix = if prefix.is_empty() || prefix.ends_with('/') {
            prefix.to_owned()
        } else {
            format!("{prefix}/")
        };
        Ok(OpenBao {
            inner: Arc::new(Inner {
                http,
                nodes,
                preferred: AtomicUsize::new(0),
                active_known: AtomicBool::new(false),
                mount: mount.trim_matches('/').to_owned(),
                prefix,
                auth,
                session: RwLock::new(None),
                refreshing: Mutex::new(()),
                renewing: AtomicBool::new(false),
                logins: AtomicU64::new(0),
                renewals: AtomicU64::new(0),
            }),
        })
    }

    /// How many AppRole logins and token renewals this store made.
    #[cfg(test)]
    pub(crate) fn auth_counts(&self) -> (u64, u64) {
        (
            self.inner.logins.load(Ordering::Relaxed),
            self.inner.renewals.load(Ordering::Relaxed),
        )
    }

    fn full(&self, path: &str) -> String {
        format!("{}{path}", self.inner.prefix)
    }

    /// `<mount>/<kind>/<full path>` (under `/v1/`).
    ///
    /// why: a `.` or `..` segment would be resolved away by the URL and reach outside
    /// mtlsgate's prefix; a `?` or `#` would end the path. No such name is ever valid.
    fn kv_path(&self, kind: &str, full: &str) -> Result<String, SecretStoreError> {
        let last = full.split('/').count().saturating_sub(1);
        let bad = full.split('/').enumerate().any(|(i, seg)| {
            matches!(seg, "." | "..")
                || (seg.is_empty() && i != last)
                || seg.contains(['?', '#', '%', '\\'])
        });
        if bad {
            return Err(SecretStoreError::Address(format!(
                "not a valid entry name: {full:?}"
            )));
        }
        Ok(format!("{}/{kind}/{full}", self.inner.mount))
    }
}

impl Inner {
    /// The token to send, logging in first when there is none yet.
    async fn token(self: &Arc<Self>) -> Result<(Secret, u64), SecretStoreError> {
        match &self.auth {
            Auth::Token(t) => Ok((t.clone(), 0)),
            Auth::AppRole(_) => {
                if let Some(s) = self.session.read().await.as_ref() {
                    return Ok((s.token.clone(), s.generation));
                }
                self.login_unless_newer(None).await
            }
        }
    }

    /// Logs in, unless a session newer than `seen` (the generation a refused request used)
    /// is already there; answers the current token.
    async fn login_unless_newer(
        self: &Arc<Self>,
        seen: Option<u64>,
    ) -> Result<(Secret, u64), SecretStoreError> {
        let _one = self.refreshing.lock().await;
        if let Some(s) = self.session.read().await.as_ref() {
            if seen.is_none_or(|g| s.generation > g) {
                return Ok((s.token.clone(), s.generation));
            }
        }
        self.login().await
    }

    /// `auth/<mount>/login` with the role id and the secret id as the file holds it now.
    /// Called with `refreshing` held.
    async fn login(self: &Arc<Self>) -> Result<(Secret, u64), SecretStoreError> {
        let Auth::AppRole(role) = &self.auth else {
            return Err(SecretStoreError::Refused(403));
        };
        let secret_id = read_secret_file(&role.secret_id_file)?;
        let body = serde_json::json!({
            "role_id": role.role_id.expose(),
            "secret_id": secret_id.expose(),
        });
        let answer = self
            .send(
                Method::POST,
                &format!("auth/{}/login", role.mount),
                None,
                Some(&body),
            )
            .await?;
        let auth = match (answer.status.is_success(), answer.body.auth) {
            (true, Some(a)) => a,
            (true, None) => return Err(SecretStoreError::Malformed),
            // why: not the body's errors (they may quote the request); the status is enough.
            (false, _) => return Err(SecretStoreError::Refused(answer.status.as_u16())),
        };
        let ttl = Duration::from_secs(auth.lease_duration);
        let generation = self.install(auth.client_token.clone(), ttl, ttl).await;
        self.logins.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            ttl_seconds = auth.lease_duration,
            renewable = auth.renewable,
            "logged in to the secret store with AppRole"
        );
        self.start_renewer();
        Ok((auth.client_token, generation))
    }

    /// Keeps a token (new, or just renewed with `ttl` left); answers its generation.
    /// `login_ttl`: the TTL its login gave.
    async fn install(&self, token: Secret, ttl: Duration, login_ttl: Duration) -> u64 {
        let mut session = self.session.write().await;
        let generation = session
            .as_ref()
            .map_or(1, |s| s.generation.saturating_add(1));
        // why: at 2/3 of the TTL, so a slow or failed renewal still leaves a third of it
        // to log in again; a token that is not renewable is replaced by a new login at the
        // same point (its renewal is refused). No TTL: a token that does not expire.
        let renew_in = if ttl.is_zero() {
            Duration::from_secs(3600)
        } else {
            ttl.saturating_mul(2) / 3
        };
        *session = Some(Session {
            token,
            generation,
            renew_at: Instant::now() + renew_in,
            login_ttl,
        });
        generation
    }

    /// Starts the background renewal once (it ends when the store is dropped).
    fn start_renewer(self: &Arc<Self>) {
        if !self.renewing.swap(true, Ordering::Relaxed) {
            tokio::spawn(renew_loop(Arc::downgrade(self)));
        }
    }

    /// Renews the token when it is due; logs in again when renewal is refused or the
    /// renewed TTL has shrunk below half of the login's (the role's maximum TTL is near).
    async fn renew_if_due(self: &Arc<Self>) -> Result<(), SecretStoreError> {
        let _one = self.refreshing.lock().await;
        let (token, login_ttl) = match self.session.read().await.as_ref() {
            Some(s) if s.renew_at <= Instant::now() => (s.token.clone(), s.login_ttl),
            _ => return Ok(()),
        };
        let answer = self
            .send(Method::POST, "auth/token/renew-self", Some(&token), None)
            .await?;
        match (answer.status.is_success(), answer.body.auth) {
            (true, Some(a)) if Duration::from_secs(a.lease_duration) >= login_ttl / 2 => {
                self.install(token, Duration::from_secs(a.lease_duration), login_ttl)
                    .await;
                self.renewals.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    ttl_seconds = a.lease_duration,
                    "renewed the secret store token"
                );
                Ok(())
            }
            (ok, _) => {
                tracing::info!(
                    renewed = ok,
                    status = answer.status.as_u16(),
                    "the secret store token cannot be renewed (further): logging in again"
                );
                self.login().await.map(|_| ())
            }
        }
    }

    /// Finds the active node by its health (200: active; 429 standby, 472/473 other
    /// standbys, 503 sealed, 501 not initialized): unauthenticated, so no token is sent
    /// to a node that might not be the active one.
    ///
    /// why: a standby may answer a read from its own copy of the data, which may lag the
    /// leader (OpenBao's standby reads, unless the nodes set `disable_standby_reads`), and
    /// mtlsgate reads back the version it just wrote: requests go to the active node itself.
    async fn find_active(&self) {
        let n = self.nodes.len();
        for i in rotation(self.preferred.load(Ordering::Relaxed), n) {
            let Some(node) = self.nodes.get(i) else {
                continue;
            };
            let mut url = node.clone();
            url.set_path("/v1/sys/health");
            let ok = self
                .http
                .get(url)
                .timeout(Duration::from_secs(3))
                .send()
                .await
                .is_ok_and(|r| r.status() == StatusCode::OK);
            if ok {
                if self.preferred.swap(i, Ordering::Relaxed) != i {
                    tracing::info!(node = %host_of(node), "the secret store's active node");
                }
                self.active_known.store(true, Ordering::Relaxed);
                return;
            }
        }
    }

    /// Sends one request to the active node: tries each address in turn (the active one, or
    /// the last good one, first) until one answers as the active node would.
    async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&Secret>,
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, SecretStoreError> {
        let n = self.nodes.len();
        if n > 1 && !self.active_known.load(Ordering::Relaxed) {
            self.find_active().await;
        }
        let mut last = String::from("no address");
        for i in rotation(self.preferred.load(Ordering::Relaxed), n) {
            let Some(node) = self.nodes.get(i) else {
                continue;
            };
            let mut url = node.clone();
            let (p, query) = match path.split_once('?') {
                Some((p, q)) => (p, Some(q)),
                None => (path, None),
            };
            url.set_path(&format!("/v1/{p}"));
            url.set_query(query);
            let mut req = self.http.request(method.clone(), url);
            if let Some(t) = token {
                req = req.header("X-Vault-Token", t.expose());
            }
            if let Some(b) = body {
                req = req
                    .header("Content-Type", "application/json")
                    .body(serde_json::to_vec(b).map_err(|_| SecretStoreError::Malformed)?);
            }
            let response = match req.send().await {
                Ok(r) => r,
                // why: only a failed connection is safe to try elsewhere: the request never
                // reached a node. A timeout after sending may have been carried out, and a
                // write sent twice would make two versions.
                Err(e) if e.is_connect() => {
                    last = format!("{}: connection failed", host_of(node));
                    self.active_known.store(false, Ordering::Relaxed);
                    continue;
                }
                Err(e) if e.is_timeout() => {
                    return Err(SecretStoreError::Unavailable(format!(
                        "{}: no answer in time",
                        host_of(node)
                    )))
                }
                Err(_) => {
                    return Err(SecretStoreError::Unavailable(format!(
                        "{}: request failed",
                        host_of(node)
                    )))
                }
            };
            let status = response.status();
            let bytes = response.bytes().await.map_err(|_| {
                SecretStoreError::Unavailable(format!("{}: answer cut short", host_of(node)))
            })?;
            let body: Envelope = if bytes.is_empty() {
                Envelope::default()
            } else {
                match serde_json::from_slice(&bytes) {
                    Ok(b) => b,
                    Err(_) if !status.is_success() => Envelope::default(),
                    Err(_) => return Err(SecretStoreError::Malformed),
                }
            };
            match verdict(status, &body.errors.join("; ")) {
                Verdict::NextNode(why) => {
                    last = format!("{}: {why}", host_of(node));
                    self.active_known.store(false, Ordering::Relaxed);
                    continue;
                }
                Verdict::Answered | Verdict::Reauthenticate => {
                    // (A node reached by moving on may be a standby that forwarded the
                    // request: the next request asks the nodes' health again.)
                    self.preferred.store(i, Ordering::Relaxed);
                    return Ok(Answer { status, body });
                }
            }
        }
        Err(SecretStoreError::Unavailable(format!(
            "no active node among {n} address(es) (last: {last})"
        )))
    }
}

/// `host:port` of a node, for logs and errors (never a path or a query).
fn host_of(url: &url::Url) -> String {
    match (url.host_str(), url.port_or_known_default()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_owned(),
        _ => String::from("?"),
    }
}

/// Renews the token at 2/3 of its TTL for as long as the store lives. A failed renewal
/// (the store unreachable) is tried again a few seconds later; a refused one logs in again.
async fn renew_loop(store: Weak<Inner>) {
    loop {
        let wait = {
            let Some(inner) = store.upgrade() else { return };
            let due = inner.session.read().await.as_ref().map(|s| s.renew_at);
            due.map_or(Duration::from_secs(5), |d| {
                d.saturating_duration_since(Instant::now())
            })
        };
        tokio::time::sleep(wait.max(Duration::from_millis(200))).await;
        let Some(inner) = store.upgrade() else { return };
        if let Err(e) = inner.renew_if_due().await {
            tracing::warn!(error = %e, "cannot renew the secret store token; trying again shortly");
            // why: soon enough that an election (a second or two) does not outlast the
            // third of the TTL left, rarely enough not to flood an unreachable store.
            let ttl = inner
                .session
                .read()
                .await
                .as_ref()
                .map_or(Duration::ZERO, |s| s.login_ttl);
            drop(inner);
            let again = (ttl / 20).clamp(Duration::from_millis(200), Duration::from_secs(5));
            tokio::time::sleep(again).await;
        }
    }
}

impl OpenBao {
    /// One authenticated request; a refusal that looks like an expired or revoked token
    /// logs in again (AppRole) and retries once.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, SecretStoreError> {
        let inner = &self.inner;
        let (token, generation) = inner.token().await?;
        let answer = inner.send(method.clone(), path, Some(&token), body).await?;
        let refused = verdict(answer.status, &answer.body.errors.join("; "));
        match (&inner.auth, refused) {
            (Auth::AppRole(_), Verdict::Reauthenticate) => {
                let (token, _) = inner.login_unless_newer(Some(generation)).await?;
                inner.send(method, path, Some(&token), body).await
            }
            _ => Ok(answer),
        }
    }

    async fn read_metadata(&self, full: &str) -> Result<Option<Metadata>, SecretStoreError> {
        let a = self
            .call(Method::GET, &self.kv_path("metadata", full)?, None)
            .await?;
        match a.status.as_u16() {
            200 => decode(a.body.data).map(Some),
            404 => Ok(None),
            code => Err(SecretStoreError::Refused(code)),
        }
    }
}

fn decode<T: serde::de::DeserializeOwned>(
    data: Option<serde_json::Value>,
) -> Result<T, SecretStoreError> {
    data.and_then(|d| serde_json::from_value(d).ok())
        .ok_or(SecretStoreError::Malformed)
}

fn success_or_refused(a: &Answer, also_fine: &[u16]) -> Result<(), SecretStoreError> {
    if a.status.is_success() || also_fine.contains(&a.status.as_u16()) {
        Ok(())
    } else {
        Err(SecretStoreError::Refused(a.status.as_u16()))
    }
}

#[async_trait::async_trait]
impl SecretStore for OpenBao {
    async fn write(&self, path: &str, value: &JsonMap) -> Result<u64, SecretStoreError> {
        let body = serde_json::json!({ "data": value });
        let a = self
            .call(
                Method::POST,
                &self.kv_path("data", &self.full(path))?,
                Some(&body),
            )
            .await?;
        success_or_refused(&a, &[])?;
        decode::<WriteAnswer>(a.body.data).map(|w| w.version)
    }

    async fn read(
        &self,
        path: &str,
        version: Option<u64>,
    ) -> Result<Option<JsonMap>, SecretStoreError> {
        let mut p = self.kv_path("data", &self.full(path))?;
        if let Some(v) = version {
            p = format!("{p}?version={v}");
        }
        let a = self.call(Method::GET, &p, None).await?;
        match a.status.as_u16() {
            // why: a deleted or destroyed version answers 404 (with its metadata as the
            // body), and so does an entry that never was.
            404 => Ok(None),
            200 => decode::<ReadAnswer>(a.body.data).map(|r| r.data),
            code => Err(SecretStoreError::Refused(code)),
        }
    }

    async fn current_version(&self, path: &str) -> Result<Option<u64>, SecretStoreError> {
        // why: the newest *live* version, not KV's `current_version`: when the API undoes
        // a failed write by destroying the version it made, that version is still the
        // entry's "current" one, yet the entry is as it was before the write.
        Ok(self.read_metadata(&self.full(path)).await?.and_then(|m| {
            m.versions
                .iter()
                .filter(|(_, v)| !v.destroyed && v.deletion_time.is_empty())
                .filter_map(|(n, _)| n.parse::<u64>().ok())
                .max()
        }))
    }

    async fn destroy_versions(&self, path: &str, versions: &[u64]) -> Result<(), SecretStoreError> {
        if versions.is_empty() {
            return Ok(());
        }
        let body = serde_json::json!({ "versions": versions });
        let a = self
            .call(
                Method::POST,
                &self.kv_path("destroy", &self.full(path))?,
                Some(&body),
            )
            .await?;
        success_or_refused(&a, &[404])
    }

    async fn destroy(&self, path: &str) -> Result<(), SecretStoreError> {
        let a = self
            .call(
                Method::DELETE,
                &self.kv_path("metadata", &self.full(path))?,
                None,
            )
            .await?;
        success_or_refused(&a, &[404])
    }

    async fn check(&self) -> Result<(), SecretStoreError> {
        let p = format!(
            "{}?list=true",
            self.kv_path("metadata", &self.inner.prefix)?
        );
        let a = self.call(Method::GET, &p, None).await?;
        success_or_refused(&a, &[404])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standby_sealed_and_leaderless_answers_move_to_the_next_node() {
        for code in [307, 429, 472, 473, 503] {
            let status = StatusCode::from_u16(code).unwrap();
            assert!(
                matches!(verdict(status, ""), Verdict::NextNode(_)),
                "{code}"
            );
        }
        for text in [
            "local node not active but active cluster node not found",
            "Vault is sealed",
            "node is in standby mode",
        ] {
            assert!(
                matches!(
                    verdict(StatusCode::INTERNAL_SERVER_ERROR, text),
                    Verdict::NextNode(_)
                ),
                "{text}"
            );
        }
        // Any other answer is the node's own: it is the active one.
        assert_eq!(
            verdict(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
            Verdict::Answered
        );
        for code in [200, 204, 400, 404, 405] {
            let status = StatusCode::from_u16(code).unwrap();
            assert_eq!(verdict(status, ""), Verdict::Answered, "{code}");
        }
    }

    #[test]
    fn an_expired_or_revoked_token_means_logging_in_again() {
        assert_eq!(
            verdict(StatusCode::FORBIDDEN, "permission denied"),
            Verdict::Reauthenticate
        );
        assert_eq!(
            verdict(StatusCode::FORBIDDEN, "2 errors occurred: invalid token"),
            Verdict::Reauthenticate
        );
        // A 403 for another reason is the answer.
        assert_eq!(verdict(StatusCode::FORBIDDEN, "nope"), Verdict::Answered);
    }

    #[test]
    fn nodes_are_tried_from_the_last_good_one_round_the_list() {
        assert_eq!(rotation(0, 3).collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(rotation(2, 3).collect::<Vec<_>>(), vec![2, 0, 1]);
        assert_eq!(rotation(7, 3).collect::<Vec<_>>(), vec![1, 2, 0]);
        assert_eq!(rotation(0, 1).collect::<Vec<_>>(), vec![0]);
        assert_eq!(rotation(0, 0).count(), 0);
    }

    #[test]
    fn addresses_are_a_list_of_https_or_loopback_http_base_urls() {
        let nodes =
            parse_nodes("http://127.0.0.1:8200, http://127.0.1.2:8200,https://b.example").unwrap();
        assert_eq!(nodes.len(), 3);
        assert_eq!(parse_nodes("http://[::1]:8200").unwrap().len(), 1);
        for bad in [
            "",
            " , ",
            "http://10.0.0.1:8200",
            "http://127.0.0.1:8200,http://localhost:8200",
            "ftp://127.0.0.1",
            "https://b.example/v1/",
            "https://b.example?x=1",
            "not a url",
        ] {
            assert!(
                matches!(parse_nodes(bad), Err(SecretStoreError::Address(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn credential_files_are_read_and_named_in_errors_never_quoted() {
        let dir = std::env::temp_dir().join(format!(
            "mtlsgate-approle-{}",
            hex::encode(crate::random::bytes::<8>())
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let (role, secret, empty) = (dir.join("role"), dir.join("secret"), dir.join("empty"));
        std::fs::write(&role, "role-1234\n").unwrap();
        std::fs::write(&secret, "s3cr3t-value\n").unwrap();
        std::fs::write(&empty, "\n").unwrap();
        let ok = AppRole::from_files("approle", &role, &secret).unwrap();
        assert_eq!(ok.role_id.expose(), "role-1234");
        let e = AppRole::from_files("approle", &role, &empty).err().unwrap();
        assert!(e.to_string().contains("empty"), "{e}");
        let e = AppRole::from_files("approle", &dir.join("none"), &secret)
            .err()
            .unwrap();
        assert!(e.to_string().contains("none"), "{e}");
        assert!(!format!("{e} {e:?}").contains("s3cr3t"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
