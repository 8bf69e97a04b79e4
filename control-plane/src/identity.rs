//! Who callers are: password hashing, the token signing key, and issuing and checking the
//! Bearer tokens of the login method.
//!
//! Tokens are EdDSA JWTs (see `mtlsgate_filter::token`): the control plane signs with a
//! private key kept in Vault, and anyone holding the public key — the filter in Envoy — can
//! verify them without calling back.

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;
use ed25519_dalek::SigningKey;
use mtlsgate_filter::token::{self, Claims, KeySet, TokenError};
use sha2::{Digest, Sha256};

use crate::secret::Secret;
use crate::secret_store::{SecretStoreError, Secrets};
use crate::store::UserRow;

/// Shortest password accepted for a user.
pub const PASSWORD_MIN: usize = 8;
/// Longest password accepted (argon2 hashes anything, but a megabyte password is an attack).
pub const PASSWORD_MAX: usize = 1024;

/// What an account id must be, as messages say it (the rule itself is the filter's:
/// `mtlsgate_filter::account::is_valid`, shared so both halves agree).
pub const ACCOUNT_RULE: &str = "the account id must be 1-64 letters, digits, '-' or '_'";

/// Why a user name or password is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("a user name is 1-128 characters without spaces")]
    Username,
    #[error("a password is {PASSWORD_MIN} to {PASSWORD_MAX} characters")]
    Password,
}

impl Invalid {
    /// The API error code.
    pub fn code(&self) -> &'static str {
        match self {
            Invalid::Username => "invalid_username",
            Invalid::Password => "invalid_password",
        }
    }
}

/// Checks a user name: 1-128 printable characters without spaces.
pub fn check_username(name: &str) -> Result<(), Invalid> {
    if name.is_empty()
        || name.chars().count() > 128
        || name.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(Invalid::Username);
    }
    Ok(())
}

/// Checks a new password's length.
pub fn check_password(password: &Secret) -> Result<(), Invalid> {
    let n = password.expose().chars().count();
    if !(PASSWORD_MIN..=PASSWORD_MAX).contains(&n) {
        return Err(Invalid::Password);
    }
    Ok(())
}

/// How failed logins slow guessing down: a few free tries per user and per client address,
/// then a lock that doubles with each further failure, up to 15 minutes. Counters are kept
/// in the database (so they hold whichever control plane a login reaches) and forgotten an
/// hour after the last failure.
pub struct LoginPolicy;

impl LoginPolicy {
    /// Failures are counted within this many seconds of the previous one.
    pub const WINDOW_SECS: i64 = 3600;
    /// Failed logins of one (account, user name) before it is locked.
    pub const USER_FREE: i64 = 5;
    /// Failed logins from one client address (an IPv6 /64) before it is locked.
    pub const ADDRESS_FREE: i64 = 20;
    /// The longest lock, seconds.
    pub const MAX_LOCK_SECS: i64 = 900;

    /// Seconds a user name is locked after its `failures`-th failure (0: not locked).
    pub fn user_lock(failures: i64) -> i64 {
        Self::lock(failures, Self::USER_FREE)
    }

    /// Seconds a client address is locked after its `failures`-th failure.
    pub fn address_lock(failures: i64) -> i64 {
        Self::lock(failures, Self::ADDRESS_FREE)
    }

    fn lock(failures: i64, free: i64) -> i64 {
        if failures <= free {
            return 0;
        }
        // 1, 2, 4, … seconds; the exponent is capped before shifting.
        let doublings = (failures - free - 1).clamp(0, 20) as u32;
        (1i64 << doublings).min(Self::MAX_LOCK_SECS)
    }

    /// The counter of one (account, user name): hashed, so what a guesser types is never
    /// stored, and a row has a fixed size whatever they send. Unknown names are counted the
    /// same way as real ones: a lock must not tell which names exist.
    pub fn user_scope(account: &str, username: &str) -> String {
        let mut h = Sha256::new();
        h.update(account.as_bytes());
        h.update([0]);
        h.update(username.as_bytes());
        format!("user:{}", hex::encode(&h.finalize()[..16]))
    }

    /// The counter of a client address; an IPv6 address counts as its /64, which one client
    /// typically holds whole.
    pub fn address_scope(ip: std::net::IpAddr) -> String {
        match ip {
            std::net::IpAddr::V4(v4) => format!("ip:{v4}"),
            std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => format!("ip:{v4}"),
                None => {
                    let s = v6.segments();
                    format!("ip:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
                }
            },
        }
    }
}

fn unix_now() -> u64 {
    u64::try_from(crate::clock::now()).unwrap_or(0)
}

/// Hashes a password with argon2id (PHC string). Slow on purpose: run it off the async
/// threads (`spawn_blocking`).
pub fn hash_password(password: &Secret) -> Result<String, argon2::password_hash::Error> {
    let hash: PasswordHash = Argon2::default().hash_password(password.expose().as_bytes())?;
    Ok(hash.to_string())
}

/// Checks a password against a PHC hash. With `None` (no such user) it still spends the time
/// of a verification, so timing does not tell which user names exist.
pub fn verify_password(password: &Secret, hash: Option<&str>) -> bool {
    // A hash of a random password, made once: verifying against it always fails.
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let dummy = DUMMY.get_or_init(|| {
        hash_password(&Secret::new(hex::encode(crate::random::bytes::<16>()))).unwrap_or_default()
    });
    let (phc, real) = match hash {
        Some(h) => (h, true),
        None => (dummy.as_str(), false),
    };
    let ok = PasswordHash::new(phc)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.expose().as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false);
    ok && real
}

/// The secret store entry (system path) that holds the login-token signing keys.
const KEYS_ENTRY: &str = "token-signing-key";

/// How long after a key stops signing its tokens are still accepted, beyond the session
/// TTL: the clock skew between control planes ([`token::MAX_IAT_SKEW_SECS`]).
const RETIRE_SLACK_SECS: u64 = token::MAX_IAT_SKEW_SECS;

/// One signing key as the secret store keeps it. No `Debug`: it holds a private key.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredKey {
    /// The Ed25519 seed, hex.
    private_key: String,
    /// From when the key signs new tokens (unix seconds): a new key is published to every
    /// control plane and gateway before any token of it exists.
    #[serde(default)]
    signs_from: u64,
    /// When tokens of the key stop being accepted (unix seconds): set when a newer key takes
    /// over, to the takeover plus the session TTL. `None`: the key is current.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retire_after: Option<u64>,
}

/// The key set as the secret store keeps it.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredKeySet {
    keys: Vec<StoredKey>,
}

/// What the entry may hold: the set, or the single key of the versions before rotation
/// (`{"privateKey": …}`), read as a set of one key that always signed. It is written back
/// as a set by the first rotation, never by a control plane reading it (several control
/// planes writing one entry could undo each other's rotation).
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum StoredForm {
    Set(StoredKeySet),
    Single {
        #[serde(rename = "privateKey")]
        private_key: String,
    },
}

impl From<StoredForm> for StoredKeySet {
    fn from(form: StoredForm) -> StoredKeySet {
        match form {
            StoredForm::Set(set) => set,
            StoredForm::Single { private_key } => StoredKeySet {
                keys: vec![StoredKey {
                    private_key,
                    signs_from: 0,
                    retire_after: None,
                }],
            },
        }
    }
}

/// One signing key in memory.
struct LoginKey {
    kid: String,
    signing: SigningKey,
    signs_from: u64,
    retire_after: Option<u64>,
}

impl LoginKey {
    fn accepted_at(&self, now: u64) -> bool {
        self.retire_after.is_none_or(|t| now < t)
    }
}

/// The key id of a public key: the first 8 bytes of its SHA-256, hex.
fn kid_of(signing: &SigningKey) -> String {
    hex::encode(&Sha256::digest(signing.verifying_key().as_bytes())[..8])
}

/// The login-token signing keys: which one signs now, which ones verify.
struct LoginKeys {
    keys: Vec<LoginKey>,
    /// What they were made from, to tell a change in the secret store.
    stored: StoredKeySet,
}

impl LoginKeys {
    fn from_stored(stored: StoredKeySet) -> Result<LoginKeys, SecretStoreError> {
        let keys = stored
            .keys
            .iter()
            .map(|k| {
                let seed = hex::decode(k.private_key.as_bytes())
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
                    .ok_or(SecretStoreError::Malformed)?;
                let signing = SigningKey::from_bytes(&seed);
                Ok(LoginKey {
                    kid: kid_of(&signing),
                    signing,
                    signs_from: k.signs_from,
                    retire_after: k.retire_after,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err(SecretStoreError::Malformed);
        }
        Ok(LoginKeys { keys, stored })
    }

    /// The key that signs at `now`: of the accepted keys whose time has come, the newest;
    /// when none has (every one still to come, or retired), the one that comes first.
    fn signer(&self, now: u64) -> &LoginKey {
        let due = self
            .keys
            .iter()
            .filter(|k| k.signs_from <= now && k.accepted_at(now))
            .max_by_key(|k| k.signs_from);
        due.or_else(|| self.keys.iter().min_by_key(|k| k.signs_from))
            .unwrap_or_else(|| unreachable_first(&self.keys))
    }

    /// The keys whose tokens are accepted at `now`: a key still to come is (another control
    /// plane may already sign with it), a retired one is not.
    fn accepted(&self, now: u64) -> impl Iterator<Item = &LoginKey> {
        self.keys.iter().filter(move |k| k.accepted_at(now))
    }
}

/// `from_stored` refuses an empty set, so there is always a first key.
fn unreachable_first(keys: &[LoginKey]) -> &LoginKey {
    &keys[0]
}

/// Why a rotation was not made.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error("secret store: {0}")]
    Secrets(#[from] SecretStoreError),
    #[error("there is no login-token key yet: a control plane makes it at its first start")]
    NoKey,
    #[error("a rotation is under way: its key signs from {0} (unix seconds); rotate again after that, or with --compromised")]
    UnderWay(u64),
}

/// What a rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// The new key's id.
    pub kid: String,
    /// From when it signs (unix seconds).
    pub signs_from: u64,
    /// The keys kept for their tokens: (key id, accepted until, unix seconds).
    pub retiring: Vec<(String, u64)>,
    /// Keys removed: expired ones, or every old one with `compromised`.
    pub removed: usize,
}

/// How a rotation is made.
#[derive(Debug, Clone, Copy)]
pub struct RotatePolicy {
    /// The session TTL of the control planes: how long a token of the old key can live.
    pub ttl_secs: u64,
    /// Seconds from now until the new key signs: longer than every control plane's
    /// `--vault-watch-seconds`, so each knows the new public key before any token of it.
    pub activate_in_secs: u64,
    /// The old keys are compromised: remove them at once (their tokens are refused as soon
    /// as each control plane polls) and sign with the new key at once.
    pub compromised: bool,
}

/// The key set after a rotation at `now` with `seed` as the new key: expired keys removed;
/// the current key retired at the new key's start plus the TTL (or every old key removed
/// when compromised); the new key signing from `now + activate_in`.
fn rotated(
    stored: StoredKeySet,
    now: u64,
    policy: RotatePolicy,
    seed: [u8; 32],
) -> Result<(StoredKeySet, Rotation), RotateError> {
    let before = stored.keys.len();
    let mut keys: Vec<StoredKey> = if policy.compromised {
        Vec::new()
    } else {
        stored
            .keys
            .into_iter()
            .filter(|k| k.retire_after.is_none_or(|t| now < t))
            .collect()
    };
    if let Some(pending) = keys.iter().find(|k| k.signs_from > now) {
        return Err(RotateError::UnderWay(pending.signs_from));
    }
    let removed = before.saturating_sub(keys.len());
    let activate_in = if policy.compromised {
        0
    } else {
        policy.activate_in_secs
    };
    let signs_from = now.saturating_add(activate_in);
    let retire_after = signs_from
        .saturating_add(policy.ttl_secs)
        .saturating_add(RETIRE_SLACK_SECS);
    for k in &mut keys {
        if k.retire_after.is_none() {
            k.retire_after = Some(retire_after);
        }
    }
    let signing = SigningKey::from_bytes(&seed);
    keys.push(StoredKey {
        private_key: hex::encode(seed),
        signs_from,
        retire_after: None,
    });
    let set = StoredKeySet { keys };
    let retiring = LoginKeys::from_stored(set.clone())?
        .keys
        .iter()
        .filter_map(|k| Some((k.kid.clone(), k.retire_after?)))
        .collect();
    Ok((
        set,
        Rotation {
            kid: kid_of(&signing),
            signs_from,
            retiring,
            removed,
        },
    ))
}

/// Rotates the login-token signing key in the secret store (`mtlsgate keys rotate-login`):
/// every control plane takes the new set at its next poll.
pub async fn rotate(secrets: &Secrets, policy: RotatePolicy) -> Result<Rotation, RotateError> {
    let stored: StoredKeySet = secrets
        .get_system::<StoredForm>(KEYS_ENTRY)
        .await?
        .ok_or(RotateError::NoKey)?
        .into();
    let (set, rotation) = rotated(stored, unix_now(), policy, crate::random::bytes::<32>())?;
    secrets.put_system(KEYS_ENTRY, &set).await?;
    Ok(rotation)
}

/// Issues and checks tokens with the key set of the secret store, which it polls
/// ([`LoginTokens::refresh`]) so that a rotation reaches every control plane.
pub struct LoginTokens {
    keys: std::sync::RwLock<LoginKeys>,
    ttl_secs: u64,
}

impl LoginTokens {
    /// Loads the signing keys from Vault, creating the first on first start.
    pub async fn load(secrets: &Secrets, ttl_secs: u64) -> Result<LoginTokens, SecretStoreError> {
        let stored = match secrets.get_system::<StoredForm>(KEYS_ENTRY).await? {
            Some(form) => form.into(),
            None => {
                let set = StoredKeySet {
                    keys: vec![StoredKey {
                        private_key: hex::encode(crate::random::bytes::<32>()),
                        signs_from: 0,
                        retire_after: None,
                    }],
                };
                secrets.put_system(KEYS_ENTRY, &set).await?;
                tracing::info!("created the token signing key in Vault");
                set
            }
        };
        Ok(LoginTokens {
            keys: std::sync::RwLock::new(LoginKeys::from_stored(stored)?),
            ttl_secs,
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, LoginKeys> {
        self.keys.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the key set from the secret store again and takes it if it changed. Answers
    /// whether it did. An entry gone or unreadable leaves the keys in memory in force.
    pub async fn refresh(&self, secrets: &Secrets) -> Result<bool, SecretStoreError> {
        let Some(form) = secrets.get_system::<StoredForm>(KEYS_ENTRY).await? else {
            tracing::warn!(
                "the token signing keys are gone from the secret store; keeping those in memory"
            );
            return Ok(false);
        };
        let stored: StoredKeySet = form.into();
        if self.read().stored == stored {
            return Ok(false);
        }
        let keys = LoginKeys::from_stored(stored)?;
        let kids: Vec<&str> = keys.keys.iter().map(|k| k.kid.as_str()).collect();
        tracing::info!(keys = ?kids, "token signing keys changed in the secret store");
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
        Ok(true)
    }

    /// Token lifetime in seconds.
    pub fn ttl_secs(&self) -> u64 {
        self.ttl_secs
    }

    /// The public keys whose tokens are accepted now, by key id, for whoever verifies
    /// tokens (the gateway's snapshot).
    pub fn public_keys(&self) -> Vec<(String, [u8; 32])> {
        self.read()
            .accepted(unix_now())
            .map(|k| (k.kid.clone(), k.signing.verifying_key().to_bytes()))
            .collect()
    }

    /// A token for a user who just logged in.
    pub fn issue(&self, user: &UserRow) -> String {
        let now = unix_now();
        let claims = Claims {
            iss: token::ISSUER.into(),
            sub: user.id.to_string(),
            acc: user.account.clone(),
            name: user.username.clone(),
            adm: user.is_admin,
            privileges: user.privileges.clone(),
            iat: now,
            exp: now.saturating_add(self.ttl_secs),
            jti: hex::encode(crate::random::bytes::<12>()),
        };
        let keys = self.read();
        let signer = keys.signer(now);
        token::sign(&claims, &signer.kid, &signer.signing)
    }

    pub fn verify(&self, bearer: &str) -> Result<Claims, TokenError> {
        let now = unix_now();
        let keys: KeySet = self
            .read()
            .accepted(now)
            .map(|k| (k.kid.clone(), k.signing.verifying_key()))
            .collect();
        token::verify(bearer, &keys, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_start_after_the_free_tries_double_and_are_capped() {
        let user: Vec<i64> = (1..=10).map(LoginPolicy::user_lock).collect();
        assert_eq!(user, [0, 0, 0, 0, 0, 1, 2, 4, 8, 16]);
        assert_eq!(LoginPolicy::address_lock(20), 0);
        assert_eq!(LoginPolicy::address_lock(21), 1);
        assert_eq!(LoginPolicy::user_lock(i64::MAX), LoginPolicy::MAX_LOCK_SECS);
        assert_eq!(LoginPolicy::user_lock(-3), 0);
    }

    #[test]
    fn scopes_are_bounded_and_group_ipv6_by_64() {
        let long = "x".repeat(10_000);
        let s = LoginPolicy::user_scope("123", &long);
        assert_eq!(s.len(), "user:".len() + 32);
        assert!(!s.contains('x'));
        assert_ne!(
            LoginPolicy::user_scope("1", "23"),
            LoginPolicy::user_scope("12", "3")
        );
        let a: std::net::IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: std::net::IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        assert_eq!(LoginPolicy::address_scope(a), LoginPolicy::address_scope(b));
        let v4: std::net::IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(LoginPolicy::address_scope(v4), "ip:10.1.2.3");
    }

    fn user(account: &str) -> UserRow {
        UserRow {
            id: 7,
            account: account.into(),
            username: "kim".into(),
            is_admin: true,
            privileges: vec![],
            password_hash: String::new(),
            created_at: 0,
        }
    }

    fn stored(seed: u8) -> StoredKeySet {
        StoredKeySet {
            keys: vec![StoredKey {
                private_key: hex::encode([seed; 32]),
                signs_from: 0,
                retire_after: None,
            }],
        }
    }

    fn policy(ttl_secs: u64, activate_in_secs: u64) -> RotatePolicy {
        RotatePolicy {
            ttl_secs,
            activate_in_secs,
            compromised: false,
        }
    }

    /// The key id in a token's header.
    fn kid_in(token: &str) -> String {
        use base64::Engine as _;
        let header = token.split('.').next().unwrap();
        let json: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(header)
                .unwrap(),
        )
        .unwrap();
        json["kid"].as_str().unwrap().to_owned()
    }

    fn sign_at(keys: &LoginKeys, now: u64) -> String {
        let signer = keys.signer(now);
        let claims = Claims {
            iss: token::ISSUER.into(),
            sub: "7".into(),
            acc: "a".into(),
            name: "kim".into(),
            adm: false,
            privileges: vec![],
            iat: now,
            exp: now + 100,
            jti: "j".into(),
        };
        token::sign(&claims, &signer.kid, &signer.signing)
    }

    fn verify_at(keys: &LoginKeys, token: &str, now: u64) -> Result<Claims, TokenError> {
        let set: KeySet = keys
            .accepted(now)
            .map(|k| (k.kid.clone(), k.signing.verifying_key()))
            .collect();
        token::verify(token, &set, now)
    }

    #[test]
    fn the_single_key_of_before_rotation_reads_as_a_set_of_one_that_always_signed() {
        let old = serde_json::json!({"privateKey": hex::encode([1u8; 32])});
        let form: StoredForm = serde_json::from_value(old).unwrap();
        let set: StoredKeySet = form.into();
        assert!(set == stored(1));
        let keys = LoginKeys::from_stored(set).unwrap();
        // The same kid as the single-key version gave it, so its tokens stay valid.
        let signing = SigningKey::from_bytes(&[1u8; 32]);
        let kid = hex::encode(&Sha256::digest(signing.verifying_key().as_bytes())[..8]);
        assert_eq!(keys.signer(0).kid, kid);
        assert_eq!(keys.accepted(u64::MAX - 1).count(), 1);
        // The set form reads back as itself; a set with no key or a bad seed is refused.
        let json = serde_json::to_value(stored(2)).unwrap();
        assert_eq!(json["keys"][0]["signsFrom"], 0);
        assert!(json["keys"][0].get("retireAfter").is_none());
        let back: StoredKeySet = serde_json::from_value::<StoredForm>(json).unwrap().into();
        assert!(back == stored(2));
        assert!(LoginKeys::from_stored(StoredKeySet { keys: vec![] }).is_err());
        let mut bad = stored(3);
        bad.keys[0].private_key = "abcd".into();
        assert!(LoginKeys::from_stored(bad).is_err());
    }

    #[test]
    fn a_rotated_key_signs_after_its_delay_and_old_tokens_verify_until_retire_after() {
        let (now, ttl, delay) = (1_000_000, 3600, 60);
        let before = LoginKeys::from_stored(stored(1)).unwrap();
        let old_kid = before.signer(now).kid.clone();
        let old_token = sign_at(&before, now);

        let (set, rotation) = rotated(stored(1), now, policy(ttl, delay), [9u8; 32]).unwrap();
        let keys = LoginKeys::from_stored(set.clone()).unwrap();
        assert_eq!(rotation.signs_from, now + delay);
        let retire = now + delay + ttl + RETIRE_SLACK_SECS;
        assert_eq!(rotation.retiring, vec![(old_kid.clone(), retire)]);
        assert_ne!(rotation.kid, old_kid);
        // Before its start the new key is published (accepted) but the old one signs.
        assert_eq!(keys.signer(now + delay - 1).kid, old_kid);
        assert_eq!(keys.accepted(now).count(), 2);
        // From its start the new key signs; the old key's tokens still verify.
        assert_eq!(keys.signer(now + delay).kid, rotation.kid);
        assert_eq!(kid_in(&sign_at(&keys, now + delay)), rotation.kid);
        assert!(verify_at(&keys, &old_token, now + 50).is_ok());
        // Until retire_after: then the old key is no longer accepted (its tokens, even one
        // with a far expiry, are refused as signed by an unknown key).
        let late = {
            let signer = before.signer(now);
            let claims = Claims {
                iss: token::ISSUER.into(),
                sub: "7".into(),
                acc: "a".into(),
                name: "kim".into(),
                adm: false,
                privileges: vec![],
                iat: now,
                exp: retire + 1000,
                jti: "j".into(),
            };
            token::sign(&claims, &signer.kid, &signer.signing)
        };
        assert!(verify_at(&keys, &late, retire - 1).is_ok());
        assert_eq!(
            verify_at(&keys, &late, retire).err(),
            Some(TokenError::UnknownKey)
        );
        assert_eq!(keys.accepted(retire).count(), 1);

        // A second rotation while the first is still to start is refused; after it, the
        // expired key is removed from the stored set.
        assert!(matches!(
            rotated(set.clone(), now + 1, policy(ttl, delay), [8u8; 32]),
            Err(RotateError::UnderWay(t)) if t == now + delay
        ));
        let (later, second) = rotated(set, retire, policy(ttl, delay), [8u8; 32]).unwrap();
        assert_eq!(second.removed, 1);
        assert_eq!(later.keys.len(), 2);
        assert_eq!(second.retiring.len(), 1);
        assert_eq!(second.retiring[0].0, rotation.kid);
    }

    #[test]
    fn a_compromised_rotation_removes_the_old_keys_and_signs_at_once() {
        let now = 5_000;
        let before = LoginKeys::from_stored(stored(1)).unwrap();
        let old_token = sign_at(&before, now);
        let (set, rotation) = rotated(
            stored(1),
            now,
            RotatePolicy {
                ttl_secs: 3600,
                activate_in_secs: 60,
                compromised: true,
            },
            [4u8; 32],
        )
        .unwrap();
        assert_eq!((rotation.removed, rotation.signs_from), (1, now));
        assert!(rotation.retiring.is_empty());
        let keys = LoginKeys::from_stored(set).unwrap();
        assert_eq!(keys.signer(now).kid, rotation.kid);
        assert_eq!(
            verify_at(&keys, &old_token, now).err(),
            Some(TokenError::UnknownKey)
        );
    }

    #[tokio::test]
    async fn control_planes_take_a_rotation_from_the_secret_store_without_a_restart() {
        let secrets = Secrets::new(std::sync::Arc::new(
            crate::secret_store::MemoryStore::default(),
        ));
        // The entry as the versions before rotation wrote it.
        secrets
            .put_system(
                KEYS_ENTRY,
                &serde_json::json!({"privateKey": hex::encode([5u8; 32])}),
            )
            .await
            .unwrap();
        let a = LoginTokens::load(&secrets, 3600).await.unwrap();
        let b = LoginTokens::load(&secrets, 3600).await.unwrap();
        let old = a.issue(&user("a"));
        assert!(b.verify(&old).is_ok());
        assert!(!a.refresh(&secrets).await.unwrap(), "nothing changed yet");

        let done = rotate(&secrets, policy(3600, 0)).await.unwrap();
        assert!(a.refresh(&secrets).await.unwrap());
        // A knows the new key and signs with it (no delay asked); B, not refreshed yet,
        // refuses it — what the activation delay is for.
        let new = a.issue(&user("a"));
        assert_eq!(kid_in(&new), done.kid);
        assert!(b.verify(&new).is_err());
        assert!(b.refresh(&secrets).await.unwrap());
        assert!(b.verify(&new).is_ok() && b.verify(&old).is_ok());
        assert_eq!(b.public_keys().len(), 2);
        // The stored entry is now a set; a rotation still under way is refused.
        let stored: StoredKeySet = secrets
            .get_system::<StoredForm>(KEYS_ENTRY)
            .await
            .unwrap()
            .unwrap()
            .into();
        assert_eq!(stored.keys.len(), 2);
        assert!(rotate(&secrets, policy(3600, 600)).await.is_ok());
        assert!(matches!(
            rotate(&secrets, policy(3600, 600)).await,
            Err(RotateError::UnderWay(_))
        ));
    }

    #[test]
    fn user_names_are_counted_in_characters() {
        assert!(check_username(&"é".repeat(128)).is_ok());
        assert!(check_username(&"é".repeat(129)).is_err());
        assert!(check_username("a b").is_err());
    }
}
