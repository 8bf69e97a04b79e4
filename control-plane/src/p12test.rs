//! The P12 key tester: tells a user, before anything is uploaded or stored, whether a
//! PKCS#12 file will work as a client identity and, if not, exactly what to change.
//!
//! [`analyze`] is pure: it reads the bytes, uses the password once and keeps nothing.
//! Everything it finds is data ([`Report`], [`Finding`]) so the HTTP layer can answer 200
//! or 422 without interpreting anything. [`java_check`] is separate because it runs an
//! external program and is slow; the caller decides whether to spend that time.

use std::io::Write as _;
use std::panic::catch_unwind;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use p12_keystore::Pkcs12Archive;
use serde::Serialize;

use crate::clock::rfc3339;
use crate::key_pairing::{
    ec_private, key_matches_certificate, pkcs8, rsa_private_public, OID_EC, OID_ED25519, OID_RSA,
    OID_RSA_PSS,
};
use crate::keystore_budget::{self, der, layout, OverBudget};
use x509_parser::prelude::{FromDer, X509Certificate};

#[cfg(test)]
mod tests;

/// Stable finding codes: clients branch on these, so they never change meaning.
pub mod codes {
    pub const P12_EMPTY: &str = "p12_empty";
    pub const P12_CORRUPTED: &str = "p12_corrupted";
    pub const P12_UNSUPPORTED: &str = "p12_unsupported";
    pub const P12_BAD_PASSWORD: &str = "p12_bad_password";
    pub const MAC_MISSING: &str = "mac_missing";
    pub const ENCRYPTION_LEGACY: &str = "encryption_legacy";
    pub const KEY_MISSING: &str = "key_missing";
    pub const KEY_WITHOUT_CERTIFICATE: &str = "key_without_certificate";
    pub const SEVERAL_PRIVATE_KEYS: &str = "several_private_keys";
    pub const CERTIFICATE_KEY_MISMATCH: &str = "certificate_key_mismatch";
    pub const KEY_WEAK_RSA: &str = "key_weak_rsa";
    pub const KEY_WEAK_EC: &str = "key_weak_ec";
    pub const LEAF_SIGNATURE_WEAK: &str = "leaf_signature_weak";
    pub const CERTIFICATE_EXPIRED: &str = "certificate_expired";
    pub const CERTIFICATE_NOT_YET_VALID: &str = "certificate_not_yet_valid";
    pub const CLIENT_AUTH_MISSING: &str = "client_auth_missing";
    pub const KEY_USAGE_WITHOUT_DIGITAL_SIGNATURE: &str = "key_usage_without_digital_signature";
    pub const CHAIN_OUT_OF_ORDER: &str = "chain_out_of_order";
    pub const JAVA_UNREADABLE: &str = "java_unreadable";
    /// Over the key-store budget (key-derivation work or entries); also the API's refusal
    /// code on every upload path.
    pub const KEYSTORE_TOO_COSTLY: &str = crate::keystore_budget::OverBudget::CODE;
}

/// How much a finding matters: only `Error` makes a file unusable, so the HTTP layer can
/// map `usable` to 200/422 without knowing individual codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
    Info,
}

/// One thing the user should know, with a message that says how to fix it. Messages are
/// built from fixed text and certificate names only: never the password or key material.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub code: &'static str,
    pub message: String,
    pub severity: Severity,
}

/// The private key's public facts; enough to judge strength without exposing the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyFacts {
    /// `RSA`, `RSASSA-PSS`, `EC`, `Ed25519`, `Ed448`, `DSA`, or the dotted OID.
    pub algorithm: String,
    /// Bits (RSA modulus, EC curve size); `None` when the file does not say.
    pub size: Option<u32>,
    /// EC only: `P-256`, `P-384`, ... or the dotted OID.
    pub curve: Option<String>,
}

/// One certificate as stored in the file, in file order, so order problems are visible.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChainEntry {
    pub subject: String,
    pub issuer: String,
    /// Hex, upper case, as in the rest of the API.
    pub serial_number: String,
    /// RFC 3339, UTC.
    pub not_before: String,
    /// RFC 3339, UTC.
    pub not_after: String,
    /// `sha256WithRSAEncryption`, `ecdsa-with-SHA256`, ... or the dotted OID.
    pub signature_algorithm: String,
    pub is_ca: bool,
    /// The certificate the gateway would present with the key.
    pub is_leaf: bool,
    /// `clientAuth`, `serverAuth`, ... or dotted OIDs; empty when the extension is absent.
    pub extended_key_usage: Vec<String>,
}

/// Everything the tester learned about one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// True exactly when no finding has severity `Error`.
    pub usable: bool,
    /// The password decrypted the file and its MAC (if any) verified.
    pub password_opens_file: bool,
    pub key: Option<KeyFacts>,
    /// `None` when it cannot be decided (no key, no certificate, or not enough data).
    pub certificate_matches_key: Option<bool>,
    pub chain: Vec<ChainEntry>,
    /// Leaf first, then each certificate's issuer.
    pub chain_in_order: bool,
    /// Distinct algorithms protecting the file's contents, in file order. Read from the
    /// structure, so they are reported even when the password is wrong.
    pub encryption: Vec<String>,
    /// `HMAC-SHA256`, `HMAC-SHA1`, ...; `None` when the file has no MAC.
    pub mac_algorithm: Option<String>,
    /// Whether JDK 17 keytool reads the file; `None` until [`Report::record_java_check`].
    pub java_readable: Option<bool>,
    pub findings: Vec<Finding>,
}

impl Report {
    /// Folds a [`java_check`] answer in, because the check is optional and runs apart
    /// from [`analyze`]. Not being Java-readable is a warning: the gateway itself is not Java.
    pub fn record_java_check(&mut self, readable: bool) {
        self.java_readable = Some(readable);
        self.findings.retain(|f| f.code != codes::JAVA_UNREADABLE);
        if !readable {
            self.push(
                codes::JAVA_UNREADABLE,
                Severity::Warning,
                "A stock Java runtime (keytool of JDK 17) cannot read this file with this \
                 password; Java clients will not be able to use it. Re-export it with \
                 `openssl pkcs12 -export` or `keytool -importkeystore -deststoretype PKCS12`."
                    .into(),
            );
        }
        self.finish();
    }

    fn push(&mut self, code: &'static str, severity: Severity, message: String) {
        self.findings.push(Finding {
            code,
            message,
            severity,
        });
    }

    fn finish(&mut self) {
        self.usable = !self.findings.iter().any(|f| f.severity == Severity::Error);
    }
}

/// Analyzes a PKCS#12 file as of `now_unix_seconds` (a parameter so validity can be
/// judged at any instant, and tests need not wait for certificates to expire).
pub fn analyze(bytes: &[u8], password: &str, now_unix_seconds: i64) -> Report {
    let mut report = Report {
        usable: false,
        password_opens_file: false,
        key: None,
        certificate_matches_key: None,
        chain: Vec::new(),
        chain_in_order: false,
        encryption: Vec::new(),
        mac_algorithm: None,
        java_readable: None,
        findings: Vec::new(),
    };
    if let Some(archive) = open(bytes, password, &mut report) {
        report.password_opens_file = true;
        examine(&archive, now_unix_seconds, &mut report);
    }
    report.finish();
    report
}

/// Reads the structure, then decrypts; records what it can and returns the archive when
/// the password opens it.
fn open(bytes: &[u8], password: &str, report: &mut Report) -> Option<Pkcs12Archive> {
    if bytes.is_empty() {
        report.push(
            codes::P12_EMPTY,
            Severity::Error,
            "The file is empty. Choose the .p12/.pfx file itself.".into(),
        );
        return None;
    }
    let layout = match layout::read(bytes) {
        Ok(layout) => layout,
        Err(der::Error::Ber) => {
            report.push(
                codes::P12_UNSUPPORTED,
                Severity::Error,
                "The file uses BER encoding (indefinite lengths or constructed strings), \
                 which the gateway does not read. Re-export it with `openssl pkcs12 -export`."
                    .into(),
            );
            return None;
        }
        Err(der::Error::Malformed) => {
            report.push(
                codes::P12_CORRUPTED,
                Severity::Error,
                "The file is not a PKCS#12 (.p12/.pfx) key store, or it is truncated or \
                 damaged. Upload the original file, not a PEM, DER or base64 copy of it."
                    .into(),
            );
            return None;
        }
    };
    for p in &layout.protections {
        if !report.encryption.contains(&p.name) {
            report.encryption.push(p.name.clone());
        }
    }
    report.mac_algorithm = layout.mac.as_ref().map(|m| m.name.clone());
    if let Some(p) = layout.protections.iter().find(|p| p.legacy) {
        report.push(
            codes::ENCRYPTION_LEGACY,
            Severity::Info,
            format!(
                "The file is encrypted with {}, a legacy algorithm: OpenSSL 3 reads it only \
                 with its legacy provider. The gateway reads it; re-export with \
                 `openssl pkcs12 -export` (AES-256) to keep other tools happy.",
                p.name
            ),
        );
    }
    if layout.mac.is_none() {
        report.push(
            codes::MAC_MISSING,
            Severity::Info,
            "The file has no integrity MAC, so a wrong password and a damaged file cannot be \
             told apart."
                .into(),
        );
    }
    if let Some(what) = layout.unsupported_structure {
        report.push(
            codes::P12_UNSUPPORTED,
            Severity::Error,
            format!(
                "The file uses {what}, which the gateway does not support. Re-export it with \
                 password protection (`openssl pkcs12 -export`)."
            ),
        );
        return None;
    }
    if let Some(mac) = layout.mac.as_ref().filter(|m| !m.supported) {
        report.push(
            codes::P12_UNSUPPORTED,
            Severity::Error,
            format!(
                "The file's integrity MAC uses {}, which the gateway does not support. \
                 Re-export it with `openssl pkcs12 -export` (HMAC-SHA256).",
                mac.name
            ),
        );
        return None;
    }
    // why: the one budget every path that opens a key store spends (keystore_budget),
    // checked before any key is derived.
    match keystore_budget::pkcs12_layout(&layout, password) {
        Ok(_) => {}
        Err(OverBudget::Unreadable) => {
            report.push(
                codes::P12_CORRUPTED,
                Severity::Error,
                "An encrypted part of the file decrypts to something that is not PKCS#12 \
                 content. Export the key store again."
                    .into(),
            );
            return None;
        }
        Err(e) => {
            report.push(
                codes::KEYSTORE_TOO_COSTLY,
                Severity::Error,
                format!("The file is refused: {e}."),
            );
            return None;
        }
    }
    // why: the crate parses attacker-supplied DER; a panic in it must become a finding,
    // never take the process down.
    let parsed = catch_unwind(|| Pkcs12Archive::from_pkcs12(bytes, password));
    let err = match parsed {
        Ok(Ok(archive)) => return Some(archive),
        Ok(Err(e)) => Some(e),
        Err(_) => None,
    };
    use p12_keystore::error::Error as E;
    let unsupported = layout.protections.iter().find(|p| !p.supported);
    match (&err, unsupported) {
        (Some(E::MacError(_)), _) => report.push(
            codes::P12_BAD_PASSWORD,
            Severity::Error,
            "The password does not open this file (its integrity check fails). Check the \
             password; it is case-sensitive."
                .into(),
        ),
        (_, Some(p)) => report.push(
            codes::P12_UNSUPPORTED,
            Severity::Error,
            format!(
                "Part of the file is encrypted with {}, which the gateway does not support. \
                 Re-export it with `openssl pkcs12 -export` (AES-256).",
                p.name
            ),
        ),
        (
            Some(
                E::UnsupportedEncryptionScheme
                | E::UnsupportedMacAlgorithm
                | E::UnsupportedContentType
                | E::UnsupportedCertificateType
                | E::InvalidParameters,
            ),
            None,
        ) => report.push(
            codes::P12_UNSUPPORTED,
            Severity::Error,
            "The file uses an algorithm or a content type the gateway does not support. \
             Re-export it with `openssl pkcs12 -export`."
                .into(),
        ),
        (Some(_), None) if layout.mac.is_none() => report.push(
            codes::P12_BAD_PASSWORD,
            Severity::Error,
            "The password does not open this file, or the file is damaged (it has no \
             integrity MAC, so the two cannot be told apart). Check the password."
                .into(),
        ),
        _ => report.push(
            codes::P12_CORRUPTED,
            Severity::Error,
            "The file's contents are damaged: a part that should decrypt or parse does not. \
             Export the key store again."
                .into(),
        ),
    }
    None
}

/// A certificate from the file, parsed once.
struct Cert<'a> {
    x509: X509Certificate<'a>,
    local_key_id: Option<&'a [u8]>,
}

fn examine(archive: &Pkcs12Archive, now: i64, report: &mut Report) {
    let mut certs = Vec::with_capacity(archive.certs.len());
    for bag in &archive.certs {
        let der = bag.cert.as_der();
        // why: x509-parser reads attacker-supplied DER; see `open`.
        match catch_unwind(|| X509Certificate::from_der(der)) {
            Ok(Ok((_, x509))) => certs.push(Cert {
                x509,
                local_key_id: bag.local_key_id.as_deref(),
            }),
            _ => report.push(
                codes::P12_CORRUPTED,
                Severity::Error,
                "A certificate in the file is not readable X.509. Export the key store again."
                    .into(),
            ),
        }
    }

    let key = archive.keys.first();
    let mut leaf = None;
    match key {
        None => report.push(
            codes::KEY_MISSING,
            Severity::Error,
            "The file holds no private key, only certificates. Export the private key with \
             its certificate (`openssl pkcs12 -export -inkey key.pem -in cert.pem`)."
                .into(),
        ),
        Some(key) => {
            let der = key.key.as_der();
            report.key = Some(key_facts(der));
            if archive.keys.len() > 1 {
                report.push(
                    codes::SEVERAL_PRIVATE_KEYS,
                    Severity::Error,
                    format!(
                        "The file holds {} private keys; the gateway needs exactly one. Export \
                         one key with its certificate chain.",
                        archive.keys.len()
                    ),
                );
            }
            let linked = key.local_key_id.as_ref().and_then(|id| {
                certs
                    .iter()
                    .position(|c| c.local_key_id == Some(id.as_ref()))
            });
            let by_key = || {
                certs
                    .iter()
                    .position(|c| key_matches_certificate(der, &c.x509) == Some(true))
            };
            leaf = linked.or_else(by_key);
            if linked.is_none() {
                let message = if certs.is_empty() {
                    "The file holds a private key but no certificate. Export the key together \
                     with its certificate."
                } else if leaf.is_some() {
                    "The private key's certificate is in the file but not linked to the key \
                     (no matching localKeyId attribute). Re-export with `openssl pkcs12 -export`."
                } else {
                    "No certificate in the file belongs to the private key. Export the key \
                     together with its own certificate."
                };
                report.push(
                    codes::KEY_WITHOUT_CERTIFICATE,
                    Severity::Error,
                    message.into(),
                );
            }
            report.certificate_matches_key = leaf
                .and_then(|i| certs.get(i))
                .and_then(|c| key_matches_certificate(der, &c.x509));
            if report.certificate_matches_key == Some(false) {
                report.push(
                    codes::CERTIFICATE_KEY_MISMATCH,
                    Severity::Error,
                    "The certificate linked to the private key carries a different public key: \
                     they do not belong together. Export the key with the certificate issued \
                     for it."
                        .into(),
                );
            }
        }
    }
    if let Some(k) = report.key.clone() {
        judge_key(&k, report);
    }

    report.chain = certs
        .iter()
        .enumerate()
        .map(|(i, c)| chain_entry(&c.x509, leaf == Some(i)))
        .collect();
    report.chain_in_order = in_order(&certs, leaf);
    if !report.chain_in_order {
        let order = report
            .chain
            .iter()
            .map(|c| c.subject.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        report.push(
            codes::CHAIN_OUT_OF_ORDER,
            Severity::Warning,
            format!(
                "The certificates are not stored leaf first, each followed by its issuer \
                 (stored order: {order}). The gateway reorders them, but other tools may \
                 send them as stored."
            ),
        );
    }

    if let Some(c) = leaf.and_then(|i| certs.get(i)) {
        judge_leaf(&c.x509, report);
    }
    for c in &certs {
        judge_validity(&c.x509, now, report);
    }
}

fn judge_key(k: &KeyFacts, report: &mut Report) {
    match (k.algorithm.as_str(), k.size) {
        ("RSA" | "RSASSA-PSS", Some(bits)) if bits < 2048 => report.push(
            codes::KEY_WEAK_RSA,
            Severity::Error,
            format!(
                "The RSA key has {bits} bits; at least 2048 are required. Generate a new key \
                 (RSA 2048+ or EC P-256) and have a new certificate issued."
            ),
        ),
        ("EC", Some(bits)) if bits < 256 => report.push(
            codes::KEY_WEAK_EC,
            Severity::Error,
            format!(
                "The EC key is on curve {} ({bits} bits); at least P-256 is required. \
                 Generate a new key and have a new certificate issued.",
                k.curve.as_deref().unwrap_or("unknown")
            ),
        ),
        _ => {}
    }
}

fn judge_leaf(leaf: &X509Certificate<'_>, report: &mut Report) {
    let subject = leaf.subject().to_string();
    let (sig_name, weak) = signature_algorithm(leaf.as_raw());
    if weak {
        report.push(
            codes::LEAF_SIGNATURE_WEAK,
            Severity::Error,
            format!(
                "The certificate {subject} is signed with {sig_name}, which servers reject \
                 (MD5 and SHA-1 are broken). Have it reissued with SHA-256."
            ),
        );
    }
    if let Ok(Some(eku)) = leaf.extended_key_usage() {
        if !eku.value.client_auth && !eku.value.any {
            report.push(
                codes::CLIENT_AUTH_MISSING,
                Severity::Error,
                format!(
                    "The certificate {subject} has an extended key usage without clientAuth, \
                     so servers refuse it as a client certificate. Have it reissued with \
                     extendedKeyUsage clientAuth."
                ),
            );
        }
    }
    if let Ok(Some(ku)) = leaf.key_usage() {
        if !ku.value.digital_signature() {
            report.push(
                codes::KEY_USAGE_WITHOUT_DIGITAL_SIGNATURE,
                Severity::Error,
                format!(
                    "The certificate {subject} has a key usage without digitalSignature, so it \
                     cannot sign the TLS handshake. Have it reissued with keyUsage \
                     digitalSignature."
                ),
            );
        }
    }
}

fn judge_validity(cert: &X509Certificate<'_>, now: i64, report: &mut Report) {
    let not_before = cert.validity().not_before.timestamp();
    let not_after = cert.validity().not_after.timestamp();
    if now > not_after {
        report.push(
            codes::CERTIFICATE_EXPIRED,
            Severity::Error,
            format!(
                "The certificate {} expired on {}. Have it renewed.",
                cert.subject(),
                rfc3339(not_after)
            ),
        );
    } else if now < not_before {
        report.push(
            codes::CERTIFICATE_NOT_YET_VALID,
            Severity::Error,
            format!(
                "The certificate {} is not valid before {}. Wait until then, or check the \
                 issuing system's clock.",
                cert.subject(),
                rfc3339(not_before)
            ),
        );
    }
}

fn chain_entry(cert: &X509Certificate<'_>, is_leaf: bool) -> ChainEntry {
    let is_ca = matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
    let mut extended_key_usage = Vec::new();
    if let Ok(Some(eku)) = cert.extended_key_usage() {
        let e = eku.value;
        for (on, name) in [
            (e.server_auth, "serverAuth"),
            (e.client_auth, "clientAuth"),
            (e.code_signing, "codeSigning"),
            (e.email_protection, "emailProtection"),
            (e.time_stamping, "timeStamping"),
            (e.ocsp_signing, "OCSPSigning"),
            (e.any, "anyExtendedKeyUsage"),
        ] {
            if on {
                extended_key_usage.push(name.to_string());
            }
        }
        extended_key_usage.extend(e.other.iter().map(|o| o.to_id_string()));
    }
    ChainEntry {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        serial_number: hex::encode_upper(cert.raw_serial()),
        not_before: rfc3339(cert.validity().not_before.timestamp()),
        not_after: rfc3339(cert.validity().not_after.timestamp()),
        signature_algorithm: signature_algorithm(cert.as_raw()).0,
        is_ca,
        is_leaf,
        extended_key_usage,
    }
}

/// Leaf first (when there is one), then each certificate followed by its issuer.
fn in_order(certs: &[Cert<'_>], leaf: Option<usize>) -> bool {
    if leaf.is_some_and(|i| i != 0) {
        return false;
    }
    certs.windows(2).all(|w| match w {
        [a, b] => {
            let (a_subject, a_issuer) = (a.x509.subject().as_raw(), a.x509.issuer().as_raw());
            a_subject != a_issuer && a_issuer == b.x509.subject().as_raw()
        }
        _ => true,
    })
}

/// The signature algorithm's name and whether it is too weak for a leaf.
fn signature_algorithm(cert_der: &[u8]) -> (String, bool) {
    let read = || -> Result<(String, Option<&[u8]>), der::Error> {
        let mut cert = der::Reader::new(der::Reader::new(cert_der).take(der::SEQUENCE)?);
        cert.take(der::SEQUENCE)?;
        let mut alg = der::Reader::new(cert.take(der::SEQUENCE)?);
        let oid = der::oid(alg.take(der::OID)?)?;
        let params = if alg.is_empty() {
            None
        } else {
            Some(alg.any()?.1)
        };
        Ok((oid, params))
    };
    let Ok((oid, params)) = read() else {
        return ("unknown".into(), false);
    };
    let (name, weak) = match oid.as_str() {
        "1.2.840.113549.1.1.2" => ("md2WithRSAEncryption", true),
        "1.2.840.113549.1.1.3" => ("md4WithRSAEncryption", true),
        "1.2.840.113549.1.1.4" => ("md5WithRSAEncryption", true),
        "1.2.840.113549.1.1.5" => ("sha1WithRSAEncryption", true),
        "1.3.14.3.2.29" => ("sha1WithRSASignature", true),
        "1.2.840.113549.1.1.14" => ("sha224WithRSAEncryption", false),
        "1.2.840.113549.1.1.11" => ("sha256WithRSAEncryption", false),
        "1.2.840.113549.1.1.12" => ("sha384WithRSAEncryption", false),
        "1.2.840.113549.1.1.13" => ("sha512WithRSAEncryption", false),
        "1.2.840.10045.4.1" => ("ecdsa-with-SHA1", true),
        "1.2.840.10045.4.3.1" => ("ecdsa-with-SHA224", false),
        "1.2.840.10045.4.3.2" => ("ecdsa-with-SHA256", false),
        "1.2.840.10045.4.3.3" => ("ecdsa-with-SHA384", false),
        "1.2.840.10045.4.3.4" => ("ecdsa-with-SHA512", false),
        "1.2.840.10040.4.3" => ("dsa-with-SHA1", true),
        "2.16.840.1.101.3.4.3.1" => ("dsa-with-SHA224", false),
        "2.16.840.1.101.3.4.3.2" => ("dsa-with-SHA256", false),
        "1.3.101.112" => ("Ed25519", false),
        "1.3.101.113" => ("Ed448", false),
        "1.2.840.113549.1.1.10" => {
            // RSASSA-PSS: the hash is in the parameters, SHA-1 when absent.
            let hash = pss_hash(params).unwrap_or_else(|| "unknown".into());
            let weak = matches!(hash.as_str(), "SHA-1" | "MD5");
            return (format!("rsassaPss ({hash})"), weak);
        }
        _ => return (oid, false),
    };
    (name.into(), weak)
}

fn pss_hash(params: Option<&[u8]>) -> Option<String> {
    let Some(params) = params else {
        return Some("SHA-1".into());
    };
    let mut r = der::Reader::new(params);
    let Some(hash) = r.optional(der::CONTEXT_0).ok()? else {
        return Some("SHA-1".into());
    };
    let mut alg = der::Reader::new(der::Reader::new(hash).take(der::SEQUENCE).ok()?);
    let oid = der::oid(alg.take(der::OID).ok()?).ok()?;
    Some(
        match oid.as_str() {
            "1.3.14.3.2.26" => "SHA-1",
            "1.2.840.113549.2.5" => "MD5",
            "2.16.840.1.101.3.4.2.4" => "SHA-224",
            "2.16.840.1.101.3.4.2.1" => "SHA-256",
            "2.16.840.1.101.3.4.2.2" => "SHA-384",
            "2.16.840.1.101.3.4.2.3" => "SHA-512",
            _ => return Some(oid),
        }
        .into(),
    )
}

const OID_ED448: &str = "1.3.101.113";
const OID_DSA: &str = "1.2.840.10040.4.1";

fn key_facts(key_der: &[u8]) -> KeyFacts {
    let Some(k) = pkcs8(key_der) else {
        return KeyFacts {
            algorithm: "unknown".into(),
            size: None,
            curve: None,
        };
    };
    match k.algorithm.as_str() {
        OID_RSA | OID_RSA_PSS => KeyFacts {
            algorithm: if k.algorithm == OID_RSA {
                "RSA"
            } else {
                "RSASSA-PSS"
            }
            .into(),
            size: rsa_private_public(k.private_key).map(|(n, _)| der::bits(n)),
            curve: None,
        },
        OID_EC => {
            let named = ec_private(&k).and_then(|e| e.curve).map(|c| curve_name(&c));
            let (curve, size) = match named {
                Some((name, bits)) => (Some(name), bits),
                None => (None, None),
            };
            KeyFacts {
                algorithm: "EC".into(),
                size,
                curve,
            }
        }
        OID_ED25519 => KeyFacts {
            algorithm: "Ed25519".into(),
            size: Some(256),
            curve: None,
        },
        OID_ED448 => KeyFacts {
            algorithm: "Ed448".into(),
            size: Some(456),
            curve: None,
        },
        OID_DSA => KeyFacts {
            algorithm: "DSA".into(),
            size: None,
            curve: None,
        },
        other => KeyFacts {
            algorithm: other.into(),
            size: None,
            curve: None,
        },
    }
}

/// A curve's display name and size in bits.
fn curve_name(oid: &str) -> (String, Option<u32>) {
    let (name, bits) = match oid {
        "1.2.840.10045.3.1.1" => ("P-192", 192),
        "1.3.132.0.33" => ("P-224", 224),
        "1.2.840.10045.3.1.7" => ("P-256", 256),
        "1.3.132.0.34" => ("P-384", 384),
        "1.3.132.0.35" => ("P-521", 521),
        "1.3.132.0.31" => ("secp192k1", 192),
        "1.3.132.0.32" => ("secp224k1", 224),
        "1.3.132.0.10" => ("secp256k1", 256),
        "1.3.36.3.3.2.8.1.1.3" => ("brainpoolP192r1", 192),
        "1.3.36.3.3.2.8.1.1.5" => ("brainpoolP224r1", 224),
        "1.3.36.3.3.2.8.1.1.7" => ("brainpoolP256r1", 256),
        "1.3.36.3.3.2.8.1.1.11" => ("brainpoolP384r1", 384),
        "1.3.36.3.3.2.8.1.1.13" => ("brainpoolP512r1", 512),
        other => return (other.into(), None),
    };
    (name.into(), Some(bits))
}

/// Why keytool could not give an answer (as opposed to answering "no").
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JavaCheckError {
    #[error("could not write the temporary key store file ({0:?})")]
    TempFile(std::io::ErrorKind),
    #[error("could not run keytool ({0:?})")]
    Spawn(std::io::ErrorKind),
    #[error("keytool did not finish within {0:?}")]
    Timeout(Duration),
}

/// How long keytool may take: a JVM starts in about a second, so this only stops a hang.
pub const JAVA_CHECK_TIMEOUT: Duration = Duration::from_secs(20);

/// The environment variable that carries the password to keytool, so it never appears on
/// a command line (visible to every local user through `ps`).
const STOREPASS_ENV: &str = "MTLSGATE_P12TEST_STOREPASS";

/// Asks a real JDK keytool whether it reads the file, because Java's PKCS#12 support
/// differs from ours in ways no table captures. Blocking and slow (a JVM start): call it
/// from a blocking thread. `Ok(false)` means keytool ran and refused the file.
pub fn java_check(bytes: &[u8], password: &str, keytool: &Path) -> Result<bool, JavaCheckError> {
    java_check_within(bytes, password, keytool, JAVA_CHECK_TIMEOUT)
}

fn java_check_within(
    bytes: &[u8],
    password: &str,
    keytool: &Path,
    timeout: Duration,
) -> Result<bool, JavaCheckError> {
    let file = TempFile::create(bytes).map_err(|e| JavaCheckError::TempFile(e.kind()))?;
    let mut child = Command::new(keytool)
        .arg("-list")
        .arg("-storetype")
        .arg("PKCS12")
        .arg("-keystore")
        .arg(&file.0)
        .arg("-storepass:env")
        .arg(STOREPASS_ENV)
        .env(STOREPASS_ENV, password)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| JavaCheckError::Spawn(e.kind()))?;
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status.success()),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(JavaCheckError::Timeout(timeout));
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(JavaCheckError::Spawn(e.kind()));
            }
        }
    }
}

/// A private (0600) temporary file, removed when dropped, so an uploaded key store never
/// outlives the check.
struct TempFile(PathBuf);

impl TempFile {
    fn create(bytes: &[u8]) -> std::io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let name = format!(
            "mtlsgate-p12test-{}-{nanos}-{}.p12",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        let file = TempFile(path);
        f.write_all(bytes)?;
        f.sync_all()?;
        Ok(file)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
