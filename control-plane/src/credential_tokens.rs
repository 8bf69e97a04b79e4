//! Access tokens for the credentials that need them (OAuth 2.0 client credentials and
//! authorization code, Transfer to Messaging): fetched, cached, refreshed before they expire,
//! and handed to the reconciler, which pushes `Authorization: Bearer <token>` to the gateway.
//!
//! - Client credentials and Transfer to Messaging: a grant as soon as the credential exists,
//!   then a refresh (refresh token when the server gave one, otherwise a new grant) at three
//!   quarters of the token's life, so the gateway never holds an expired token while the
//!   token endpoint is up.
//! - Authorization code: `authorize` makes the URL the user is sent to (with `state` and,
//!   when on, the PKCE S256 challenge); the callback checks `state`, exchanges code and
//!   verifier, and keeps the tokens in Vault so a restart does not ask the user again.
//! - A failed request is retried with exponential backoff (1 s doubling to 5 minutes),
//!   logged, and visible on the credential (`status`, `lastError`, `expiresAt`). The current
//!   token stays in use until it expires. Each request runs in its own task, so a token
//!   endpoint that hangs delays nothing else.
//!
//! - Several control planes: every token obtained is kept in the secret store with the mark of
//!   the credential's settings it was obtained with, and a control plane about to request
//!   first looks there: a newer token another one obtained is taken as it is, so every
//!   replica pushes the same token. Only the holder of the credential's lease in the database
//!   requests ([`LEASE_SECS`]; given back when done, taken over when its holder died); the
//!   others look again a second later. A credential changed through another control plane is
//!   noticed by its new mark and starts over.
//!
//! Token state lives in this process's memory and in the secret store; nothing here ever logs
//! or answers a token or secret.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};
use tokio::sync::Notify;

use crate::credential_kind::{CredentialKind, CredentialSecrets, CredentialSettings};
use crate::oauth2::{self, ClientAuth, ClientCredentials, Grant, GrantError, TokenSet};
use crate::secret::Secret;
use crate::secret_store::Secrets;
use crate::store::{CredentialRow, Store};

/// When the server does not say how long a token lives (`expires_in` is only RECOMMENDED).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);
/// Longest wait between two looks at the credentials (new ones are also announced).
const IDLE: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How long an authorization request may wait for its callback.
const AUTHORIZATION_TTL: Duration = Duration::from_secs(600);
/// Open authorization requests kept at most per account: beyond, that account's oldest is
/// dropped (never another account's).
const MAX_PENDING_PER_ACCOUNT: usize = 50;
/// Open authorization requests kept at most in all: beyond, new ones are refused until some
/// expire or complete, rather than evicting other accounts' users mid-consent.
const MAX_PENDING: usize = 10_000;
/// How long a control plane may take over a credential's token request before another may
/// (a request times out well before; a holder that died frees it after this).
const LEASE_SECS: i64 = 30;
/// How soon a control plane that found another one requesting looks for its result.
const FOLLOW: Duration = Duration::from_secs(1);

/// Where a credential stands, as its answers show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The first token is being fetched.
    Pending,
    /// A valid token is in use.
    Active,
    /// The last request failed (`lastError`); a token may still be in use until `expiresAt`.
    Error,
    /// Authorization code: nobody has authorized yet, or the grant was lost.
    AuthorizationRequired,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Active => "active",
            Status::Error => "error",
            Status::AuthorizationRequired => "authorizationRequired",
        }
    }
}

/// Deployment settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The callback users' browsers are sent back to (shown on authorization-code
    /// credentials, registered by the user at the authorization server).
    pub redirect_uri: String,
    /// Token URL of Transfer to Messaging credentials that name none.
    pub messaging_token_url: Option<String>,
}

struct Current {
    token: Secret,
    expires_at: SystemTime,
    refresh_at: SystemTime,
}

#[derive(Default)]
struct Entry {
    /// Which life of the credential this is: a request started before the credential was
    /// changed (forgotten, then seen again) must not land in the new entry.
    epoch: u64,
    current: Option<Current>,
    refresh_token: Option<Secret>,
    last_error: Option<String>,
    failures: u32,
    retry_at: Option<SystemTime>,
    /// A request is under way.
    busy: bool,
    /// Authorization code: tokens kept in Vault were looked for.
    loaded: bool,
    /// The settings the tokens were obtained with ([`mark`]); tokens kept under another mark
    /// are not taken.
    mark: String,
}

/// Which settings and secrets of a credential tokens were obtained with: they change with
/// every update, through whichever control plane.
fn mark(row: &CredentialRow) -> String {
    format!("{}:{}", row.updated_at, row.secret_version)
}

impl Entry {
    fn status(&self, kind: CredentialKind) -> Status {
        if self.last_error.is_some() {
            Status::Error
        } else if self.current.is_some() {
            Status::Active
        } else if kind.authorized_by_user() && self.loaded && self.refresh_token.is_none() {
            Status::AuthorizationRequired
        } else {
            Status::Pending
        }
    }

    /// When something must happen next: a refresh, a retry, or dropping an expired token.
    fn due(&self, kind: CredentialKind) -> Option<SystemTime> {
        let renewable = !kind.authorized_by_user() || self.refresh_token.is_some();
        let due = match &self.current {
            Some(c) if renewable => c.refresh_at,
            Some(c) => c.expires_at,
            None if renewable || !self.loaded => UNIX_EPOCH,
            // Waiting for a user: looked for again now and then (see `renew`).
            None => return self.retry_at,
        };
        Some(due.max(self.retry_at.unwrap_or(UNIX_EPOCH)))
    }

    fn succeeded(&mut self, tokens: TokenSet, now: SystemTime) {
        let life = tokens.expires_in.unwrap_or(DEFAULT_LIFETIME);
        self.current = Some(Current {
            token: tokens.access_token,
            expires_at: after(now, life),
            refresh_at: after(now, life / 4 * 3),
        });
        // RFC 6749 §6: without a new refresh token, the old one stays good.
        if tokens.refresh_token.is_some() {
            self.refresh_token = tokens.refresh_token;
        }
        self.last_error = None;
        self.failures = 0;
        self.retry_at = None;
        self.loaded = true;
    }

    fn failed(&mut self, error: String, now: SystemTime) {
        self.failures = self.failures.saturating_add(1);
        let backoff = Duration::from_secs(1 << self.failures.min(10).saturating_sub(1));
        self.retry_at = Some(after(now, backoff.min(MAX_BACKOFF)));
        self.last_error = Some(error);
    }

    /// What is kept in Vault.
    fn persisted(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("mark".into(), json!(self.mark));
        if let Some(c) = &self.current {
            m.insert("accessToken".into(), json!(c.token.expose()));
            m.insert("expiresAt".into(), json!(unix(c.expires_at)));
        }
        if let Some(r) = &self.refresh_token {
            m.insert("refreshToken".into(), json!(r.expose()));
        }
        m
    }

    fn restore(&mut self, m: &Map<String, Value>, now: SystemTime) {
        let text = |k: &str| m.get(k).and_then(Value::as_str).map(Secret::new);
        let expires_at = m
            .get("expiresAt")
            .and_then(Value::as_u64)
            .and_then(|s| UNIX_EPOCH.checked_add(Duration::from_secs(s)));
        if let (Some(token), Some(expires_at)) = (text("accessToken"), expires_at) {
            if expires_at > now {
                let left = expires_at.duration_since(now).unwrap_or_default();
                self.current = Some(Current {
                    token,
                    expires_at,
                    refresh_at: after(now, left / 4 * 3),
                });
            }
        }
        self.refresh_token = text("refreshToken");
    }
}

/// `now + d`, saturating at a far but representable time: lifetimes come from token
/// endpoints, which may send anything.
fn after(now: SystemTime, d: Duration) -> SystemTime {
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(crate::oauth2::MAX_TOKEN_LIFETIME_SECS)))
        .unwrap_or(now)
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A PKCE verifier, kept in the secret store while its authorization waits for the callback
/// (at `system/oauth-pending/<hex SHA-256 of the state>`).
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredVerifier {
    verifier: String,
}

fn verifier_name(state_sha256: &str) -> String {
    format!("oauth-pending/{state_sha256}")
}

fn state_sha256(state: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(state.as_bytes()))
}

/// What `authorize` answers.
#[derive(Debug, Clone)]
pub struct Authorization {
    pub url: String,
    pub state: String,
    pub redirect_uri: String,
    pub expires_in: Duration,
}

/// Why an authorization could not be started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthorizeError {
    #[error("only oauth2AuthorizationCode credentials are authorized by a user")]
    NotAuthorizable,
    #[error("too many authorizations are waiting for their callback; try again in a few minutes")]
    TooManyPending,
    /// The database or the secret store did not answer.
    #[error("the authorization cannot be recorded now; try again")]
    Unavailable,
}

/// Why a callback was refused.
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    #[error("unknown or expired state: start the authorization again")]
    UnknownState,
    #[error("the credential is gone or no longer an authorization-code credential")]
    CredentialGone,
    #[error("the authorization server refused: {0}")]
    Denied(String),
    #[error("cannot read the credential's secrets from Vault")]
    Vault,
    #[error("{0}")]
    Exchange(GrantError),
}

/// The token keeper. One per process.
pub struct CredentialTokens {
    store: Store,
    secrets: Secrets,
    client: oauth2::Client,
    settings: Settings,
    entries: Mutex<HashMap<i64, Entry>>,
    wake: Notify,
    changed: Notify,
    epochs: std::sync::atomic::AtomicU64,
    /// This process's name on leases.
    holder: String,
}

/// The OAuth parameters of a credential row.
struct Plan<'a> {
    token_url: Option<&'a str>,
    client_id: &'a str,
    auth: ClientAuth,
    scope: Option<&'a str>,
}

impl CredentialTokens {
    pub fn new(
        store: Store,
        secrets: Secrets,
        client: oauth2::Client,
        settings: Settings,
    ) -> Arc<Self> {
        Arc::new(CredentialTokens {
            store,
            secrets,
            client,
            settings,
            entries: Mutex::default(),
            wake: Notify::new(),
            changed: Notify::new(),
            epochs: std::sync::atomic::AtomicU64::new(1),
            holder: hex::encode(crate::random::bytes::<16>()),
        })
    }

    pub fn redirect_uri(&self) -> &str {
        &self.settings.redirect_uri
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<i64, Entry>> {
        // why: a panic while holding the lock cannot leave an entry half-written in a way
        // that matters more than stopping every credential; keep going with what is there.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new entry, with an epoch no earlier entry had.
    fn fresh(&self) -> Entry {
        Entry {
            epoch: self
                .epochs
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            ..Entry::default()
        }
    }

    /// `None` for a kind that gets no tokens.
    fn plan<'a>(&'a self, row: &'a CredentialRow) -> Option<Plan<'a>> {
        let t = row.settings.token_client()?;
        Some(Plan {
            token_url: t.token_url.or(self.settings.messaging_token_url.as_deref()),
            client_id: &t.client.client_id,
            auth: t.client.client_authentication,
            scope: t.scope,
        })
    }

    /// The `Authorization` header for a credential's mappings, while its token is valid.
    pub fn header(&self, credential: i64) -> Option<String> {
        let now = SystemTime::now();
        self.entries()
            .get(&credential)
            .and_then(|e| e.current.as_ref())
            .filter(|c| c.expires_at > now)
            .map(|c| format!("Bearer {}", c.token.expose()))
    }

    /// `status`, `lastError` and `expiresAt` of a credential, for its answers.
    pub fn describe(&self, row: &CredentialRow) -> Map<String, Value> {
        let entries = self.entries();
        let e = entries.get(&row.id);
        let mut m = Map::new();
        m.insert(
            "status".into(),
            json!(e.map_or(Status::Pending, |e| e.status(row.kind())).as_str()),
        );
        m.insert(
            "lastError".into(),
            json!(e.and_then(|e| e.last_error.clone())),
        );
        m.insert(
            "expiresAt".into(),
            json!(e
                .and_then(|e| e.current.as_ref())
                .map(|c| crate::clock::rfc3339(crate::clock::unix(c.expires_at)))),
        );
        m
    }

    /// Resolves when a header may have changed (a token obtained, renewed or expired).
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    /// A credential was created, changed or deleted: drop what was obtained with its old
    /// settings (and its kept tokens), and look again at once.
    pub async fn forget(&self, account: &str, credential: i64) {
        let had = self.entries().remove(&credential).is_some();
        match self.store.forget_pending_authorizations(credential).await {
            Ok(hashes) => self.destroy_verifiers(&hashes).await,
            Err(e) => {
                tracing::warn!(credential, error = %e, "cannot drop the credential's waiting authorizations; they expire")
            }
        }
        if let Err(e) = self
            .secrets
            .delete_credential_tokens(account, credential)
            .await
        {
            tracing::warn!(credential, error = %e, "cannot delete the credential's kept tokens");
        }
        if had {
            self.changed.notify_one();
        }
        self.wake.notify_one();
    }

    /// Runs until the process ends.
    pub async fn run(self: Arc<Self>) {
        loop {
            let next = self.tick().await;
            tokio::select! {
                _ = tokio::time::sleep(next) => {}
                _ = self.wake.notified() => {}
            }
        }
    }

    /// One look at every token credential: starts what is due, answers how long until the
    /// next thing is.
    async fn tick(self: &Arc<Self>) -> Duration {
        let rows = match self.store.token_credentials().await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list credentials; tokens are not renewed");
                return IDLE;
            }
        };
        let now = SystemTime::now();
        let mut next = IDLE;
        let mut start = Vec::new();
        let mut changed = false;
        {
            let mut entries = self.entries();
            let live: HashSet<i64> = rows.iter().map(|r| r.id).collect();
            entries.retain(|id, e| {
                changed |= !live.contains(id) && e.current.is_some();
                live.contains(id)
            });
            for row in &rows {
                let e = entries.entry(row.id).or_insert_with(|| self.fresh());
                let m = mark(row);
                if e.mark.is_empty() {
                    e.mark = m;
                } else if e.mark != m {
                    // Changed through another control plane: what was obtained with the old
                    // settings goes, as `forget` does here.
                    changed |= e.current.is_some();
                    *e = Entry {
                        mark: m,
                        ..self.fresh()
                    };
                }
                // Even while a renewal hangs: an expired token is never pushed again.
                if e.current.as_ref().is_some_and(|c| c.expires_at <= now) {
                    tracing::warn!(credential = row.id, "access token expired without renewal");
                    e.current = None;
                    changed = true;
                }
                if e.busy {
                    if let Some(wait) = e
                        .current
                        .as_ref()
                        .and_then(|c| c.expires_at.duration_since(now).ok())
                    {
                        next = next.min(wait);
                    }
                    continue;
                }
                let Some(due) = e.due(row.kind()) else {
                    continue;
                };
                match due.duration_since(now) {
                    Ok(wait) if !wait.is_zero() => next = next.min(wait),
                    _ => {
                        e.busy = true;
                        start.push((row.clone(), e.epoch));
                    }
                }
            }
        }
        if changed {
            self.changed.notify_one();
        }
        for (row, epoch) in start {
            tokio::spawn(self.clone().renew(row, epoch));
        }
        next.max(Duration::from_millis(50))
    }

    /// Obtains or renews one credential's token and records the outcome.
    async fn renew(self: Arc<Self>, row: CredentialRow, epoch: u64) {
        let outcome = self.renew_once(&row).await;
        // Given back whenever this control plane may have held it (a release by another
        // holder's name changes nothing).
        let leased = matches!(outcome, Ok(Renewed::Tokens(_)) | Err(_));
        let now = SystemTime::now();
        let mut persist = None;
        let mut changed = false;
        {
            let mut entries = self.entries();
            let Some(e) = entries.get_mut(&row.id).filter(|e| e.epoch == epoch) else {
                // Forgotten meanwhile (updated or deleted): the result is for old settings.
                return;
            };
            e.busy = false;
            match outcome {
                Ok(Renewed::Tokens(tokens)) => {
                    tracing::info!(
                        credential = row.id,
                        expires_in = tokens.expires_in.map(|d| d.as_secs()),
                        "access token obtained"
                    );
                    e.succeeded(tokens, now);
                    changed = true;
                    persist = Some(e.persisted());
                }
                Ok(Renewed::Restored(kept)) => {
                    e.restore(&kept, now);
                    e.loaded = true;
                    changed = e.current.is_some();
                }
                Ok(Renewed::NothingToDo) => {
                    e.loaded = true;
                    // Authorization code: a user may authorize through another control plane.
                    e.retry_at = Some(after(now, IDLE));
                }
                Ok(Renewed::Wait) => e.retry_at = Some(after(now, FOLLOW)),
                Err(error) => {
                    let message = error.to_string();
                    tracing::warn!(credential = row.id, error = %message, "cannot obtain an access token; retrying with backoff");
                    if let RenewError::Grant(g) = &error {
                        // A refresh token the server no longer honours is dropped: the next
                        // try is a new grant (or, for authorization code, a new authorize).
                        if g.oauth_error() == Some("invalid_grant") && e.refresh_token.is_some() {
                            e.refresh_token = None;
                            persist = Some(e.persisted());
                        }
                    }
                    e.failed(message, now);
                }
            }
        }
        if let Some(kept) = persist {
            if let Err(e) = self
                .secrets
                .put_credential_tokens(&row.account, row.id, &kept)
                .await
            {
                tracing::warn!(credential = row.id, error = %e, "cannot keep the tokens in Vault");
            }
        }
        if leased {
            if let Err(e) = self
                .store
                .release_lease(&lease_name(row.id), &self.holder)
                .await
            {
                tracing::debug!(credential = row.id, error = %e, "cannot give the token lease back; it expires");
            }
        }
        if changed {
            self.changed.notify_one();
        }
        self.wake.notify_one();
    }

    async fn renew_once(&self, row: &CredentialRow) -> Result<Renewed, RenewError> {
        let now = SystemTime::now();
        let (ours, refresh_token) = {
            let entries = self.entries();
            let e = entries.get(&row.id);
            (
                e.and_then(|e| e.current.as_ref()).map(|c| c.expires_at),
                e.and_then(|e| e.refresh_token.clone()),
            )
        };
        // What another control plane (or this one before a restart) obtained: taken when it
        // is for these settings and newer than ours.
        let kept = self
            .secrets
            .get_credential_tokens(&row.account, row.id)
            .await
            .map_err(|_| RenewError::Vault)?
            .filter(|k| k.get("mark").and_then(Value::as_str) == Some(mark(row).as_str()));
        if let Some(kept) = kept {
            let expires = kept
                .get("expiresAt")
                .and_then(Value::as_u64)
                .and_then(|s| UNIX_EPOCH.checked_add(Duration::from_secs(s)));
            let newer = expires.is_some_and(|k| k > now && ours.is_none_or(|o| k > o));
            let refresh_only =
                ours.is_none() && refresh_token.is_none() && kept.contains_key("refreshToken");
            if newer || refresh_only {
                return Ok(Renewed::Restored(kept));
            }
        }
        let grant = match &refresh_token {
            Some(r) => Grant::Refresh { refresh_token: r },
            None if row.kind().authorized_by_user() => return Ok(Renewed::NothingToDo),
            None => Grant::ClientCredentials {
                scope: self.plan(row).and_then(|p| p.scope),
            },
        };
        // One control plane requests at a time; the others take its result from the secret
        // store.
        match self
            .store
            .take_lease(&lease_name(row.id), &self.holder, LEASE_SECS)
            .await
        {
            Ok(true) => {}
            Ok(false) => return Ok(Renewed::Wait),
            Err(e) => {
                tracing::warn!(credential = row.id, error = %e, "cannot take the token lease");
                return Ok(Renewed::Wait);
            }
        }
        self.request(row, &grant).await.map(Renewed::Tokens)
    }

    /// One token request with the credential's client secret from Vault.
    async fn request(
        &self,
        row: &CredentialRow,
        grant: &Grant<'_>,
    ) -> Result<TokenSet, RenewError> {
        let plan = self.plan(row).ok_or(RenewError::NotTokenKind)?;
        let token_url = plan.token_url.ok_or(RenewError::NoTokenUrl)?;
        let secrets = match self
            .secrets
            .get_credential(&row.account, row.id, row.secret_version)
            .await
        {
            Ok(Some(s)) => s,
            _ => return Err(RenewError::Vault),
        };
        let Ok(CredentialSecrets::Client(secret)) =
            CredentialSecrets::from_map(row.kind(), &secrets)
        else {
            return Err(RenewError::Vault);
        };
        let client = ClientCredentials {
            id: plan.client_id,
            secret: &secret.client_secret,
            auth: plan.auth,
        };
        Ok(self.client.request(token_url, &client, grant).await?)
    }

    /// The URL to send the user to for an authorization-code credential. The request is kept
    /// in the database (its PKCE verifier in the secret store), so the callback may reach any
    /// control plane.
    pub async fn authorize(&self, row: &CredentialRow) -> Result<Authorization, AuthorizeError> {
        let CredentialSettings::Oauth2AuthorizationCode(settings) = &row.settings else {
            return Err(AuthorizeError::NotAuthorizable);
        };
        let auth_url = &settings.auth_url;
        let state = base64_url(&crate::random::bytes::<32>());
        let verifier = settings.pkce.then(oauth2::pkce_verifier);
        // In a block: the serializer is not `Send`, so it must not live across an await.
        let url = {
            let mut query = url::form_urlencoded::Serializer::new(String::new());
            query.append_pair("response_type", "code");
            query.append_pair("client_id", &settings.client.client_id);
            query.append_pair("redirect_uri", &self.settings.redirect_uri);
            if let Some(scope) = settings.scope.as_deref().filter(|s| !s.is_empty()) {
                query.append_pair("scope", scope);
            }
            query.append_pair("state", &state);
            if let Some(v) = &verifier {
                query.append_pair("code_challenge", &oauth2::pkce_challenge(v));
                query.append_pair("code_challenge_method", "S256");
            }
            let sep = if auth_url.contains('?') { '&' } else { '?' };
            format!("{auth_url}{sep}{}", query.finish())
        };
        let hash = state_sha256(&state);
        // The secret first: a row never names a verifier that is not there.
        if let Some(v) = &verifier {
            self.secrets
                .put_system(
                    &verifier_name(&hash),
                    &StoredVerifier {
                        verifier: v.clone(),
                    },
                )
                .await
                .map_err(|_| AuthorizeError::Unavailable)?;
        }
        let now = crate::clock::now();
        let kept = self
            .store
            .insert_pending_authorization(
                &hash,
                &crate::store::PendingAuthorization {
                    account: row.account.clone(),
                    credential_id: row.id,
                    has_verifier: verifier.is_some(),
                    created_at: now,
                },
                now.saturating_sub(AUTHORIZATION_TTL.as_secs() as i64),
                MAX_PENDING_PER_ACCOUNT,
                MAX_PENDING,
            )
            .await;
        let outcome = match kept {
            Ok(crate::store::PendingInsert::Kept { dropped }) => {
                self.destroy_verifiers(&dropped).await;
                Ok(())
            }
            Ok(crate::store::PendingInsert::Full { dropped }) => {
                self.destroy_verifiers(&dropped).await;
                Err(AuthorizeError::TooManyPending)
            }
            Err(e) => {
                tracing::warn!(credential = row.id, error = %e, "cannot keep an authorization request");
                Err(AuthorizeError::Unavailable)
            }
        };
        if let Err(e) = outcome {
            if verifier.is_some() {
                self.destroy_verifiers(&[hash]).await;
            }
            return Err(e);
        }
        Ok(Authorization {
            url,
            state,
            redirect_uri: self.settings.redirect_uri.clone(),
            expires_in: AUTHORIZATION_TTL,
        })
    }

    /// Destroys the PKCE verifiers of authorizations no longer waiting (best effort: one
    /// left behind names no request and is never used).
    async fn destroy_verifiers(&self, state_hashes: &[String]) {
        for hash in state_hashes {
            if let Err(e) = self.secrets.delete_system(&verifier_name(hash)).await {
                tracing::warn!(error = %e, "cannot destroy the PKCE verifier of an authorization no longer waiting");
            }
        }
    }

    /// The authorization server sent the user back: `code` (or `error`) for `state`.
    /// Answers the credential (account, id) now authorized.
    pub async fn callback(
        &self,
        state: &str,
        outcome: Result<&str, String>,
    ) -> Result<(String, i64), CallbackError> {
        let hash = state_sha256(state);
        let now_secs = crate::clock::now();
        let pending = self
            .store
            .take_pending_authorization(
                &hash,
                now_secs.saturating_sub(AUTHORIZATION_TTL.as_secs() as i64),
            )
            .await
            .map_err(|_| CallbackError::Vault)?
            .ok_or(CallbackError::UnknownState)?;
        let verifier = if pending.has_verifier {
            let kept = self
                .secrets
                .get_system::<StoredVerifier>(&verifier_name(&hash))
                .await;
            self.destroy_verifiers(std::slice::from_ref(&hash)).await;
            match kept {
                Ok(Some(v)) => Some(v.verifier),
                _ => return Err(CallbackError::Vault),
            }
        } else {
            None
        };
        let row = match self
            .store
            .credential(&pending.account, pending.credential_id)
            .await
        {
            Ok(Some(row)) if row.kind().authorized_by_user() => row,
            _ => return Err(CallbackError::CredentialGone),
        };
        let now = SystemTime::now();
        let code = match outcome {
            Ok(code) => code,
            Err(denied) => {
                self.entries()
                    .entry(row.id)
                    .or_insert_with(|| self.fresh())
                    .last_error = Some(format!("authorization refused: {denied}"));
                return Err(CallbackError::Denied(denied));
            }
        };
        let grant = Grant::AuthorizationCode {
            code,
            redirect_uri: &self.settings.redirect_uri,
            verifier: verifier.as_deref(),
        };
        let tokens = match self.request(&row, &grant).await {
            Ok(t) => t,
            Err(e) => {
                let message = e.to_string();
                tracing::warn!(credential = row.id, error = %message, "authorization code exchange failed");
                self.entries()
                    .entry(row.id)
                    .or_insert_with(|| self.fresh())
                    .last_error = Some(message);
                return Err(match e {
                    RenewError::Grant(g) => CallbackError::Exchange(g),
                    _ => CallbackError::Vault,
                });
            }
        };
        tracing::info!(credential = row.id, "credential authorized");
        let kept = {
            let mut entries = self.entries();
            let e = entries.entry(row.id).or_insert_with(|| self.fresh());
            // A new authorization replaces whatever the old grant left.
            e.refresh_token = None;
            e.mark = mark(&row);
            e.succeeded(tokens, now);
            e.persisted()
        };
        if let Err(e) = self
            .secrets
            .put_credential_tokens(&row.account, row.id, &kept)
            .await
        {
            tracing::warn!(credential = row.id, error = %e, "cannot keep the tokens in Vault; a restart will ask for authorization again");
        }
        self.changed.notify_one();
        self.wake.notify_one();
        Ok((row.account, row.id))
    }
}

enum Renewed {
    /// Obtained by this control plane, which holds the lease until it has kept them.
    Tokens(TokenSet),
    Restored(Map<String, Value>),
    NothingToDo,
    /// Another control plane holds the lease: look for its result shortly.
    Wait,
}

/// The lease of a credential's token requests.
fn lease_name(credential: i64) -> String {
    format!("credential-token:{credential}")
}

#[derive(Debug, thiserror::Error)]
enum RenewError {
    #[error("no token URL: set tokenUrl on the credential (or --messaging-token-url)")]
    NoTokenUrl,
    #[error("this kind of credential gets no tokens")]
    NotTokenKind,
    #[error("cannot read the credential's secrets from Vault")]
    Vault,
    #[error("{0}")]
    Grant(#[from] GrantError),
}

fn base64_url(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CC: CredentialKind = CredentialKind::Oauth2ClientCredentials;
    const CODE: CredentialKind = CredentialKind::Oauth2AuthorizationCode;

    fn tokens(life: u64, refresh: Option<&str>) -> TokenSet {
        TokenSet {
            access_token: Secret::new("t"),
            expires_in: Some(Duration::from_secs(life)),
            refresh_token: refresh.map(Secret::new),
        }
    }

    #[test]
    fn refresh_is_due_at_three_quarters_of_the_life_and_backs_off_on_failure() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut e = Entry::default();
        assert_eq!(e.due(CC), Some(UNIX_EPOCH));
        e.succeeded(tokens(400, None), now);
        assert_eq!(e.due(CC), Some(now + Duration::from_secs(300)));
        assert_eq!(e.status(CC), Status::Active);

        let later = now + Duration::from_secs(300);
        e.failed("down".into(), later);
        assert_eq!(e.status(CC), Status::Error);
        assert_eq!(e.due(CC), Some(later + Duration::from_secs(1)));
        e.failed("down".into(), later);
        e.failed("down".into(), later);
        assert_eq!(e.due(CC), Some(later + Duration::from_secs(4)));
        for _ in 0..20 {
            e.failed("down".into(), later);
        }
        assert_eq!(e.due(CC), Some(later + MAX_BACKOFF));
        e.succeeded(tokens(400, None), later);
        assert_eq!(e.last_error, None);
        assert_eq!(e.failures, 0);
    }

    #[test]
    fn authorization_code_without_refresh_token_waits_for_the_user() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut e = Entry::default();
        // Not yet looked in Vault: due at once (to look).
        assert_eq!(e.due(CODE), Some(UNIX_EPOCH));
        e.loaded = true;
        assert_eq!(e.due(CODE), None);
        assert_eq!(e.status(CODE), Status::AuthorizationRequired);
        // A token without a refresh token is used until it expires.
        e.succeeded(tokens(100, None), now);
        assert_eq!(e.due(CODE), Some(now + Duration::from_secs(100)));
        // With a refresh token, renewed at three quarters; the old one is kept when a
        // refresh answer brings none.
        e.succeeded(tokens(100, Some("r1")), now);
        e.succeeded(tokens(100, None), now);
        assert_eq!(e.refresh_token.as_ref().map(Secret::expose), Some("r1"));
        assert_eq!(e.due(CODE), Some(now + Duration::from_secs(75)));
    }

    #[test]
    fn absurd_lifetimes_never_overflow() {
        let now = SystemTime::now();
        let mut e = Entry::default();
        e.succeeded(
            TokenSet {
                access_token: Secret::new("t"),
                expires_in: Some(Duration::MAX),
                refresh_token: None,
            },
            now,
        );
        assert!(e.current.as_ref().unwrap().expires_at > now);
        assert!(e.due(CC).unwrap() > now);
        let mut kept = Map::new();
        kept.insert("accessToken".into(), json!("t"));
        kept.insert("expiresAt".into(), json!(u64::MAX));
        let mut back = Entry::default();
        back.restore(&kept, now);
        e.failed("x".into(), now);
    }

    #[tokio::test]
    async fn one_account_cannot_evict_another_accounts_pending_authorizations() {
        use crate::credential_kind::{AuthorizationCodeSettings, OAuthClient};
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = std::env::temp_dir().join(format!(
            "mtlsgate-pending-test-{}",
            hex::encode(crate::random::bytes::<8>())
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let store = crate::store::contract::test_store(&dir).await;
        let memory = Arc::new(crate::secret_store::MemoryStore::new());
        let secrets = Secrets::new(memory.clone());
        let tokens = CredentialTokens::new(
            store.clone(),
            secrets,
            oauth2::Client::new(
                None,
                Duration::from_secs(1),
                crate::guarded_dns::GuardedDns::new(Default::default(), Duration::from_secs(1)),
            )
            .unwrap(),
            Settings {
                redirect_uri: "https://cp/api/oauth2/callback".into(),
                messaging_token_url: None,
            },
        );
        let row = |account: &str, id: i64| CredentialRow {
            id,
            account: account.into(),
            name: format!("c{id}"),
            settings: CredentialSettings::Oauth2AuthorizationCode(AuthorizationCodeSettings {
                client: OAuthClient {
                    client_id: "web".into(),
                    client_authentication: ClientAuth::Basic,
                },
                scope: None,
                auth_url: "https://idp/auth".into(),
                token_url: "https://idp/token".into(),
                pkce: true,
            }),
            secret_version: 1,
            created_at: 0,
            updated_at: 0,
        };
        let victim = tokens.authorize(&row("b", 2)).await.unwrap();
        // An attacker account starts far more authorizations than it may keep.
        for _ in 0..(MAX_PENDING_PER_ACCOUNT * 3) {
            tokens.authorize(&row("a", 1)).await.unwrap();
        }
        let count = |account: &'static str| {
            let store = store.clone();
            async move {
                let n: i64 = sqlx::query_scalar(
                    store.sql("SELECT COUNT(*) FROM oauth_pending WHERE account = ?"),
                )
                .bind(account)
                .fetch_one(store.pool())
                .await
                .unwrap();
                n
            }
        };
        assert_eq!(count("b").await, 1, "another account's was evicted");
        assert_eq!(count("a").await as usize, MAX_PENDING_PER_ACCOUNT);
        // The state itself is not stored (its hash is), and the verifiers of the evicted
        // requests are destroyed with them.
        let stored: Vec<String> =
            sqlx::query_scalar(store.sql("SELECT state_sha256 FROM oauth_pending"))
                .fetch_all(store.pool())
                .await
                .unwrap();
        assert!(!stored.contains(&victim.state));
        assert!(stored.contains(&state_sha256(&victim.state)));
        let verifiers = memory
            .paths()
            .into_iter()
            .filter(|p| p.starts_with("system/oauth-pending/"))
            .count();
        assert_eq!(verifiers, MAX_PENDING_PER_ACCOUNT + 1);
        // The victim's callback is still known (an unknown one is not), and only once.
        // (The exchange itself fails here: no credential row; what matters is the state.)
        assert!(matches!(
            tokens.callback("no-such-state", Ok("code")).await,
            Err(CallbackError::UnknownState)
        ));
        assert!(matches!(
            tokens.callback(&victim.state, Ok("code")).await,
            Err(CallbackError::CredentialGone)
        ));
        assert!(matches!(
            tokens.callback(&victim.state, Ok("code")).await,
            Err(CallbackError::UnknownState)
        ));
        // A kind that is not authorized by a user is refused as such.
        let mut basic = row("a", 3);
        basic.settings =
            CredentialSettings::BasicAuthentication(crate::credential_kind::BasicSettings {
                username: "u".into(),
            });
        assert_eq!(
            tokens.authorize(&basic).await.err(),
            Some(AuthorizeError::NotAuthorizable)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn kept_tokens_round_trip_and_expired_ones_are_not_restored() {
        let now = SystemTime::now();
        let mut e = Entry::default();
        e.succeeded(tokens(100, Some("r")), now);
        let kept = e.persisted();
        let mut back = Entry::default();
        back.restore(&kept, now);
        assert_eq!(back.current.as_ref().map(|c| c.token.expose()), Some("t"));
        assert_eq!(back.refresh_token.as_ref().map(Secret::expose), Some("r"));
        let mut late = Entry::default();
        late.restore(&kept, now + Duration::from_secs(200));
        assert!(late.current.is_none());
        assert!(late.refresh_token.is_some());
    }

    /// Two control planes on one database and one secret store: one token request for a new
    /// client-credentials credential, and both push that one token.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_control_planes_request_once_and_push_the_same_token() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter("warn,mtlsgate=debug")
            .try_init();
        let _ = rustls::crypto::ring::default_provider().install_default();
        // A real token endpoint on loopback that answers slowly (a wide window for a race)
        // and counts what it is asked.
        let asked = Arc::new(AtomicUsize::new(0));
        let counter = asked.clone();
        let app = axum::Router::new().route(
            "/token",
            axum::routing::post(move || {
                let counter = counter.clone();
                async move {
                    let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    axum::Json(json!({"access_token": format!("token-{n}"), "token_type": "Bearer", "expires_in": 3600}))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });

        let dir = std::env::temp_dir().join(format!(
            "mtlsgate-token-replicas-{}",
            hex::encode(crate::random::bytes::<8>())
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let (store_a, store_b) = crate::store::contract::test_store_pair(&dir).await;
        let secrets = Secrets::new(Arc::new(crate::secret_store::MemoryStore::new()));
        let settings = CredentialSettings::from_json(
            CredentialKind::Oauth2ClientCredentials,
            json!({"clientId": "c", "tokenUrl": format!("http://{addr}/token")}),
        )
        .unwrap();
        let id = {
            let mut tx = store_a.begin_write("a").await.unwrap();
            let id = Store::insert_credential(&mut tx, "a", "partner", &settings)
                .await
                .unwrap();
            let mut secret = Map::new();
            secret.insert("clientSecret".into(), json!("s3cret"));
            let version = secrets.put_credential("a", id, &secret).await.unwrap();
            Store::set_credential_secret_version(&mut tx, "a", id, version)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            id
        };
        let loopback = Arc::new(crate::address_policy::AddressPolicy::new(
            vec![crate::address_policy::parse_range("127.0.0.1/32").unwrap()],
            vec![],
            vec![],
        ));
        let keeper = |store: Store| {
            CredentialTokens::new(
                store,
                secrets.clone(),
                oauth2::Client::new(
                    None,
                    Duration::from_secs(5),
                    crate::guarded_dns::GuardedDns::new(loopback.clone(), Duration::from_secs(1)),
                )
                .unwrap(),
                Settings {
                    redirect_uri: "http://api/cb".into(),
                    messaging_token_url: None,
                },
            )
        };
        let (a, b) = (keeper(store_a), keeper(store_b));
        let runs = [tokio::spawn(a.clone().run()), tokio::spawn(b.clone().run())];
        let both = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let (Some(x), Some(y)) = (a.header(id), b.header(id)) {
                    return (x, y);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("both control planes push a token within 10 s");
        assert_eq!(
            both.0, both.1,
            "the two control planes push different tokens"
        );
        assert_eq!(both.0, "Bearer token-1");
        assert_eq!(
            asked.load(Ordering::SeqCst),
            1,
            "the token endpoint was asked more than once"
        );
        for r in runs {
            r.abort();
        }
    }

    /// The user's browser comes back to another control plane than the one that started the
    /// authorization: it finds the request, and the PKCE verifier reaches the token endpoint.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_callback_completes_on_another_control_plane() {
        use crate::credential_kind::{AuthorizationCodeSettings, OAuthClient};
        let _ = rustls::crypto::ring::default_provider().install_default();
        // A token endpoint that keeps the form it was sent.
        let seen = Arc::new(Mutex::new(String::new()));
        let keep = seen.clone();
        let app = axum::Router::new().route(
            "/token",
            axum::routing::post(move |body: String| {
                let keep = keep.clone();
                async move {
                    *keep.lock().unwrap() = body;
                    axum::Json(json!({"access_token": "user-token", "token_type": "Bearer", "expires_in": 3600, "refresh_token": "r"}))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });

        let dir = std::env::temp_dir().join(format!(
            "mtlsgate-callback-replicas-{}",
            hex::encode(crate::random::bytes::<8>())
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let (store_a, store_b) = crate::store::contract::test_store_pair(&dir).await;
        let secrets = Secrets::new(Arc::new(crate::secret_store::MemoryStore::new()));
        let settings = CredentialSettings::Oauth2AuthorizationCode(AuthorizationCodeSettings {
            client: OAuthClient {
                client_id: "web".into(),
                client_authentication: ClientAuth::Basic,
            },
            scope: None,
            auth_url: "https://idp.example/auth".into(),
            token_url: format!("http://{addr}/token"),
            pkce: true,
        });
        let id = {
            let mut tx = store_a.begin_write("a").await.unwrap();
            let id = Store::insert_credential(&mut tx, "a", "user-grant", &settings)
                .await
                .unwrap();
            let mut secret = Map::new();
            secret.insert("clientSecret".into(), json!("s3cret"));
            let version = secrets.put_credential("a", id, &secret).await.unwrap();
            Store::set_credential_secret_version(&mut tx, "a", id, version)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            id
        };
        let loopback = Arc::new(crate::address_policy::AddressPolicy::new(
            vec![crate::address_policy::parse_range("127.0.0.1/32").unwrap()],
            vec![],
            vec![],
        ));
        let keeper = |store: Store| {
            CredentialTokens::new(
                store,
                secrets.clone(),
                oauth2::Client::new(
                    None,
                    Duration::from_secs(5),
                    crate::guarded_dns::GuardedDns::new(loopback.clone(), Duration::from_secs(1)),
                )
                .unwrap(),
                Settings {
                    redirect_uri: "https://cp/api/oauth2/callback".into(),
                    messaging_token_url: None,
                },
            )
        };
        let (a, b) = (keeper(store_a.clone()), keeper(store_b));
        let row = store_a.credential("a", id).await.unwrap().unwrap();
        let started = a.authorize(&row).await.unwrap();
        let challenge = url::Url::parse(&started.url)
            .unwrap()
            .query_pairs()
            .find(|(k, _)| k == "code_challenge")
            .map(|(_, v)| v.into_owned())
            .unwrap();

        assert_eq!(
            b.callback(&started.state, Ok("the-code")).await.unwrap(),
            ("a".to_owned(), id)
        );
        assert_eq!(b.header(id).as_deref(), Some("Bearer user-token"));
        let form: HashMap<String, String> =
            url::form_urlencoded::parse(seen.lock().unwrap().as_bytes())
                .into_owned()
                .collect();
        assert_eq!(form.get("code").map(String::as_str), Some("the-code"));
        let verifier = form.get("code_verifier").expect("the verifier was sent");
        assert_eq!(oauth2::pkce_challenge(verifier), challenge);
        // Used once: neither control plane takes it again.
        assert!(matches!(
            a.callback(&started.state, Ok("the-code")).await,
            Err(CallbackError::UnknownState)
        ));
    }
}
