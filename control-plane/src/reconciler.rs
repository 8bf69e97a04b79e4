//! The reconciler: keeps [`Desired`] current from the store and the secret store.
//!
//! Two triggers: the API's own writes (`kick`, after it has told the cache the new material,
//! so nothing is re-read) and a periodic watch of Vault's KV metadata, which catches
//! certificates rotated directly in Vault and certificates deleted from it. The periodic
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
use crate::secret_store::Secrets;
use crate::store::{Store, StoreError};

/// Material cache: certificate id → (Vault version, material).
type Materials = HashMap<i64, (u64, Arc<Material>)>;

/// Where the snapshot's caller credentials come from, besides the store.
pub struct CallerSources {
    /// Live AppKeys with their secrets; the API updates it, then kicks.
    pub appkeys: Arc<Directory>,
    /// Public halves of the token signing keys (fixed for the life of the process).
    pub token_keys: Vec<TokenKey>,
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
    /// The certificates (id, account) it saw: what the periodic watch checks in Vault.
    certificates: Vec<(i64, String)>,
    /// Everything could be read (nothing to retry).
    complete: bool,
}

/// What [`Reconciler::refresh_materials`] did.
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
    attached: Mutex<HashMap<i64, Attached>>,
    /// The current access tokens of OAuth 2.0 and Transfer to Messaging credentials.
    access_tokens: Arc<CredentialTokens>,
    kick: Notify,
    tx: watch::Sender<Arc<Desired>>,
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
        Arc::new(Reconciler {
            store,
            secrets,
            callers,
            materials: Mutex::default(),
            attached: Mutex::default(),
            access_tokens,
            kick: Notify::new(),
            tx,
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

    /// Records material the API has just written to Vault, then rebuilds.
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
            if let std::collections::hash_map::Entry::Vacant(slot) = cache.entry(c.id) {
                match self.secrets.get_credential(&c.account, c.id).await {
                    Ok(Some(secrets)) => match Attached::open_blocking(c.clone(), secrets).await {
                        Some(a) => {
                            slot.insert(a);
                        }
                        None => tracing::warn!(
                            credential = c.id,
                            "credential in Vault cannot be used; its mappings are not served"
                        ),
                    },
                    Ok(None) => tracing::warn!(
                        credential = c.id,
                        "credential has no secrets in Vault; its mappings are not served"
                    ),
                    Err(e) => {
                        all_read = false;
                        tracing::warn!(credential = c.id, error = %e, "cannot read credential from Vault")
                    }
                }
            }
            match cache.get(&c.id) {
                Some(Attached::Header(h)) => {
                    out.headers.insert(c.id, h.clone());
                }
                Some(Attached::Tls(t)) => {
                    out.tls.insert(c.id, t.clone());
                }
                None => {}
            }
        }
        Ok((out, all_read))
    }

    /// Asks for a rebuild (after a metadata-only change such as a new mapping, an AppKey,
    /// a user or the egress allowlist).
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

    /// Whether the certificate's material is present in Vault as last seen.
    pub async fn has_material(&self, certificate_id: i64) -> bool {
        self.materials.lock().await.contains_key(&certificate_id)
    }

    /// Brings the material cache up to date for `certificates` (id, account), starting from
    /// `materials` (a copy of the cache): reads those not cached yet, and with `check_vault`
    /// asks Vault for every one's current version (a rotation or deletion made directly in
    /// Vault). With `live`, also drops the material of certificates no longer in the store;
    /// then `materials` must have been copied *before* `live` was read, or a certificate
    /// the API created in between would look deleted. Answers whether the cache changed.
    async fn refresh_materials(
        &self,
        mut materials: Materials,
        certificates: &[(i64, String)],
        check_vault: bool,
        live: Option<&HashSet<i64>>,
    ) -> Refreshed {
        let started: HashMap<i64, u64> = materials.iter().map(|(id, (v, _))| (*id, *v)).collect();
        let mut changed = false;
        let mut failed = false;
        for (id, account) in certificates {
            let cached = materials.get(id).map(|(v, _)| *v);
            if cached.is_some() && !check_vault {
                continue;
            }
            let current = match self.secrets.certificate_version(account, *id).await {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(error = %e, "Vault watch failed; keeping the last known certificates");
                    failed = true;
                    break;
                }
            };
            match current {
                Some(v) if Some(v) != cached => {
                    match self.secrets.get_certificate(account, *id, v).await {
                        Ok(Some(m)) => {
                            if cached.is_some() {
                                tracing::info!(
                                    certificate = id,
                                    version = v,
                                    "certificate rotated in Vault"
                                );
                            }
                            materials.insert(*id, (v, Arc::new(m)));
                            changed = true;
                        }
                        Ok(None) => {}
                        Err(e) => {
                            failed = true;
                            tracing::warn!(certificate = id, error = %e, "cannot read certificate from Vault")
                        }
                    }
                }
                None if cached.is_some() => {
                    tracing::warn!(
                        certificate = id,
                        "certificate is gone from Vault; no longer served"
                    );
                    materials.remove(id);
                    changed = true;
                }
                _ => {}
            }
        }
        if let Some(live) = live {
            // Drop material of certificates deleted from the store.
            let before = materials.len();
            materials.retain(|id, _| live.contains(id));
            changed |= materials.len() != before;
        }
        if changed {
            // Merge into the shared cache, which the API may have added to meanwhile: a
            // certificate created during this rebuild is not in `live` yet and must stay.
            let mut cache = self.materials.lock().await;
            for (id, (v, m)) in materials.iter() {
                if cache.get(id).is_none_or(|(cv, _)| cv < v) {
                    cache.insert(*id, (*v, m.clone()));
                }
            }
            // Drop what this rebuild dropped (gone from Vault or from the store), unless
            // the API remembered a version of it meanwhile.
            for (id, v) in &started {
                if !materials.contains_key(id) && cache.get(id).map(|(cv, _)| cv) == Some(v) {
                    cache.remove(id);
                }
            }
        }
        Refreshed { changed, failed }
    }

    /// Rebuilds once. With `check_vault` (the periodic watch), first asks Vault for the
    /// current version of every certificate, and rebuilds only if one changed, the store
    /// changed (its generation moved, whoever changed it) or something failed to load last
    /// time; otherwise only certificates not yet cached are read from Vault.
    pub async fn rebuild(&self, check_vault: bool) -> Result<(), StoreError> {
        // Read first: a change committed after this read is seen by the next rebuild.
        let generation = self.store.generation().await?;
        if check_vault {
            let known = self.built.lock().await.certificates.clone();
            let cached = self.materials.lock().await.clone();
            let vault = self.refresh_materials(cached, &known, true, None).await;
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
        // is gone (see refresh_materials).
        let cached = self.materials.lock().await.clone();
        let certificates = self.store.all_certificates().await?;
        let mappings = self.store.enabled_mappings().await?;
        let egress = self.store.all_egress_hosts().await?;
        let users = self.store.all_user_ids().await?;
        let ids: Vec<(i64, String)> = certificates
            .iter()
            .map(|c| (c.id, c.account.clone()))
            .collect();
        let live: HashSet<i64> = ids.iter().map(|(id, _)| *id).collect();
        let refreshed = self
            .refresh_materials(cached, &ids, false, Some(&live))
            .await;
        let materials = self.materials.lock().await.clone();
        let callers = Callers {
            token_keys: self.callers.token_keys.clone(),
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
        self.tx.send_if_modified(|cur| {
            if **cur == desired {
                false
            } else {
                *cur = Arc::new(desired);
                true
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
                // "nothing changed" shortcut.
                _ = tick.tick() => !self.rejections.expire(),
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
