//! The PFX structure, read without the password: what protects it, how much key-derivation
//! work opening it takes, and whether the gateway's PKCS#12 reader supports that.
use super::der::{self, Error, Reader};

pub(crate) struct Layout<'a> {
    pub mac: Option<Mac>,
    /// What protects each encrypted part readable without the password: the encrypted
    /// safes and the shrouded keys and secrets of the plain ones, in file order.
    pub protections: Vec<Protection>,
    /// Set when the file uses a PKCS#12 mode the reader does not implement.
    pub unsupported_structure: Option<&'static str>,
    /// Safe bags of the plain safes.
    pub bags: usize,
    /// The encrypted safes, whose bags (and their own key derivations) are seen only once
    /// decrypted.
    pub encrypted: Vec<EncryptedSafe<'a>>,
}

/// An encrypted safe (PKCS#7 encryptedData), borrowed from the file.
pub(crate) struct EncryptedSafe<'a> {
    /// The contents of its AlgorithmIdentifier SEQUENCE.
    pub algorithm: &'a [u8],
    /// The encrypted SafeContents; `None` when the safe is empty.
    pub ciphertext: Option<&'a [u8]>,
}

pub(crate) struct Mac {
    pub name: String,
    pub iterations: u64,
    pub supported: bool,
}

pub(crate) struct Protection {
    pub name: String,
    /// Key-derivation work, in iterations (scrypt converted to a comparable figure).
    pub iterations: u64,
    pub supported: bool,
    /// OpenSSL 3 needs its legacy provider for it (RC2, RC4, single DES).
    pub legacy: bool,
}

const DATA: &str = "1.2.840.113549.1.7.1";
const SIGNED_DATA: &str = "1.2.840.113549.1.7.2";
const ENVELOPED_DATA: &str = "1.2.840.113549.1.7.3";
const ENCRYPTED_DATA: &str = "1.2.840.113549.1.7.6";
const SHROUDED_KEY_BAG: &str = "1.2.840.113549.1.12.10.1.2";
const SECRET_BAG: &str = "1.2.840.113549.1.12.10.1.5";

use super::MAX_PART_WORK;

pub(crate) fn read(bytes: &[u8]) -> Result<Layout<'_>, Error> {
    let mut top = Reader::new(bytes);
    let mut pfx = Reader::new(top.take(der::SEQUENCE)?);
    if !top.is_empty() {
        return Err(Error::Malformed);
    }
    if pfx.take(der::INTEGER)? != [3] {
        return Err(Error::Malformed);
    }
    let auth_safe = pfx.take(der::SEQUENCE)?;
    let mac = pfx.optional(der::SEQUENCE)?.map(mac).transpose()?;
    if !pfx.is_empty() {
        return Err(Error::Malformed);
    }
    let mut layout = Layout {
        mac,
        protections: Vec::new(),
        unsupported_structure: None,
        bags: 0,
        encrypted: Vec::new(),
    };
    let mut ci = Reader::new(auth_safe);
    match der::oid(ci.take(der::OID)?)?.as_str() {
        DATA => {}
        SIGNED_DATA => {
            layout.unsupported_structure = Some("public-key integrity mode (signedData)");
            return Ok(layout);
        }
        _ => return Err(Error::Malformed),
    }
    let content = Reader::new(ci.take(der::CONTEXT_0)?).take(der::OCTET_STRING)?;
    let mut safes = Reader::new(content);
    let mut safes = Reader::new(safes.take(der::SEQUENCE)?);
    while !safes.is_empty() {
        safe(safes.take(der::SEQUENCE)?, &mut layout)?;
    }
    Ok(layout)
}

fn mac(seq: &[u8]) -> Result<Mac, Error> {
    let mut r = Reader::new(seq);
    let mut digest_info = Reader::new(r.take(der::SEQUENCE)?);
    let mut alg = Reader::new(digest_info.take(der::SEQUENCE)?);
    let oid = der::oid(alg.take(der::OID)?)?;
    digest_info.take(der::OCTET_STRING)?;
    r.take(der::OCTET_STRING)?;
    let iterations = match r.optional(der::INTEGER)? {
        Some(i) => der::uint(i)?,
        None => 1,
    };
    let (name, supported) = match oid.as_str() {
        "1.3.14.3.2.26" => ("HMAC-SHA1", true),
        "2.16.840.1.101.3.4.2.4" => ("HMAC-SHA224", true),
        "2.16.840.1.101.3.4.2.1" => ("HMAC-SHA256", true),
        "2.16.840.1.101.3.4.2.2" => ("HMAC-SHA384", true),
        "2.16.840.1.101.3.4.2.3" => ("HMAC-SHA512", true),
        "2.16.840.1.101.3.4.2.5" => ("HMAC-SHA512/224", true),
        "2.16.840.1.101.3.4.2.6" => ("HMAC-SHA512/256", true),
        "1.2.840.113549.2.5" => ("HMAC-MD5", false),
        "1.2.840.113549.1.5.14" => ("PBMAC1", false),
        _ => {
            return Ok(Mac {
                name: oid,
                iterations,
                supported: false,
            })
        }
    };
    Ok(Mac {
        name: name.into(),
        iterations,
        supported,
    })
}

/// One ContentInfo of the AuthenticatedSafe.
fn safe<'a>(ci: &'a [u8], layout: &mut Layout<'a>) -> Result<(), Error> {
    let mut r = Reader::new(ci);
    match der::oid(r.take(der::OID)?)?.as_str() {
        DATA => {
            let contents = Reader::new(r.take(der::CONTEXT_0)?).take(der::OCTET_STRING)?;
            let found = safe_contents(contents)?;
            layout.bags = layout.bags.saturating_add(found.bags);
            layout.protections.extend(found.protections);
        }
        ENCRYPTED_DATA => {
            let mut ed = Reader::new(Reader::new(r.take(der::CONTEXT_0)?).take(der::SEQUENCE)?);
            ed.take(der::INTEGER)?;
            let mut eci = Reader::new(ed.take(der::SEQUENCE)?);
            eci.take(der::OID)?;
            let algorithm = eci.take(der::SEQUENCE)?;
            // [0] IMPLICIT OCTET STRING; the constructed (BER) form is refused by `any`.
            let ciphertext = eci.optional(der::CONTEXT_0_PRIMITIVE)?;
            if !eci.is_empty() {
                return Err(Error::Malformed);
            }
            layout.protections.push(protection(algorithm)?);
            layout.encrypted.push(EncryptedSafe {
                algorithm,
                ciphertext,
            });
        }
        ENVELOPED_DATA => {
            layout.unsupported_structure = Some("public-key privacy mode (envelopedData)");
        }
        _ => {
            layout.unsupported_structure = Some("an unknown content type");
        }
    }
    Ok(())
}

/// What a SafeContents holds, as far as the budget is concerned.
pub(crate) struct Bags {
    pub bags: usize,
    /// The protections of its shrouded keys and encrypted secrets.
    pub protections: Vec<Protection>,
}

/// Walks a SafeContents (a plain safe's, or an encrypted safe's once decrypted).
pub(crate) fn safe_contents(contents: &[u8]) -> Result<Bags, Error> {
    let mut found = Bags {
        bags: 0,
        protections: Vec::new(),
    };
    let mut bags = Reader::new(Reader::new(contents).take(der::SEQUENCE)?);
    while !bags.is_empty() {
        let mut bag = Reader::new(bags.take(der::SEQUENCE)?);
        let id = der::oid(bag.take(der::OID)?)?;
        let value = bag.take(der::CONTEXT_0)?;
        found.bags = found.bags.saturating_add(1);
        match id.as_str() {
            SHROUDED_KEY_BAG => {
                let mut epki = Reader::new(Reader::new(value).take(der::SEQUENCE)?);
                found
                    .protections
                    .push(protection(epki.take(der::SEQUENCE)?)?);
            }
            SECRET_BAG => found.protections.push(secret(value)),
            _ => {}
        }
    }
    Ok(found)
}

/// A secret bag's protection: `p12-keystore` decrypts a secret bag that carries an
/// EncryptedPrivateKeyInfo. One this reader cannot make sense of is charged the most a part
/// may cost, so a difference between the two readers can only refuse, never undercount.
fn secret(value: &[u8]) -> Protection {
    let charged = || Protection {
        name: "secret bag".into(),
        iterations: MAX_PART_WORK,
        supported: true,
        legacy: false,
    };
    let epki_in = |seq: &[u8]| -> Option<Protection> {
        let mut sb = Reader::new(seq);
        sb.take(der::OID).ok()?;
        let inner = Reader::new(sb.take(der::CONTEXT_0).ok()?)
            .take(der::OCTET_STRING)
            .ok()?;
        let mut epki = Reader::new(Reader::new(inner).take(der::SEQUENCE).ok()?);
        protection(epki.take(der::SEQUENCE).ok()?).ok()
    };
    let Ok(outer) = Reader::new(value).take(der::SEQUENCE) else {
        return charged();
    };
    // The bag value as written (SEQUENCE { OID, [0] OCTET STRING }), or wrapped once more
    // as `p12-keystore` reads it.
    epki_in(outer)
        .or_else(|| {
            Reader::new(outer)
                .take(der::SEQUENCE)
                .ok()
                .and_then(epki_in)
        })
        .unwrap_or_else(charged)
}

/// Names an encryption AlgorithmIdentifier and measures its key-derivation work.
pub(crate) fn protection(alg: &[u8]) -> Result<Protection, Error> {
    let mut r = Reader::new(alg);
    let oid = der::oid(r.take(der::OID)?)?;
    let pkcs12_pbe = |name: &str, supported: bool, legacy: bool| -> Result<Protection, Error> {
        let mut p = Reader::new(r.clone().take(der::SEQUENCE)?);
        p.take(der::OCTET_STRING)?;
        let iterations = der::uint(p.take(der::INTEGER)?)?;
        // The PKCS#12 KDF runs twice: once for the key, once for the IV.
        Ok(Protection {
            name: name.into(),
            iterations: iterations.saturating_mul(2),
            supported,
            legacy,
        })
    };
    match oid.as_str() {
        "1.2.840.113549.1.12.1.1" => pkcs12_pbe("pbeWithSHAAnd128BitRC4", false, true),
        "1.2.840.113549.1.12.1.2" => pkcs12_pbe("pbeWithSHAAnd40BitRC4", false, true),
        "1.2.840.113549.1.12.1.3" => pkcs12_pbe("pbeWithSHAAnd3-KeyTripleDES-CBC", true, false),
        "1.2.840.113549.1.12.1.4" => pkcs12_pbe("pbeWithSHAAnd2-KeyTripleDES-CBC", false, false),
        "1.2.840.113549.1.12.1.5" => pkcs12_pbe("pbeWithSHAAnd128BitRC2-CBC", false, true),
        "1.2.840.113549.1.12.1.6" => pkcs12_pbe("pbeWithSHAAnd40BitRC2-CBC", true, true),
        "1.2.840.113549.1.5.13" => pbes2(r.take(der::SEQUENCE)?),
        other => {
            let name = match other {
                "1.2.840.113549.1.5.1" => "pbeWithMD2AndDES-CBC",
                "1.2.840.113549.1.5.3" => "pbeWithMD5AndDES-CBC",
                "1.2.840.113549.1.5.4" => "pbeWithMD2AndRC2-CBC",
                "1.2.840.113549.1.5.6" => "pbeWithMD5AndRC2-CBC",
                "1.2.840.113549.1.5.10" => "pbeWithSHA1AndDES-CBC",
                "1.2.840.113549.1.5.11" => "pbeWithSHA1AndRC2-CBC",
                other => other,
            };
            Ok(Protection {
                name: name.into(),
                iterations: 0,
                supported: false,
                legacy: name != other,
            })
        }
    }
}

fn pbes2(params: &[u8]) -> Result<Protection, Error> {
    let mut r = Reader::new(params);
    let mut kdf = Reader::new(r.take(der::SEQUENCE)?);
    let mut scheme = Reader::new(r.take(der::SEQUENCE)?);
    let (cipher, cipher_ok, legacy) = match der::oid(scheme.take(der::OID)?)?.as_str() {
        "2.16.840.1.101.3.4.1.2" => ("AES-128-CBC".to_string(), true, false),
        "2.16.840.1.101.3.4.1.22" => ("AES-192-CBC".to_string(), true, false),
        "2.16.840.1.101.3.4.1.42" => ("AES-256-CBC".to_string(), true, false),
        "2.16.840.1.101.3.4.1.6" => ("AES-128-GCM".to_string(), true, false),
        "2.16.840.1.101.3.4.1.46" => ("AES-256-GCM".to_string(), true, false),
        "1.2.840.113549.3.7" => ("DES-EDE3-CBC".to_string(), false, false),
        "1.3.14.3.2.7" => ("DES-CBC".to_string(), false, true),
        "1.2.840.113549.3.2" => ("RC2-CBC".to_string(), false, true),
        other => (other.to_string(), false, false),
    };
    let (kdf_name, kdf_ok, iterations) = match der::oid(kdf.take(der::OID)?)?.as_str() {
        "1.2.840.113549.1.5.12" => {
            let mut p = Reader::new(kdf.take(der::SEQUENCE)?);
            p.any()?; // salt: OCTET STRING, or an AlgorithmIdentifier
            let iterations = der::uint(p.take(der::INTEGER)?)?;
            p.optional(der::INTEGER)?; // keyLength
            let prf = match p.optional(der::SEQUENCE)? {
                Some(prf) => der::oid(Reader::new(prf).take(der::OID)?)?,
                None => "1.2.840.113549.2.7".into(),
            };
            let (prf, ok) = match prf.as_str() {
                "1.2.840.113549.2.7" => ("HMAC-SHA1".to_string(), true),
                "1.2.840.113549.2.8" => ("HMAC-SHA224".to_string(), true),
                "1.2.840.113549.2.9" => ("HMAC-SHA256".to_string(), true),
                "1.2.840.113549.2.10" => ("HMAC-SHA384".to_string(), true),
                "1.2.840.113549.2.11" => ("HMAC-SHA512".to_string(), true),
                _ => (prf, false),
            };
            (format!("PBKDF2-{prf}"), ok, iterations)
        }
        "1.3.6.1.4.1.11591.4.11" => {
            let mut p = Reader::new(kdf.take(der::SEQUENCE)?);
            p.take(der::OCTET_STRING)?;
            let n = der::uint(p.take(der::INTEGER)?)?;
            let block = der::uint(p.take(der::INTEGER)?)?;
            let parallel = der::uint(p.take(der::INTEGER)?)?;
            // ROMix fills and then walks N blocks of 128·r bytes, p times.
            let work = n
                .saturating_mul(block)
                .saturating_mul(parallel)
                .saturating_mul(2);
            ("scrypt".to_string(), true, work)
        }
        other => (other.to_string(), false, 0),
    };
    Ok(Protection {
        name: format!("PBES2/{cipher} ({kdf_name})"),
        iterations,
        supported: cipher_ok && kdf_ok,
        legacy,
    })
}
