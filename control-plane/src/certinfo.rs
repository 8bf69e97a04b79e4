//! What a security team needs to know about a certificate, read from its DER.

use serde::Serialize;
use sha2::{Digest, Sha256};
use x509_parser::prelude::*;

/// Read-only facts about a leaf certificate, stored beside it and shown in answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertInfo {
    pub subject: String,
    pub issuer: String,
    /// Hex, upper case, colon-free.
    pub serial_number: String,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// Hex of the SHA-256 of the DER.
    pub sha256_fingerprint: String,
    /// `RSA`, `EC`, `Ed25519`, or the algorithm's OID.
    pub key_algorithm: String,
    /// Bits: the RSA modulus, or the EC curve's size.
    pub key_size: u32,
}

#[derive(Debug, thiserror::Error)]
#[error("not a readable X.509 certificate")]
pub struct CertInfoError;

impl CertInfo {
    pub fn from_der(der: &[u8]) -> Result<Self, CertInfoError> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|_| CertInfoError)?;
        let (key_algorithm, key_size) = key_facts(cert.public_key());
        Ok(CertInfo {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            serial_number: hex::encode_upper(cert.raw_serial()),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            sha256_fingerprint: hex::encode(Sha256::digest(der)),
            key_algorithm,
            key_size,
        })
    }
}

fn key_facts(spki: &SubjectPublicKeyInfo<'_>) -> (String, u32) {
    match spki.parsed() {
        Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => ("RSA".into(), rsa.key_size() as u32),
        Ok(x509_parser::public_key::PublicKey::EC(ec)) => ("EC".into(), ec.key_size() as u32),
        _ => {
            let oid = spki.algorithm.algorithm.to_id_string();
            match oid.as_str() {
                "1.3.101.112" => ("Ed25519".into(), 256),
                "1.3.101.113" => ("Ed448".into(), 456),
                _ => (oid, 0),
            }
        }
    }
}
