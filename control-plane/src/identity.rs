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

/// Issues and checks tokens.
pub struct LoginTokens {
    kid: String,
    signing: SigningKey,
    keys: KeySet,
    ttl_secs: u64,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredKey {
    private_key: String,
}

impl LoginTokens {
    /// Loads the signing key from Vault, creating it on first start.
    pub async fn load(secrets: &Secrets, ttl_secs: u64) -> Result<LoginTokens, SecretStoreError> {
        let seed: [u8; 32] = match secrets.get_system::<StoredKey>("token-signing-key").await? {
            Some(k) => hex::decode(k.private_key.as_bytes())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
                .ok_or(SecretStoreError::Malformed)?,
            None => {
                let seed = crate::random::bytes::<32>();
                secrets
                    .put_system(
                        "token-signing-key",
                        &StoredKey {
                            private_key: hex::encode(seed),
                        },
                    )
                    .await?;
                tracing::info!("created the token signing key in Vault");
                seed
            }
        };
        Ok(Self::from_seed(&seed, ttl_secs))
    }

    pub fn from_seed(seed: &[u8; 32], ttl_secs: u64) -> LoginTokens {
        let signing = SigningKey::from_bytes(seed);
        let public = signing.verifying_key();
        let kid = hex::encode(&Sha256::digest(public.as_bytes())[..8]);
        let keys = [(kid.clone(), public)].into_iter().collect();
        LoginTokens {
            kid,
            signing,
            keys,
            ttl_secs,
        }
    }

    /// Token lifetime in seconds.
    pub fn ttl_secs(&self) -> u64 {
        self.ttl_secs
    }

    /// The public keys, by key id, for whoever verifies tokens (the gateway's snapshot).
    pub fn public_keys(&self) -> Vec<(String, [u8; 32])> {
        vec![(self.kid.clone(), self.signing.verifying_key().to_bytes())]
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
            exp: now + self.ttl_secs,
            jti: hex::encode(crate::random::bytes::<12>()),
        };
        token::sign(&claims, &self.kid, &self.signing)
    }

    pub fn verify(&self, bearer: &str) -> Result<Claims, TokenError> {
        token::verify(bearer, &self.keys, unix_now())
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

    #[test]
    fn user_names_are_counted_in_characters() {
        assert!(check_username(&"é".repeat(128)).is_ok());
        assert!(check_username(&"é".repeat(129)).is_err());
        assert!(check_username("a b").is_err());
    }
}
