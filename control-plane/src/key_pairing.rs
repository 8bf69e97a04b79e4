//! Whether a private key belongs to a certificate: the public key the private key implies,
//! compared with the certificate's.
//!
//! why a module of its own: the P12 tester reports a mismatch, and every opener of uploaded
//! key stores (P12, JKS, credential key stores) refuses one, since Envoy refuses to load a
//! key that does not match its certificate and would reject the secret on every gateway.
//! Hand-written on the crate's small DER reader rather than a full ASN.1/crypto stack: the
//! key is only parsed, never used to sign, and only RSA, EC and Ed25519 need comparing.

use x509_parser::prelude::{FromDer, X509Certificate};

use crate::keystore_budget::der;

/// Whether the PKCS#8 key `key_der` is the private half of the certificate `cert_der`'s
/// public key: `Some(false)` for a proven mismatch, `None` when it cannot be decided (an
/// unreadable certificate or key, or a curve this module cannot compute on).
pub(crate) fn pair_matches(key_der: &[u8], cert_der: &[u8]) -> Option<bool> {
    let (_, cert) = X509Certificate::from_der(cert_der).ok()?;
    key_matches_certificate(key_der, &cert)
}

/// A PKCS#8 PrivateKeyInfo / OneAsymmetricKey, borrowed. Deliberately not `Debug`: it
/// holds key material.
pub(crate) struct Pkcs8<'a> {
    pub(crate) algorithm: String,
    /// The AlgorithmIdentifier's parameters, raw (tag, contents).
    pub(crate) params: Option<(u8, &'a [u8])>,
    pub(crate) private_key: &'a [u8],
    /// The optional `[1] publicKey` BIT STRING's bytes.
    pub(crate) public_key: Option<&'a [u8]>,
}

pub(crate) fn pkcs8(der_bytes: &[u8]) -> Option<Pkcs8<'_>> {
    let mut r = der::Reader::new(der::Reader::new(der_bytes).take(der::SEQUENCE).ok()?);
    r.take(der::INTEGER).ok()?;
    let mut alg = der::Reader::new(r.take(der::SEQUENCE).ok()?);
    let algorithm = der::oid(alg.take(der::OID).ok()?).ok()?;
    let params = if alg.is_empty() {
        None
    } else {
        Some(alg.any().ok()?)
    };
    let private_key = r.take(der::OCTET_STRING).ok()?;
    r.optional(der::CONTEXT_0).ok()?;
    let public_key = r
        .optional(der::CONTEXT_1_PRIMITIVE)
        .ok()?
        .and_then(der::bit_string);
    Some(Pkcs8 {
        algorithm,
        params,
        private_key,
        public_key,
    })
}

pub(crate) const OID_RSA: &str = "1.2.840.113549.1.1.1";
pub(crate) const OID_RSA_PSS: &str = "1.2.840.113549.1.1.10";
pub(crate) const OID_EC: &str = "1.2.840.10045.2.1";
pub(crate) const OID_ED25519: &str = "1.3.101.112";

/// RSAPrivateKey's modulus and public exponent, leading zeros stripped.
pub(crate) fn rsa_private_public(private_key: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut r = der::Reader::new(der::Reader::new(private_key).take(der::SEQUENCE).ok()?);
    r.take(der::INTEGER).ok()?;
    let n = der::unsigned(r.take(der::INTEGER).ok()?)?;
    let e = der::unsigned(r.take(der::INTEGER).ok()?)?;
    Some((n, e))
}

/// The parts of an ECPrivateKey the tester needs. Not `Debug`: holds the scalar.
pub(crate) struct EcPrivate<'a> {
    pub(crate) curve: Option<String>,
    pub(crate) scalar: &'a [u8],
    pub(crate) point: Option<&'a [u8]>,
}

pub(crate) fn ec_private<'a>(k: &Pkcs8<'a>) -> Option<EcPrivate<'a>> {
    let mut r = der::Reader::new(der::Reader::new(k.private_key).take(der::SEQUENCE).ok()?);
    r.take(der::INTEGER).ok()?;
    let scalar = r.take(der::OCTET_STRING).ok()?;
    let inner_curve = r
        .optional(der::CONTEXT_0)
        .ok()?
        .and_then(|p| der::Reader::new(p).take(der::OID).ok())
        .and_then(|o| der::oid(o).ok());
    let point = r
        .optional(der::CONTEXT_1)
        .ok()?
        .and_then(|p| der::Reader::new(p).take(der::BIT_STRING).ok())
        .and_then(der::bit_string)
        .or(k.public_key);
    let outer_curve = match k.params {
        Some((der::OID, o)) => der::oid(o).ok(),
        _ => None,
    };
    Some(EcPrivate {
        curve: outer_curve.or(inner_curve),
        scalar,
        point,
    })
}

/// Compares the public key the private key implies with the certificate's. `None` when
/// the file does not carry enough to decide without guessing.
pub(crate) fn key_matches_certificate(key_der: &[u8], cert: &X509Certificate<'_>) -> Option<bool> {
    let k = pkcs8(key_der)?;
    let Spki {
        algorithm: spki_alg,
        curve: cert_curve,
        key: spki_key,
    } = spki(cert.public_key().raw)?;
    match k.algorithm.as_str() {
        OID_RSA | OID_RSA_PSS => {
            if spki_alg != OID_RSA && spki_alg != OID_RSA_PSS {
                return Some(false);
            }
            let (n, e) = rsa_private_public(k.private_key)?;
            let (cn, ce) = rsa_public(spki_key)?;
            Some(n == cn && e == ce)
        }
        OID_EC => {
            if spki_alg != OID_EC {
                return Some(false);
            }
            let ec = ec_private(&k)?;
            if let (Some(a), Some(b)) = (&ec.curve, &cert_curve) {
                if a != b {
                    return Some(false);
                }
            }
            match ec.point {
                Some(point) => same_ec_point(point, spki_key),
                None => ec_scalar_matches_point(
                    ec.curve.as_deref().or(cert_curve.as_deref())?,
                    ec.scalar,
                    spki_key,
                ),
            }
        }
        OID_ED25519 => {
            if spki_alg != OID_ED25519 {
                return Some(false);
            }
            let seed = der::Reader::new(k.private_key)
                .take(der::OCTET_STRING)
                .ok()?;
            let seed: &[u8; 32] = seed.try_into().ok()?;
            let public = ed25519_dalek::SigningKey::from_bytes(seed).verifying_key();
            Some(public.as_bytes().as_slice() == spki_key)
        }
        other => {
            if other != spki_alg {
                return Some(false);
            }
            k.public_key.map(|p| p == spki_key)
        }
    }
}

/// A certificate's SubjectPublicKeyInfo, as far as matching needs it.
struct Spki<'a> {
    algorithm: String,
    /// The parameters when they are an OID (EC's named curve).
    curve: Option<String>,
    key: &'a [u8],
}

fn spki(raw: &[u8]) -> Option<Spki<'_>> {
    let mut r = der::Reader::new(der::Reader::new(raw).take(der::SEQUENCE).ok()?);
    let mut alg = der::Reader::new(r.take(der::SEQUENCE).ok()?);
    let algorithm = der::oid(alg.take(der::OID).ok()?).ok()?;
    let curve = alg.optional(der::OID).ok()?.and_then(|o| der::oid(o).ok());
    let key = der::bit_string(r.take(der::BIT_STRING).ok()?)?;
    Some(Spki {
        algorithm,
        curve,
        key,
    })
}

fn rsa_public(key: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut r = der::Reader::new(der::Reader::new(key).take(der::SEQUENCE).ok()?);
    let n = der::unsigned(r.take(der::INTEGER).ok()?)?;
    let e = der::unsigned(r.take(der::INTEGER).ok()?)?;
    Some((n, e))
}

/// Compares two EC points, either of which may be compressed.
fn same_ec_point(a: &[u8], b: &[u8]) -> Option<bool> {
    if a == b {
        return Some(true);
    }
    let compressed_vs_full = |c: &[u8], u: &[u8]| -> Option<bool> {
        let (&prefix, x) = c.split_first()?;
        let (&4, xy) = u.split_first()? else {
            return None;
        };
        if xy.len() != 2 * x.len() || !(prefix == 2 || prefix == 3) {
            return None;
        }
        let (ux, uy) = xy.split_at_checked(x.len())?;
        let odd = uy.last()? & 1 == 1;
        Some(ux == x && odd == (prefix == 3))
    };
    match (a.first(), b.first()) {
        (Some(4), Some(4)) => Some(false),
        (Some(2 | 3), Some(2 | 3)) => Some(false),
        (Some(2 | 3), Some(4)) => compressed_vs_full(a, b),
        (Some(4), Some(2 | 3)) => compressed_vs_full(b, a),
        _ => None,
    }
}

/// Derives the public point from the private scalar (ring checks the pair's consistency),
/// for keys that omit the point, as Java's do. Only the curves ring implements.
fn ec_scalar_matches_point(curve: &str, scalar: &[u8], point: &[u8]) -> Option<bool> {
    use ring::signature::{
        EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING,
    };
    let (alg, len) = match curve {
        "1.2.840.10045.3.1.7" => (&ECDSA_P256_SHA256_ASN1_SIGNING, 32),
        "1.3.132.0.34" => (&ECDSA_P384_SHA384_ASN1_SIGNING, 48),
        _ => return None,
    };
    if point.first() != Some(&4) || point.len() != 1 + 2 * len {
        return None;
    }
    let scalar = der::strip_zeros(scalar);
    let mut padded = vec![0u8; len.checked_sub(scalar.len())?];
    padded.extend_from_slice(scalar);
    let rng = ring::rand::SystemRandom::new();
    let answer = match EcdsaKeyPair::from_private_key_and_public_key(alg, &padded, point, &rng) {
        Ok(_) => Some(true),
        Err(e) if e.to_string() == "InconsistentComponents" => Some(false),
        Err(_) => None,
    };
    padded.fill(0);
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec_points_compare_across_encodings() {
        let x = [7u8; 32];
        let y_even = [2u8; 32];
        let full: Vec<u8> = [&[4u8][..], &x, &y_even].concat();
        let compressed_even: Vec<u8> = [&[2u8][..], &x].concat();
        let compressed_odd: Vec<u8> = [&[3u8][..], &x].concat();
        assert_eq!(same_ec_point(&full, &full), Some(true));
        assert_eq!(same_ec_point(&compressed_even, &full), Some(true));
        assert_eq!(same_ec_point(&full, &compressed_odd), Some(false));
        assert_eq!(same_ec_point(&[], &full), None);
    }

    /// Pairs made by rcgen: a key matches its own certificate, never another's, across
    /// algorithms (RSA keys come from the P12 fixtures of the tester's tests).
    #[test]
    fn a_key_matches_its_certificate_and_no_other() {
        for alg in [
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
            &rcgen::PKCS_ED25519,
        ] {
            let a = rcgen::KeyPair::generate_for(alg).unwrap();
            let b = rcgen::KeyPair::generate_for(alg).unwrap();
            let cert = rcgen::CertificateParams::new(vec!["a.example".into()])
                .unwrap()
                .self_signed(&a)
                .unwrap();
            assert_eq!(pair_matches(&a.serialize_der(), cert.der()), Some(true));
            assert_eq!(pair_matches(&b.serialize_der(), cert.der()), Some(false));
        }
        let p256 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a.example".into()])
            .unwrap()
            .self_signed(&ed)
            .unwrap();
        assert_eq!(pair_matches(&p256.serialize_der(), cert.der()), Some(false));
        assert_eq!(pair_matches(b"not a key", cert.der()), None);
        assert_eq!(
            pair_matches(&ed.serialize_der(), b"not a certificate"),
            None
        );
    }
}
