//! Opening PKCS#12 files: the password is used once, here, and kept nowhere.

use std::fmt;

use base64::Engine;
use p12_keystore::{KeyStore, KeyStoreEntry, Pkcs12ImportPolicy};

use crate::certinfo::CertInfo;
use crate::keystore_budget::{self, OverBudget};
use crate::secret::Secret;

/// A client certificate chain and its private key, in PEM, as Envoy takes them.
#[derive(Clone, PartialEq, Eq)]
pub struct Material {
    /// Leaf first, then its issuers.
    pub chain_pem: String,
    pub key_pem: Secret,
}

impl fmt::Debug for Material {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Material")
            .field("chain_pem", &format_args!("{} bytes", self.chain_pem.len()))
            .field("key_pem", &self.key_pem)
            .finish()
    }
}

/// A P12 file, opened.
#[derive(Debug, Clone)]
pub struct Opened {
    pub material: Material,
    /// About the leaf certificate.
    pub info: CertInfo,
}

/// Why a P12 file could not be used. Messages never include the password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum P12Error {
    #[error("the file is empty")]
    Empty,
    #[error("the password does not open this file (or the file is corrupted)")]
    BadPassword,
    #[error("the file is not a readable PKCS#12 key store")]
    Unreadable,
    #[error("the file holds no private key with its certificate")]
    NoPrivateKey,
    #[error("the file holds more than one private key; upload one key and its chain")]
    SeveralKeys,
    #[error("the certificate in the file is not readable X.509")]
    BadCertificate,
    /// A key Envoy refuses to present (its TLS library loads RSA keys of 2048 bits or more,
    /// and ECDSA keys on P-256, P-384 or P-521 only): refused at upload, so it never
    /// reaches a gateway as a secret the gateway rejects.
    #[error("the key is one the gateway cannot present: RSA keys need 2048 bits or more, EC keys the P-256, P-384 or P-521 curve")]
    WeakKey,
    /// A key that is not the private half of its certificate's public key: Envoy refuses to
    /// load such a pair, so every gateway would reject it.
    #[error("the private key does not belong to the certificate it comes with")]
    KeyMismatch,
    #[error("JCEKS key stores are not supported; convert with keytool -importkeystore -deststoretype PKCS12")]
    Unsupported,
    /// Over the one budget of `keystore_budget`: refused before any key is derived.
    #[error("the key store is refused: {0}")]
    TooCostly(OverBudget),
}

impl P12Error {
    /// Stable `code` for error answers.
    pub fn code(self) -> &'static str {
        match self {
            P12Error::Empty => "p12_empty",
            P12Error::BadPassword => "p12_bad_password",
            P12Error::Unreadable => "p12_unreadable",
            P12Error::NoPrivateKey => "p12_no_private_key",
            P12Error::SeveralKeys => "p12_several_keys",
            P12Error::BadCertificate => "p12_bad_certificate",
            P12Error::WeakKey => "p12_weak_key",
            P12Error::KeyMismatch => "p12_key_mismatch",
            P12Error::Unsupported => "keystore_unsupported",
            P12Error::TooCostly(OverBudget::Unreadable) => "p12_unreadable",
            P12Error::TooCostly(_) => OverBudget::CODE,
        }
    }
}

/// Opens `bytes` with `password` and extracts the one key chain.
pub fn open(bytes: &[u8], password: &str) -> Result<Opened, P12Error> {
    if bytes.is_empty() {
        return Err(P12Error::Empty);
    }
    within_budget(bytes, password)?;
    // why: the crate parses attacker-supplied DER; a panic in it must become a refusal,
    // never take the process down.
    let parsed = std::panic::catch_unwind(|| {
        KeyStore::from_pkcs12(bytes, password, Pkcs12ImportPolicy::Strict)
    })
    .map_err(|_| P12Error::Unreadable)?;
    let store = parsed.map_err(|e| match e {
        p12_keystore::error::Error::MacError(_) => P12Error::BadPassword,
        // A wrong password on a file without a MAC shows up as a padding error.
        p12_keystore::error::Error::UnpadError => P12Error::BadPassword,
        _ => P12Error::Unreadable,
    })?;
    let mut chains = store.entries().filter_map(|(_, e)| match e {
        KeyStoreEntry::PrivateKeyChain(c) => Some(c),
        _ => None,
    });
    let chain = chains.next().ok_or(P12Error::NoPrivateKey)?;
    if chains.next().is_some() {
        return Err(P12Error::SeveralKeys);
    }
    let leaf = chain.certs().first().ok_or(P12Error::NoPrivateKey)?;
    let info = CertInfo::from_der(leaf.as_der()).map_err(|_| P12Error::BadCertificate)?;
    presentable(&info)?;
    paired(chain.key().as_der(), leaf.as_der())?;
    let chain_pem = chain
        .certs()
        .iter()
        .map(|c| pem("CERTIFICATE", c.as_der()))
        .collect::<String>();
    Ok(Opened {
        material: Material {
            chain_pem,
            key_pem: Secret::new(pem("PRIVATE KEY", chain.key().as_der())),
        },
        info,
    })
}

/// Whether Envoy will present a key like the certificate's: refused here rather than
/// NACKed by every gateway later.
pub fn presentable(info: &CertInfo) -> Result<(), P12Error> {
    match info.key_algorithm.as_str() {
        "RSA" if info.key_size < 2048 => Err(P12Error::WeakKey),
        "EC" if ![256, 384, 521].contains(&info.key_size) => Err(P12Error::WeakKey),
        _ => Ok(()),
    }
}

/// Whether the key belongs to the leaf certificate, as Envoy will check when it loads the
/// secret: a proven mismatch is refused here. A pair this crate cannot decide on (a curve it
/// cannot compute on) passes; if Envoy then rejects it, the delivery quarantines that one
/// secret and its mappings say so.
pub fn paired(key_der: &[u8], leaf_der: &[u8]) -> Result<(), P12Error> {
    match crate::key_pairing::pair_matches(key_der, leaf_der) {
        Some(false) => Err(P12Error::KeyMismatch),
        _ => Ok(()),
    }
}

/// Every certificate in a PKCS#12 file (a trust store), as DER.
pub fn certificates(bytes: &[u8], password: &str) -> Result<Vec<Vec<u8>>, P12Error> {
    within_budget(bytes, password)?;
    let store = std::panic::catch_unwind(|| {
        KeyStore::from_pkcs12(bytes, password, Pkcs12ImportPolicy::Strict)
    })
    .map_err(|_| P12Error::Unreadable)?
    .map_err(|e| match e {
        p12_keystore::error::Error::MacError(_) | p12_keystore::error::Error::UnpadError => {
            P12Error::BadPassword
        }
        _ => P12Error::Unreadable,
    })?;
    Ok(store
        .entries()
        .flat_map(|(_, e)| match e {
            KeyStoreEntry::Certificate(c) => vec![c.as_der().to_vec()],
            KeyStoreEntry::PrivateKeyChain(c) => {
                c.certs().iter().map(|c| c.as_der().to_vec()).collect()
            }
            _ => Vec::new(),
        })
        .collect())
}

/// The key-store budget, before `p12-keystore` derives any key. A file whose structure
/// the budget's reader cannot walk is unreadable here too.
fn within_budget(bytes: &[u8], password: &str) -> Result<(), P12Error> {
    keystore_budget::pkcs12(bytes, password)
        .map(|_| ())
        .map_err(|e| match e {
            OverBudget::Unreadable => P12Error::Unreadable,
            e => P12Error::TooCostly(e),
        })
}

/// PEM-encodes DER with 64-column lines.
pub fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
