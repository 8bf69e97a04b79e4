//! Revoking gateway certificates: the link CA's certificate revocation list (`crl.pem` in the
//! PKI directory), which control planes follow with `--link-crl-file`.
//!
//! why a CRL and not a list of our own: rustls' client verifier checks CRLs itself
//! (`WebPkiClientVerifier::builder(..).with_crls(..)`), signed by the CA it already trusts, so
//! a file copied to every control plane can be checked for where it came from. The CRL is also
//! the only record of what was revoked: it is read back (its signature checked against
//! `ca.pem`) and written again, with one more entry and a higher CRL number, on each
//! revocation.

use std::path::{Path, PathBuf};

use rcgen::{
    CertificateRevocationListParams, KeyIdMethod, RevocationReason, RevokedCertParams, SerialNumber,
};
use x509_parser::time::ASN1Time;

use super::{gateway_dir, issuer, read, valid_node_id, write, PkiError};

/// How long a CRL says it is good for (`nextUpdate`). Control planes do not enforce it (a
/// CRL that ages must not lock the whole fleet out), so it only tells other readers that this
/// list is not refreshed on a schedule.
const CRL_VALIDITY_SECS: i64 = 365 * 86_400;

/// Where a PKI directory keeps its CRL.
pub fn crl_path(dir: &Path) -> PathBuf {
    dir.join("crl.pem")
}

/// Which certificate to revoke.
#[derive(Debug, Clone)]
pub enum RevokeTarget {
    /// The certificate gateway `node` holds now (`gateways/<node>/gateway.pem`).
    Node(String),
    /// Any certificate of the link CA, by serial number (hex, colons allowed).
    Serial(String),
}

/// What a revocation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// The serial number revoked, in lower-case hex.
    pub serial: String,
    /// False when the CRL already listed it (the CRL is written again anyway).
    pub newly: bool,
    /// Certificates the CRL lists now.
    pub listed: usize,
}

/// One revoked certificate as the CRL lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    /// The serial number, without leading zero bytes.
    serial: Vec<u8>,
    /// When it was revoked, unix seconds.
    revoked_at: i64,
}

/// A serial number without the leading zero bytes DER adds to keep it positive (at least one
/// byte), so the same number always compares equal.
fn normalize_serial(raw: &[u8]) -> Vec<u8> {
    let start = raw
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(raw.len().saturating_sub(1));
    raw.get(start..).unwrap_or_default().to_vec()
}

/// The serial number of a certificate (DER), normalized.
fn serial_of(cert_der: &[u8]) -> Option<Vec<u8>> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    Some(normalize_serial(cert.raw_serial()))
}

fn parse_hex_serial(text: &str) -> Result<Vec<u8>, PkiError> {
    let digits: String = text.chars().filter(|c| *c != ':').collect();
    let bad = || PkiError::Serial(text.to_owned());
    if digits.is_empty() || digits.len() > 42 {
        return Err(bad());
    }
    let padded = if digits.len() % 2 == 1 {
        format!("0{digits}")
    } else {
        digits
    };
    let bytes = hex::decode(padded).map_err(|_| bad())?;
    Ok(normalize_serial(&bytes))
}

/// The first certificate of a PEM file, as DER.
fn first_der(path: &Path) -> Result<Vec<u8>, PkiError> {
    let pem = read(path)?;
    x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map(|(_, p)| p.contents)
        .map_err(|_| PkiError::Unreadable(path.to_owned(), "a PEM certificate"))
}

/// The serial number of the certificate gateway `node` holds now, normalized.
pub fn gateway_serial(dir: &Path, node: &str) -> Result<Vec<u8>, PkiError> {
    if !valid_node_id(node) {
        return Err(PkiError::NodeId(node.to_owned()));
    }
    let path = gateway_dir(dir, node).join("gateway.pem");
    if !path.exists() {
        return Err(PkiError::NoGateway(node.to_owned()));
    }
    serial_of(&first_der(&path)?).ok_or(PkiError::Unreadable(path, "an X.509 certificate"))
}

/// The entries and CRL number of the directory's CRL; none (and number 0) when there is no
/// CRL yet. A CRL that does not parse or is not signed by `ca.pem` is an error: writing over
/// it would silently un-revoke what it lists.
fn read_crl(dir: &Path) -> Result<(Vec<Entry>, u64), PkiError> {
    let path = crl_path(dir);
    if !path.exists() {
        return Ok((Vec::new(), 0));
    }
    let unreadable = |what| PkiError::Unreadable(path.clone(), what);
    let pem = read(&path)?;
    let (_, block) =
        x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|_| unreadable("a PEM CRL"))?;
    let (_, crl) =
        x509_parser::parse_x509_crl(&block.contents).map_err(|_| unreadable("an X.509 CRL"))?;
    let ca_der = first_der(&dir.join("ca.pem"))?;
    let (_, ca) = x509_parser::parse_x509_certificate(&ca_der)
        .map_err(|_| PkiError::Unreadable(dir.join("ca.pem"), "an X.509 certificate"))?;
    crl.verify_signature(ca.public_key())
        .map_err(|_| unreadable("a CRL signed by ca.pem"))?;
    let entries = crl
        .iter_revoked_certificates()
        .map(|r| Entry {
            serial: normalize_serial(r.raw_serial()),
            revoked_at: r.revocation_date.timestamp(),
        })
        .collect();
    let number = crl
        .crl_number()
        .map(|n| n.to_u64_digits())
        .and_then(|d| match d.as_slice() {
            [] => Some(0),
            [n] => Some(*n),
            _ => None,
        })
        .unwrap_or(0);
    Ok((entries, number))
}

/// An rcgen date from unix seconds (through x509-parser's `ASN1Time`, which wraps the same
/// `time` type rcgen takes).
fn at(secs: i64) -> Result<x509_parser::time::ASN1Time, PkiError> {
    ASN1Time::from_timestamp(secs).map_err(|_| PkiError::Clock)
}

/// Writes the directory's CRL, signed by its CA, listing `entries` with CRL number `number`.
fn write_crl(dir: &Path, entries: &[Entry], number: u64) -> Result<(), PkiError> {
    let issuer = issuer(dir)?;
    let now = crate::clock::now();
    let revoked_certs = entries
        .iter()
        .map(|e| {
            Ok(RevokedCertParams {
                serial_number: SerialNumber::from_slice(&e.serial),
                revocation_time: at(e.revoked_at)?.to_datetime(),
                reason_code: Some(RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
        })
        .collect::<Result<Vec<_>, PkiError>>()?;
    let params = CertificateRevocationListParams {
        this_update: at(now)?.to_datetime(),
        next_update: at(now.saturating_add(CRL_VALIDITY_SECS))?.to_datetime(),
        crl_number: SerialNumber::from(number),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let crl = params.signed_by(&issuer)?;
    write(&crl_path(dir), &crl.pem()?, false)
}

/// Writes an empty CRL (a new PKI directory gets one, so `--link-crl-file` can name it from
/// the start).
pub(crate) fn write_empty_crl(dir: &Path) -> Result<(), PkiError> {
    write_crl(dir, &[], next_number(0))
}

/// A CRL number above `previous` that also grows with time, so two directories restored from
/// backups still number their lists in the order they were written.
fn next_number(previous: u64) -> u64 {
    let now = u64::try_from(crate::clock::now()).unwrap_or(0);
    now.max(previous.saturating_add(1))
}

/// Revokes a gateway certificate: adds it to the CRL (kept if already there) and writes the
/// CRL again, signed by the link CA, with a higher CRL number.
pub fn revoke(dir: &Path, target: &RevokeTarget) -> Result<Revocation, PkiError> {
    let serial = match target {
        RevokeTarget::Node(node) => gateway_serial(dir, node)?,
        RevokeTarget::Serial(text) => parse_hex_serial(text)?,
    };
    let (mut entries, number) = read_crl(dir)?;
    let newly = !entries.iter().any(|e| e.serial == serial);
    if newly {
        entries.push(Entry {
            serial: serial.clone(),
            revoked_at: crate::clock::now(),
        });
    }
    write_crl(dir, &entries, next_number(number))?;
    Ok(Revocation {
        serial: hex::encode(&serial),
        newly,
        listed: entries.len(),
    })
}

#[cfg(test)]
mod tests;
