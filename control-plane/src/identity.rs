//! Who callers are: password hashing, the token signing key, and issuing and checking the
//! Bearer tokens of the login method.
//!
//! Tokens are EdDSA JWTs (see `mtlsgate_filter::token`): the control plane signs with a
//! private key kept in Vault, and anyone holding the public key — the filter in Envoy — can
//! verify them without calling back.

use std::time::{SystemTime, UNIX_EPOCH};

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;
use ed25519_dalek::SigningKey;
use mtlsgate_filter::token::{self, Claims, KeySet, TokenError};
use sha2::{Digest, Sha256};

use crate::secret::Secret;
use crate::store::UserRow;
use crate::vault::{Vault, VaultError};

/// Shortest password accepted for a user.
pub const PASSWORD_MIN: usize = 8;
/// Longest password accepted (argon2 hashes anything, but a megabyte password is an attack).
pub const PASSWORD_MAX: usize = 1024;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Random bytes from the operating system.
pub fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // why: getrandom only fails when the OS has no entropy source at all, in which case
    // nothing secure can be made; fall back to zeros is NOT acceptable, so abort loudly.
    if getrandom::fill(&mut b).is_err() {
        tracing::error!("the operating system's random source failed");
        std::process::abort();
    }
    b
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
        hash_password(&Secret::new(hex::encode(random::<16>()))).unwrap_or_default()
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
pub struct Tokens {
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

impl Tokens {
    /// Loads the signing key from Vault, creating it on first start.
    pub async fn load(vault: &Vault, ttl_secs: u64) -> Result<Tokens, VaultError> {
        let seed: [u8; 32] = match vault.get_system::<StoredKey>("token-signing-key").await? {
            Some(k) => hex::decode(k.private_key.as_bytes())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
                .ok_or(VaultError::Malformed)?,
            None => {
                let seed = random::<32>();
                vault
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

    pub fn from_seed(seed: &[u8; 32], ttl_secs: u64) -> Tokens {
        let signing = SigningKey::from_bytes(seed);
        let public = signing.verifying_key();
        let kid = hex::encode(&Sha256::digest(public.as_bytes())[..8]);
        let keys = [(kid.clone(), public)].into_iter().collect();
        Tokens {
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
            jti: hex::encode(random::<12>()),
        };
        token::sign(&claims, &self.kid, &self.signing)
    }

    pub fn verify(&self, bearer: &str) -> Result<Claims, TokenError> {
        token::verify(bearer, &self.keys, unix_now())
    }
}
