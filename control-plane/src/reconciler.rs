//! The reconciler: keeps [`Desired`] current from the store and the secret store.
//!
//! Two triggers: the API's own writes (`kick`, after it has told the cache the new material,
//! so nothing is re-read) and a periodic watch of Vault's KV metadata, which catches
//! certificates rotated directly in Vault and certificates deleted from it.
//!
//! What is served is what the database says: each certificate's and credential's row pins
//! the secret store version it points at, and only that version is read (security review
//! finding 10). A rotation made directly in Vault is adopted by re-pinning the row first
//! ([`Reconciler::watch_vault`]); a version the API wrote but never committed is not. The periodic
//! rebuild also re-reads users, so one added with `mtlsgate user add` (another process)
//! reaches the gateway within a watch period even if nobody kicks.
//!
//! Every rebuild also collects what the runtime snapshot carries beside mappings: the
//! egress allowlist, live users, AppKeys (from the in-memory directory) and token keys.
//!
//! If Vault is unreachable, the last known material keeps being served: an outage of the
//! secret store must not take certificates away from a running gateway.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use mtlsgate_filter::snapshot::{AppKeyEntry, TokenKey, Unavailable, UserRef};
use tokio::sync::{watch, Mutex, Notify};

use crate::appkeys::Directory;
use crate::credential_kind::{fixed_authorization, CredentialSecrets, CredentialSettings};
use crate::credential_tokens::CredentialTokens;
use crate::desired::{
    target_hosts, Attachments, Callers, CredentialTls, Desired, Resolution, Resolutions,
};
use crate::guarded_dns::{GuardedDns, LookupError};
use crate::p12::Material;
use crate::rejections::Rejections;
use crate::secret_store::{Secrets, WriteId};
use crate::store::{Store, StoreError};

/// Material cache: certificate id → (Vault version, material).
///
/// Holds only versions a committed row has pinned — read for the version a row names,
/// remembered by the API after its commit, or adopted by the watch after its
/// compare-and-set — never simply Vault's newest. So whatever it serves is what the database
/// says, even while an API write is between Vault and its commit, or after one failed.
type Materials = HashMap<i64, (u64, Arc<Material>)>;

/// Where the snapshot's caller credentials come from, besides the store.
pub struct CallerSources {
    /// Live AppKeys with their secrets; the API updates it, then kicks.
    pub appkeys: Arc<Directory>,
    /// Public halves of the token signing keys accepted now; whoever changes them (a key
    /// rotated in the secret store, a retired key expired) kicks.
    pub token_keys: watch::Receiver<Vec<TokenKey>>,
}

impl CallerSources {
    /// The token keys as the snapshot carries them (base64url, no padding).
    pub fn token_keys(keys: &[(String, [u8; 32])]) -> Vec<TokenKey> {
        keys.iter()
            .map(|(kid, key)| TokenKey {
                kid: kid.clone(),
                public_key: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key),
            })
            .collect()
    }

    fn app_keys(&self) -> Vec<AppKeyEntry> {
        self.appkeys
            .all()
            .into_iter()
            .map(|k| AppKeyEntry {
                id: k.row.id as u64,
                account: k.row.account,
                consumer_key: k.row.consumer_key,
                access_token: k.row.access_token,
                consumer_secret: k.consumer_secret.expose().to_owned(),
                access_token_secret: k.token_secret.expose().to_owned(),
                privileges: k.row.privileges,
            })
            .collect()
    }
}

/// What an attached credential of a fixed kind brings.
enum Attached {
    Header(String),
    Tls(Arc<CredentialTls>),
}

impl Attached {
    /// From the credential's row and its secrets in the secret store; `None` when they
    /// cannot be used (written by something other than the API, or a kind that attaches
    /// nothing by itself).
    fn open(
        c: &crate::store::CredentialRow,
        secrets: &serde_json::Map<String, serde_json::Value>,
    ) -> Option<Attached> {
        let secrets = CredentialSecrets::from_map(c.kind(), secrets).ok()?;
        let (CredentialSettings::MutualAuthentication(settings), CredentialSecrets::Mutual(keys)) =
            (&c.settings, &secrets)
        else {
            return fixed_authorization(&c.settings, &secrets).map(Attached::Header);
        };
        let store = base64::engine::general_purpose::STANDARD
            .decode(keys.key_certificate.expose().trim())
            .ok()?;
        let opened = crate::keystore::open(&store, keys.key_certificate_password.expose()).ok()?;
        Some(Attached::Tls(Arc::new(CredentialTls {
            material: Arc::new(opened.material),
            trust: keys
                .trust_certificate
                .as_ref()
                .map(|t| t.expose().to_owned()),
            tls: settings.tls_range().ok()?,
            serial: opened.info.serial_number,
        })))
    }
}

impl Attached {
    /// [`Attached::open`] on a blocking thread: opening a key store derives keys (within the
    /// key-store budget), which must not hold the async workers ADS and the feed share.
    async fn open_blocking(
        c: crate::store::CredentialRow,
        secrets: serde_json::Map<String, serde_json::Value>,
    ) -> Option<Attached> {
        tokio::task::spawn_blocking(move || Attached::open(&c, &secrets))
            .await
            .ok()
            .flatten()
    }
}

/// What the last full rebuild was made from.
#[derive(Debug, Clone, Default)]
struct Built {
    /// The store's generation it read; `None` before the first.
    generation: Option<i64>,
    /// The certificates it saw, with the versions their rows pinned: what the periodic
    /// watch checks in Vault.
    certificates: Vec<Pinned>,
    /// Everything could be read (nothing to retry).
    complete: bool,
}

/// A certificate as the material cache needs it: its row's id, account, and the Vault
/// version the row pins.
#[derive(Debug, Clone)]
struct Pinned {
    id: i64,
    account: String,
    version: u64,
}

/// How long a marked Vault version that no row names (an API write whose commit failed and
/// whose undo failed too) is left alone before the watch destroys it. Far longer than any
/// API write can be in flight (its Vault call and its commit each give up within seconds),
/// so a write that is about to commit is never taken for garbage.
const STRAY_GRACE: Duration = Duration::from_secs(15 * 60);

/// What [`Reconciler::watch_vault`] and [`Reconciler::load_pinned`] did.
struct Refreshed {
    changed: bool,
    /// A Vault call failed: something may be missing.
    failed: bool,
}

pub struct Reconciler {
    store: Store,
    secrets: Secrets,
    callers: CallerSources,
    materials: Mutex<Materials>,
    /// What each attached credential brings, for the kinds fixed by their secrets (Basic,
    /// Access Token, Mutual Authentication): read from Vault once, until forgotten.
    /// Keyed by credential id, with the secrets version it was read from: an entry for
    /// another version than the row pins is stale and read again.
    attached: Mutex<HashMap<i64, (u64, Attached)>>,
    /// Marked Vault versions no row names, by (certificate, version), and when the watch
    /// first saw each: destroyed once older than [`STRAY_GRACE`].
    strays: Mutex<HashMap<(i64, u64), std::time::Instant>>,
    /// The current access tokens of OAuth 2.0 and Transfer to Messaging credentials.
    access_tokens: Arc<CredentialTokens>,
    kick: Notify,
    tx: watch::Sender<Arc<Desired>>,
    /// The same desired state with its epoch and the write tickets it covers, for whoever
    /// proves what a gateway enforces (ADS, the feed, `Prefer: wait`).
    published: watch::Sender<Published>,
    /// The last write ticket handed out ([`Reconciler::ticket`]).
    tickets: std::sync::atomic::AtomicU64,
    built: Mutex<Built>,
    /// Looks up and checks target hosts; Envoy gets only what it answered.
    dns: GuardedDns,
    /// The last resolution of every target host in use.
    resolutions: Mutex<Resolutions>,
    /// What gateways refused (NACKed): built without, until it changes or expires.
    rejections: Arc<Rejections>,
}

/// How long a resource a gateway refused is withheld before it is offered again (if the
/// refusal came from the gateway host, not the resource, it heals by itself).
const REJECTION_TTL: Duration = Duration::from_secs(600);

/// How often one resource an ambiguous refusal blamed is offered again alone: long enough
/// for every gateway to answer the offer.
const AMBIGUITY_PROBE: Duration = Duration::from_secs(2);

/// Lookups made at once when many hosts need resolving.
const LOOKUPS_AT_ONCE: usize = 16;

impl Reconciler {
    pub fn new(
        store: Store,
        secrets: Secrets,
        callers: CallerSources,
        access_tokens: Arc<CredentialTokens>,
        dns: GuardedDns,
    ) -> Arc<Self> {
        let (tx, _) = watch::channel(Arc::new(Desired::default()));
        let (published, _) = watch::channel(Published::default());
        Arc::new(Reconciler {
            store,
            secrets,
            callers,
            materials: Mutex::default(),
            attached: Mutex::default(),
            strays: Mutex::default(),
            access_tokens,
            kick: Notify::new(),
            tx,
            published,
            tickets: std::sync::atomic::AtomicU64::new(0),
            built: Mutex::default(),
            dns,
            resolutions: Mutex::default(),
            rejections: Arc::new(Rejections::new(REJECTION_TTL)),
        })
    }

    /// What the current desired state does with each mapping it holds: `None` when served,
    /// else why not. Mappings it does not hold (disabled, or not built yet) are absent.
    pub fn mapping_states(&self) -> HashMap<u64, Option<Unavailable>> {
        self.tx
            .borrow()
            .mappings
            .iter()
            .map(|r| (r.entry.id, r.entry.unavailable))
            .collect()
    }

    /// Where the xDS server records what gateways refuse.
    pub fn rejections(&self) -> Arc<Rejections> {
        self.rejections.clone()
    }

    /// Resolves `hosts`, from `previous` where given: a failed lookup of a host that had
    /// addresses keeps them (a DNS outage must not take partners away), a refused one never
    /// does.
    async fn resolve(
        &self,
        hosts: impl IntoIterator<Item = (String, u16)>,
        previous: &Resolutions,
    ) -> Resolutions {
        use futures::StreamExt;
        futures::stream::iter(hosts)
            .map(|(host, port)| async move {
                let found = self.dns.resolve(&host, port).await;
                let resolution = match found {
                    Ok(addrs) => Resolution::Addresses(addrs),
                    Err(LookupError::NotAllowed(why)) => {
                        tracing::warn!(host = %host, port, reason = %why, "target refused by the address policy; its mappings are refused with target_not_allowed");
                        Resolution::NotAllowed
                    }
                    Err(e) => match previous.get(&(host.clone(), port)) {
                        Some(last @ Resolution::Addresses(_)) => {
                            tracing::warn!(host = %host, port, error = %e, "target lookup failed; keeping its last addresses");
                            last.clone()
                        }
                        _ => {
                            tracing::warn!(host = %host, port, error = %e, "target does not resolve; its mappings are refused with target_unresolved");
                            Resolution::Unresolved
                        }
                    },
                };
                ((host, port), resolution)
            })
            .buffer_unordered(LOOKUPS_AT_ONCE)
            .collect()
            .await
    }

    /// The resolutions of `hosts`: cached ones as they are, new ones looked up now.
    async fn resolutions_for(&self, hosts: &BTreeSet<(String, u16)>) -> Resolutions {
        let cached = self.resolutions.lock().await.clone();
        let missing: Vec<(String, u16)> = hosts
            .iter()
            .filter(|h| !cached.contains_key(*h))
            .cloned()
            .collect();
        let fresh = self.resolve(missing, &cached).await;
        let mut cache = self.resolutions.lock().await;
        cache.extend(fresh);
        cache.retain(|h, _| hosts.contains(h));
        cache.clone()
    }

    /// Looks every target host up again; answers whether any resolves differently, which
    /// the caller turns into a rebuild.
    async fn refresh_dns(&self) -> bool {
        let cached = self.resolutions.lock().await.clone();
        let fresh = self.resolve(cached.keys().cloned(), &cached).await;
        let mut cache = self.resolutions.lock().await;
        let mut changed = false;
        for (host, r) in fresh {
            // Only hosts still in use (a rebuild may have dropped some meanwhile).
            if let Some(slot) = cache.get_mut(&host) {
                if *slot != r {
                    tracing::info!(host = %host.0, port = host.1, "target resolves differently; updating its endpoints");
                    *slot = r;
                    changed = true;
                }
            }
        }
        changed
    }

    /// The current desired state and its changes.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Desired>> {
        self.tx.subscribe()
    }

    /// The current desired state with its epoch and the write tickets it covers.
    pub fn published(&self) -> watch::Receiver<Published> {
        self.published.subscribe()
    }

    /// Hands a write that has committed (and told the in-memory directories) a ticket, and
    /// asks for a rebuild now: every state published with `covers` at or past the ticket was
    /// built from reads made after the write, so it holds it.
    pub fn ticket(&self) -> u64 {
        use std::sync::atomic::Ordering;
        // why: SeqCst pairs with the load at the start of `rebuild`: a rebuild that reads the
        // new value reads the store after this write's commit.
        let ticket = self.tickets.fetch_add(1, Ordering::SeqCst).wrapping_add(1);
        self.kick.notify_one();
        ticket
    }

    /// Whether a ticket is waiting for a full rebuild.
    fn tickets_pending(&self) -> bool {
        self.tickets.load(std::sync::atomic::Ordering::SeqCst) > self.published.borrow().covers
    }

    /// Records material the API has just written to Vault and committed to the row (never
    /// before the commit: the cache holds committed versions only), then rebuilds.
    pub async fn remember(&self, certificate_id: i64, vault_version: u64, material: Material) {
        self.materials
            .lock()
            .await
            .insert(certificate_id, (vault_version, Arc::new(material)));
        self.kick.notify_one();
    }

    /// Forgets a deleted certificate, then rebuilds.
    pub async fn forget(&self, certificate_id: i64) {
        self.materials.lock().await.remove(&certificate_id);
        self.kick.notify_one();
    }

    /// Forgets a changed or deleted credential's header, then rebuilds.
    pub async fn forget_credential(&self, credential_id: i64) {
        self.attached.lock().await.remove(&credential_id);
        self.kick.notify_one();
    }

    /// What the credentials attached to enabled mappings bring, reading Vault for those not
    /// cached yet. A credential Vault cannot give, that cannot be opened, or whose token is
    /// not (or no longer) valid, keeps its mappings out of service.
    /// Also answers whether every credential could be read (false: try again next watch).
    async fn attachments(&self) -> Result<(Attachments, bool), StoreError> {
        let attached = self.store.attached_credentials().await?;
        let mut cache = self.attached.lock().await;
        let mut all_read = true;
        let mut out = Attachments {
            override_accounts: self
                .store
                .accounts_allowing_override()
                .await?
                .into_iter()
                .collect(),
            ..Attachments::default()
        };
        for c in &attached {
            if c.kind().needs_tokens() {
                if let Some(h) = self.access_tokens.header(c.id) {
                    out.headers.insert(c.id, h);
                }
                continue;
            }
            // why: the version the row pins, not Vault's newest: an update whose commit
            // failed (or has not happened yet) wrote a newer one the row does not name.
            if cache.get(&c.id).is_none_or(|(v, _)| *v != c.secret_version) {
                cache.remove(&c.id);
                match self
                    .secrets
                    .get_credential(&c.account, c.id, c.secret_version)
                    .await
                {
                    Ok(Some(secrets)) => match Attached::open_blocking(c.clone(), secrets).await {
                        Some(a) => {
                            cache.insert(c.id, (c.secret_version, a));
                        }
                        None => tracing::warn!(
                            credential = c.id,
                            "credential in Vault cannot be used; its mappings are not served"
                        ),
                    },
                    Ok(None) => tracing::warn!(
                        credential = c.id,
                        version = c.secret_version,
                        "credential has no secrets in Vault (at the version its row pins); its mappings are not served"
                    ),
                    Err(e) => {
                        all_read = false;
                        tracing::warn!(credential = c.id, error = %e, "cannot read credential from Vault")
                    }
                }
            }
            match cache.get(&c.id) {
                Some((_, Attached::Header(h))) => {
                    out.headers.insert(c.id, h.clone());
                }
                Some((_, Attached::Tls(t))) => {
                    out.tls.insert(c.id, t.clone());
                }
                None => {}
            }
        }
        Ok((out, all_read))
    }

    /// Asks for a rebuild (after a metadata-only change such as a new mapping, an AppKey,
    /// a user or the egress allowlist).
    /// The store generation the last rebuild read (`None` before the first).
    pub async fn built_generation(&self) -> Option<i64> {
        self.built.lock().await.generation
    }

    pub fn kick(&self) {
        self.kick.notify_one();
    }

    /// Kicks, then waits (at most `within`) until the published state satisfies `done`.
    /// For a change made by another process (a user added on the command line) that a
    /// caller is about to rely on. Answers whether it got there.
    pub async fn kick_until(&self, done: impl Fn(&Desired) -> bool, within: Duration) -> bool {
        let mut rx = self.subscribe();
        if done(&rx.borrow_and_update()) {
            return true;
        }
        self.kick();
        tokio::time::timeout(within, rx.wait_for(|d| done(d)))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The Vault version and chain of the material the gateway is given for a certificate
    /// (what [`Desired::build`] receives), for tests.
    #[cfg(test)]
    pub(crate) async fn served_material(&self, certificate_id: i64) -> Option<(u64, String)> {
        self.materials
            .lock()
            .await
            .get(&certificate_id)
            .map(|(v, m)| (*v, m.chain_pem.clone()))
    }

    /// Whether the certificate's material is present in Vault as last seen.
    pub async fn has_material(&self, certificate_id: i64) -> bool {
        self.materials.lock().await.contains_key(&certificate_id)
    }

    /// The periodic watch of Vault: asks for every certificate's newest live version and
    /// compares it with the version its row pinned (`known`, from the last rebuild).
    ///
    /// - The same: nothing to do.
    /// - None at all: the entry was deleted or destroyed in Vault; no longer served.
    /// - Older: the pinned version itself is gone; no longer served (never a silent
    ///   roll-back to an older key; an entry destroyed and written again in Vault starts
    ///   over at version 1, so it comes back through an upload).
    /// - Newer, and without the API's mark or with the row's own mark (`bao kv put` of
    ///   the two fields, or `bao kv patch`): an operator rotated the certificate directly in
    ///   Vault. Adopted by re-pinning the row, compare-and-set on the version it pinned, so
    ///   the database still says what the gateway presents; then served.
    /// - Newer, with a mark the row does not name: an API write that has not committed, or
    ///   whose commit failed and whose undo failed too. Never served; destroyed as garbage
    ///   once it has been seen for [`STRAY_GRACE`].
    ///
    /// Answers whether the cache (or a row) changed.
    async fn watch_vault(&self, known: &[Pinned]) -> Refreshed {
        let mut materials = self.materials.lock().await.clone();
        let started = versions(&materials);
        let mut changed = false;
        let mut failed = false;
        let mut strays_seen = HashSet::new();
        for c in known {
            let current = match self.secrets.certificate_version(&c.account, c.id).await {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(error = %e, "Vault watch failed; keeping the last known certificates");
                    failed = true;
                    break;
                }
            };
            match current {
                Some(v) if v == c.version => {}
                Some(v) if v > c.version => match self.newer_version(c, v, &mut materials).await {
                    Ok(Newer::Adopted | Newer::RowMoved) => changed = true,
                    Ok(Newer::Stray) => {
                        strays_seen.insert((c.id, v));
                    }
                    Ok(Newer::Gone) => {}
                    Err(()) => failed = true,
                },
                _ => {
                    if materials.remove(&c.id).is_some() {
                        tracing::warn!(
                            certificate = c.id,
                            pinned = c.version,
                            "certificate is gone from Vault (at the version its row pins); no longer served"
                        );
                        changed = true;
                    }
                }
            }
        }
        if !failed {
            self.strays
                .lock()
                .await
                .retain(|k, _| strays_seen.contains(k));
        }
        if changed {
            self.merge(&started, &materials).await;
        }
        Refreshed { changed, failed }
    }

    /// [`Reconciler::watch_vault`] on a certificate whose newest Vault version `v` is newer
    /// than the one its row pinned.
    async fn newer_version(
        &self,
        c: &Pinned,
        v: u64,
        materials: &mut Materials,
    ) -> Result<Newer, ()> {
        let stored = match self.secrets.get_certificate(&c.account, c.id, v).await {
            Ok(Some(stored)) => stored,
            Ok(None) => return Ok(Newer::Gone),
            Err(e) => {
                tracing::warn!(certificate = c.id, error = %e, "cannot read certificate from Vault");
                return Err(());
            }
        };
        // The row as it is now, not as the last rebuild saw it.
        let pin = match self.store.certificate_pin(c.id).await {
            Ok(Some(pin)) => pin,
            Ok(None) => return Ok(Newer::RowMoved),
            Err(e) => {
                tracing::warn!(certificate = c.id, error = %e, "cannot read a certificate's row");
                return Err(());
            }
        };
        if pin.0 != c.version {
            // An API write committed since (or another control plane adopted): rebuild.
            return Ok(Newer::RowMoved);
        }
        let row_mark = pin.1.map(WriteId::from_stored);
        match &stored.write_id {
            Some(mark) if Some(mark) != row_mark.as_ref() => {
                self.stray(c, v).await;
                Ok(Newer::Stray)
            }
            _ => {
                let adopted = {
                    let _w = self.store.write_lock().await;
                    self.store
                        .adopt_vault_version(
                            c.id,
                            c.version,
                            v,
                            stored.write_id.as_ref().map(WriteId::as_str),
                        )
                        .await
                };
                match adopted {
                    Ok(true) => {
                        tracing::info!(
                            certificate = c.id,
                            from = c.version,
                            version = v,
                            "certificate rotated in Vault; its row now pins the new version"
                        );
                        materials.insert(c.id, (v, Arc::new(stored.material)));
                        Ok(Newer::Adopted)
                    }
                    // Re-pinned by someone else meanwhile: the rebuild reads the row.
                    Ok(false) => Ok(Newer::RowMoved),
                    Err(e) => {
                        tracing::warn!(certificate = c.id, error = %e, "cannot adopt a certificate rotated in Vault; trying again at the next watch");
                        Err(())
                    }
                }
            }
        }
    }

    /// A marked version `v` no row names: left alone for [`STRAY_GRACE`] (it may be an API
    /// write about to commit), then destroyed — under the account's lock, and only if the
    /// row still does not pin it, so a write committing right now is never destroyed.
    async fn stray(&self, c: &Pinned, v: u64) {
        let first_seen = *self
            .strays
            .lock()
            .await
            .entry((c.id, v))
            .or_insert_with(std::time::Instant::now);
        if first_seen.elapsed() < STRAY_GRACE {
            tracing::debug!(
                certificate = c.id,
                version = v,
                "a newer Vault version carries a write id no row names; not served"
            );
            return;
        }
        let _w = self.store.write_lock().await;
        // why: the account's lock in the database, held until the destroy is done. Every API
        // write of the certificate holds it from before its secret-store write to its commit,
        // on whichever control plane it runs, so no write is between the two now.
        let mut tx = match self.store.begin_write(&c.account).await {
            Ok(tx) => tx,
            Err(e) => {
                tracing::warn!(certificate = c.id, error = %e, "cannot lock the account to look at a stray Vault version; next watch");
                return;
            }
        };
        match Store::certificate_pin_in(&mut tx, c.id).await {
            Ok(Some((pinned, _))) if pinned != v => {
                match self
                    .secrets
                    .destroy_certificate_version(&c.account, c.id, v)
                    .await
                {
                    Ok(()) => {
                        tracing::warn!(
                            certificate = c.id,
                            version = v,
                            "destroyed a Vault version left by a write that never committed"
                        );
                        self.strays.lock().await.remove(&(c.id, v));
                    }
                    Err(e) => {
                        tracing::warn!(certificate = c.id, version = v, error = %e, "cannot destroy a Vault version left by a write that never committed")
                    }
                }
            }
            _ => {}
        }
        // Nothing was written: rolled back, which frees the account.
        drop(tx);
    }

    /// Brings the material cache up to date with `rows` (read from the store after the
    /// `materials` copy was taken): reads the version each row pins when the cache holds
    /// another (or none), and drops the material of certificates no longer in the store.
    ///
    /// why: `materials` must have been copied *before* the rows were read, or a certificate
    /// the API created in between would look deleted; and the cache may then hold a newer
    /// version than a row read just before the API's commit — which is fine, as every
    /// version in the cache was committed to a row.
    async fn load_pinned(&self, mut materials: Materials, rows: &[Pinned]) -> Refreshed {
        let started = versions(&materials);
        let mut changed = false;
        let mut failed = false;
        for c in rows {
            let cached = materials.get(&c.id).map(|(v, _)| *v);
            if c.version == 0 || cached.is_some_and(|v| v >= c.version) {
                continue;
            }
            match self
                .secrets
                .get_certificate(&c.account, c.id, c.version)
                .await
            {
                Ok(Some(stored)) => {
                    materials.insert(c.id, (c.version, Arc::new(stored.material)));
                    changed = true;
                }
                Ok(None) => {
                    if materials.remove(&c.id).is_some() {
                        changed = true;
                    }
                    tracing::warn!(
                        certificate = c.id,
                        version = c.version,
                        "the Vault version a certificate's row pins is gone; not served"
                    );
                }
                Err(e) => {
                    failed = true;
                    tracing::warn!(certificate = c.id, error = %e, "cannot read certificate from Vault")
                }
            }
        }
        // Drop material of certificates deleted from the store.
        let live: HashSet<i64> = rows.iter().map(|c| c.id).collect();
        let before = materials.len();
        materials.retain(|id, _| live.contains(id));
        changed |= materials.len() != before;
        if changed {
            self.merge(&started, &materials).await;
        }
        Refreshed { changed, failed }
    }

    /// Merges `materials` (a copy taken when `started` was) into the shared cache, which
    /// the API may have added to meanwhile: newer versions win, and what the copy dropped
    /// goes, unless the API remembered a version of it since.
    async fn merge(&self, started: &HashMap<i64, u64>, materials: &Materials) {
        let mut cache = self.materials.lock().await;
        for (id, (v, m)) in materials.iter() {
            if cache.get(id).is_none_or(|(cv, _)| cv < v) {
                cache.insert(*id, (*v, m.clone()));
            }
        }
        for (id, v) in started {
            if !materials.contains_key(id) && cache.get(id).map(|(cv, _)| cv) == Some(v) {
                cache.remove(id);
            }
        }
    }

    /// Rebuilds once. With `check_vault` (the periodic watch), first asks Vault for the
    /// newest version of every certificate ([`Reconciler::watch_vault`]), and rebuilds only
    /// if that changed something, the store changed (its generation moved, whoever changed
    /// it) or something failed to load last time; otherwise only the versions rows pin that
    /// are not cached yet are read from Vault.
    pub async fn rebuild(&self, check_vault: bool) -> Result<(), StoreError> {
        // why: before anything is read: every write ticketed by now has committed, so what
        // this rebuild reads holds it (see `ticket`).
        let covers = self.tickets.load(std::sync::atomic::Ordering::SeqCst);
        // Read first: a change committed after this read is seen by the next rebuild.
        let generation = self.store.generation().await?;
        if check_vault {
            let known = self.built.lock().await.certificates.clone();
            let vault = self.watch_vault(&known).await;
            let built = self.built.lock().await;
            if !vault.changed
                && !vault.failed
                && built.complete
                && built.generation == Some(generation)
            {
                return Ok(());
            }
        }
        // why: copied before the certificates are listed: whatever it holds was remembered
        // after its row was committed, so a certificate missing from the list below really
        // is gone (see load_pinned).
        let cached = self.materials.lock().await.clone();
        let certificates = self.store.all_certificates().await?;
        let mappings = self.store.enabled_mappings().await?;
        let egress = self.store.all_egress_hosts().await?;
        let users = self.store.all_user_ids().await?;
        let ids: Vec<Pinned> = certificates
            .iter()
            .map(|c| Pinned {
                id: c.id,
                account: c.account.clone(),
                version: c.vault_version,
            })
            .collect();
        let refreshed = self.load_pinned(cached, &ids).await;
        let materials = self.materials.lock().await.clone();
        let callers = Callers {
            token_keys: self.callers.token_keys.borrow().clone(),
            app_keys: self.callers.app_keys(),
            users: users
                .into_iter()
                .map(|(account, id)| UserRef {
                    account,
                    id: id as u64,
                })
                .collect(),
        };
        let (attachments, attached_all) = self.attachments().await?;
        let resolutions = self
            .resolutions_for(&target_hosts(&mappings, &egress))
            .await;
        let rejected = self.rejections.current();
        let desired = Desired::build(
            &certificates,
            &mappings,
            &materials,
            &attachments,
            &resolutions,
            &rejected,
        )
        .with_egress(&egress, &resolutions, &rejected)
        .with_callers(callers);
        let modified = self.tx.send_if_modified(|cur| {
            if **cur == desired {
                false
            } else {
                *cur = Arc::new(desired);
                true
            }
        });
        let current = self.tx.borrow().clone();
        self.published.send_if_modified(|p| {
            let moved = covers > p.covers;
            if modified || !Arc::ptr_eq(&p.desired, &current) {
                p.epoch = p.epoch.saturating_add(1);
                p.desired = current;
                p.covers = p.covers.max(covers);
                true
            } else {
                p.covers = p.covers.max(covers);
                moved
            }
        });
        *self.built.lock().await = Built {
            generation: Some(generation),
            certificates: ids,
            complete: !refreshed.failed && attached_all,
        };
        Ok(())
    }

    /// Runs until the process ends: rebuild on every kick, check Vault every `watch_every`,
    /// and look target hosts up again every `dns_every`.
    pub async fn run(self: Arc<Self>, watch_every: Duration, dns_every: Duration) {
        let mut tick = tokio::time::interval(watch_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut dns_tick = tokio::time::interval(dns_every);
        dns_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut refused = self.rejections.subscribe();
        // why: an ambiguous refusal (several changed secrets, none named) withholds every
        // suspect; one is offered again per probe, so an innocent tenant's secret is back
        // within a few probes, never held for the whole TTL.
        let mut probe = tokio::time::interval(AMBIGUITY_PROBE);
        probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let check = tokio::select! {
                _ = self.kick.notified() => false,
                _ = self.access_tokens.changed() => false,
                // A gateway refused something: rebuild without it at once, so the others'
                // configuration flows again.
                _ = refused.changed() => false,
                _ = probe.tick() => {
                    if !self.rejections.release_one_ambiguous() {
                        continue;
                    }
                    false
                }
                // Expired rejections are offered again: a full rebuild, not the watch's
                // "nothing changed" shortcut; so is a write waiting for its ticket.
                _ = tick.tick() => !self.rejections.expire() && !self.tickets_pending(),
                _ = dns_tick.tick() => {
                    if !self.refresh_dns().await {
                        continue;
                    }
                    false
                }
            };
            if let Err(e) = self.rebuild(check).await {
                tracing::error!(error = %e, "rebuild failed; Envoy keeps its current configuration");
                tokio::time::sleep(Duration::from_secs(1)).await;
                self.kick.notify_one();
            }
        }
    }
}

/// The desired state as published, numbered.
#[derive(Debug, Clone, Default)]
pub struct Published {
    pub desired: Arc<Desired>,
    /// Grows by one each time the desired state changes: a gateway that enforces a state of
    /// epoch `e` enforces every write held by the states up to `e`.
    pub epoch: u64,
    /// The highest write ticket ([`Reconciler::ticket`]) this state holds.
    pub covers: u64,
}

/// What [`Reconciler::newer_version`] found.
enum Newer {
    /// An operator's rotation, now pinned by its row and cached.
    Adopted,
    /// The row changed meanwhile (an API write committed, or it was deleted): the rebuild
    /// that follows reads it.
    RowMoved,
    /// A marked version no row names: not served.
    Stray,
    /// The version vanished between the two reads.
    Gone,
}

/// The version of each cached certificate.
fn versions(materials: &Materials) -> HashMap<i64, u64> {
    materials.iter().map(|(id, (v, _))| (*id, *v)).collect()
}
