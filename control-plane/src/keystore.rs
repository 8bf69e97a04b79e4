//! Key stores and trust certificates of Mutual Authentication credentials: PKCS#12
//! (.p12/.pfx) or Java KeyStore (.jks), told apart by their first bytes, and trust
//! certificates as PEM, DER, or a key store of trusted certificates.

use std::io::Cursor;

use crate::certinfo::CertInfo;
use crate::p12::{self, Material, Opened, P12Error};
use crate::secret::Secret;

/// `0xFEEDFEED`: a JKS file. `0xCECECECE`: JCEKS, which nothing here reads.
const JKS_MAGIC: [u8; 4] = [0xfe, 0xed, 0xfe, 0xed];
const JCEKS_MAGIC: [u8; 4] = [0xce, 0xce, 0xce, 0xce];

/// Whether `bytes` is a Java KeyStore (or its JCEKS cousin).
pub(crate) fn is_java(bytes: &[u8]) -> bool {
    bytes.starts_with(&JKS_MAGIC) || bytes.starts_with(&JCEKS_MAGIC)
}

/// Opens a key store (PKCS#12 or JKS) and extracts its one key and chain.
pub fn open(bytes: &[u8], password: &str) -> Result<Opened, P12Error> {
    if !is_java(bytes) {
        return p12::open(bytes, password);
    }
    let store = load_jks(bytes, password)?;
    let keys: Vec<String> = store
        .aliases()
        .into_iter()
        .filter(|a| store.is_private_key_entry(a))
        .collect();
    let alias = match keys.as_slice() {
        [] => return Err(P12Error::NoPrivateKey),
        [one] => one,
        _ => return Err(P12Error::SeveralKeys),
    };
    // keytool protects the key with the store's password unless told otherwise.
    let entry = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        store.get_private_key_entry(alias, password.as_bytes())
    }))
    .map_err(|_| P12Error::Unreadable)?
    .map_err(|_| P12Error::BadPassword)?;
    let leaf = entry
        .certificate_chain
        .first()
        .ok_or(P12Error::NoPrivateKey)?;
    let info = CertInfo::from_der(&leaf.content).map_err(|_| P12Error::BadCertificate)?;
    p12::presentable(&info)?;
    p12::paired(&entry.private_key, &leaf.content)?;
    Ok(Opened {
        material: Material {
            chain_pem: entry
                .certificate_chain
                .iter()
                .map(|c| p12::pem("CERTIFICATE", &c.content))
                .collect(),
            key_pem: Secret::new(p12::pem("PRIVATE KEY", &entry.private_key)),
        },
        info,
    })
}

fn load_jks(bytes: &[u8], password: &str) -> Result<jks::KeyStore, P12Error> {
    if bytes.starts_with(&JCEKS_MAGIC) {
        return Err(P12Error::Unsupported);
    }
    // why: the decoder trusts the lengths and counts inside the file (it reserves what a
    // count says before reading); a hostile file must be refused before it gets there.
    let entries = check_jks_structure(bytes).ok_or(P12Error::Unreadable)?;
    crate::keystore_budget::jks_entries(entries).map_err(P12Error::TooCostly)?;
    let mut store = jks::KeyStore::new();
    let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        store
            .load(Cursor::new(bytes), password.as_bytes())
            .map(|()| store)
    }))
    .map_err(|_| P12Error::Unreadable)?;
    loaded.map_err(|e| match e {
        jks::KeyStoreError::InvalidDigest => P12Error::BadPassword,
        _ => P12Error::Unreadable,
    })
}

/// Walks a JKS file's layout (magic, version, entries, 20-byte digest) checking that every
/// length and count fits in what is left. `None` when it does not; else how many entries
/// and chain certificates it holds (what the key-store budget bounds).
fn check_jks_structure(b: &[u8]) -> Option<usize> {
    struct R<'a>(&'a [u8]);
    impl R<'_> {
        fn take(&mut self, n: usize) -> Option<&[u8]> {
            if n > self.0.len() {
                return None;
            }
            let (head, rest) = self.0.split_at(n);
            self.0 = rest;
            Some(head)
        }
        fn u16(&mut self) -> Option<usize> {
            self.take(2)
                .map(|s| usize::from(u16::from_be_bytes([s[0], s[1]])))
        }
        fn u32(&mut self) -> Option<usize> {
            self.take(4)
                .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as usize)
        }
        fn cert(&mut self, version: usize) -> Option<()> {
            if version == 2 {
                let n = self.u16()?;
                self.take(n)?;
            }
            let n = self.u32()?;
            self.take(n).map(|_| ())
        }
    }
    let mut r = R(b);
    if r.take(4)? != JKS_MAGIC {
        return None;
    }
    let version = r.u32()?;
    if !(1..=2).contains(&version) {
        return None;
    }
    let count = r.u32()?;
    // Each entry takes at least 4 + 2 + 8 bytes.
    if count > r.0.len() / 14 {
        return None;
    }
    let mut entries = count;
    for _ in 0..count {
        let tag = r.u32()?;
        let alias = r.u16()?;
        r.take(alias)?;
        r.take(8)?; // creation time
        match tag {
            1 => {
                let key = r.u32()?;
                r.take(key)?;
                let certs = r.u32()?;
                if certs > r.0.len() / 4 {
                    return None;
                }
                entries = entries.saturating_add(certs);
                for _ in 0..certs {
                    r.cert(version)?;
                }
            }
            2 => r.cert(version)?,
            _ => return None,
        }
    }
    (r.0.len() == 20).then_some(entries)
}

/// Why a trust certificate was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    #[error("{0}")]
    Invalid(String),
    /// The trust store (a key store) could not be opened, or is over the key-store budget.
    #[error("trust store: {0}")]
    Store(P12Error),
}

impl From<&str> for TrustError {
    fn from(message: &str) -> Self {
        TrustError::Invalid(message.to_owned())
    }
}

impl From<String> for TrustError {
    fn from(message: String) -> Self {
        TrustError::Invalid(message)
    }
}

/// A trust certificate as a PEM bundle: PEM text as is (checked), DER in base64 converted,
/// or a key store (JKS or PKCS#12, base64, opened with `password`) whose certificates are
/// all trusted.
pub fn trust_bundle(text: &str, password: &str) -> Result<String, TrustError> {
    if text.contains("-----BEGIN") {
        return Ok(checked_pem(text)?);
    }
    use base64::Engine;
    let der = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| "the trust certificate must be PEM, or DER / a key store in base64")?;
    if x509_parser::parse_x509_certificate(&der).is_ok() {
        return Ok(p12::pem("CERTIFICATE", &der));
    }
    let certs: Vec<Vec<u8>> = if is_java(&der) {
        let store = load_jks(&der, password).map_err(TrustError::Store)?;
        store
            .aliases()
            .iter()
            .filter_map(|a| store.get_trusted_certificate_entry(a).ok())
            .map(|e| e.certificate.content)
            .collect()
    } else {
        p12::certificates(&der, password).map_err(TrustError::Store)?
    };
    if certs.is_empty() {
        return Err("the trust store holds no trusted certificate".into());
    }
    let mut pem = String::new();
    for c in certs {
        x509_parser::parse_x509_certificate(&c)
            .map_err(|_| "the trust store holds a certificate that is not X.509".to_owned())?;
        pem.push_str(&p12::pem("CERTIFICATE", &c));
    }
    Ok(pem)
}

/// PEM text of trusted certificates, checked: every block parses as X.509, and there is one.
fn checked_pem(text: &str) -> Result<String, String> {
    let mut n = 0;
    for block in x509_parser::pem::Pem::iter_from_buffer(text.as_bytes()) {
        let block = block.map_err(|_| "the trust certificate is not valid PEM".to_owned())?;
        block
            .parse_x509()
            .map_err(|_| "the trust certificate is not X.509".to_owned())?;
        n += 1;
    }
    if n == 0 {
        return Err("the trust certificate holds no certificate".into());
    }
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_jks_layouts_are_refused_before_the_decoder() {
        let mut ok = Vec::new();
        ok.extend_from_slice(&JKS_MAGIC);
        ok.extend_from_slice(&2u32.to_be_bytes());
        ok.extend_from_slice(&0u32.to_be_bytes());
        ok.extend_from_slice(&[0; 20]);
        assert_eq!(check_jks_structure(&ok), Some(0));

        // A count far beyond the bytes present.
        let mut huge = ok.clone();
        huge[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(check_jks_structure(&huge), None);
        assert_eq!(open(&huge, "changeit").err(), Some(P12Error::Unreadable));

        // One private-key entry whose certificate count is absurd.
        let mut entry = ok[..12].to_vec();
        entry[8..12].copy_from_slice(&1u32.to_be_bytes());
        entry.extend_from_slice(&1u32.to_be_bytes()); // tag
        entry.extend_from_slice(&1u16.to_be_bytes());
        entry.push(b'a');
        entry.extend_from_slice(&[0; 8]);
        entry.extend_from_slice(&0u32.to_be_bytes()); // key length
        entry.extend_from_slice(&u32::MAX.to_be_bytes()); // certificates
        entry.extend_from_slice(&[0; 20]);
        assert_eq!(check_jks_structure(&entry), None);

        let jceks = [JCEKS_MAGIC.as_slice(), &[0; 30]].concat();
        assert_eq!(open(&jceks, "x").err(), Some(P12Error::Unsupported));
        // Truncated and wrong digests.
        assert_eq!(check_jks_structure(&ok[..30]), None);
        assert_eq!(open(&ok, "changeit").err(), Some(P12Error::BadPassword));
    }
}
