//! Decrypting an encrypted safe the way `p12-keystore` does (PBES2 through `pkcs5`; the
//! PKCS#12 PBEs with 3DES and 40-bit RC2), only to count what is inside it.

use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockModeDecrypt, KeyIvInit};
use pkcs5::der::Decode;

use super::der::{self, Reader};

pub(super) enum Outcome {
    /// The decrypted SafeContents.
    Plain(Vec<u8>),
    /// `p12-keystore` refuses this safe too: an algorithm it does not implement, or a
    /// decryption that fails (wrong password, damaged data).
    Refused,
    /// Parameters this reader cannot parse, or a decoder panicked: refuse the file.
    Unreadable,
}

const PBES2: &str = "1.2.840.113549.1.5.13";
const PBE_SHA1_3DES: &str = "1.2.840.113549.1.12.1.3";
const PBE_SHA1_RC2_40: &str = "1.2.840.113549.1.12.1.6";

/// `algorithm`: the contents of the safe's AlgorithmIdentifier SEQUENCE.
pub(super) fn safe(algorithm: &[u8], ciphertext: &[u8], password: &str) -> Outcome {
    // why: the decoders read attacker-supplied DER; a panic refuses the file.
    std::panic::catch_unwind(|| decrypt(algorithm, ciphertext, password))
        .unwrap_or(Outcome::Unreadable)
}

fn decrypt(algorithm: &[u8], ciphertext: &[u8], password: &str) -> Outcome {
    let mut r = Reader::new(algorithm);
    let Ok(oid) = r.take(der::OID).and_then(der::oid) else {
        return Outcome::Unreadable;
    };
    match oid.as_str() {
        PBES2 => {
            let Ok(params) = r.element() else {
                return Outcome::Unreadable;
            };
            let Ok(params) = pkcs5::pbes2::Parameters::from_der(params) else {
                return Outcome::Unreadable;
            };
            match params.decrypt(password.as_bytes(), ciphertext) {
                Ok(plain) => Outcome::Plain(plain),
                Err(_) => Outcome::Refused,
            }
        }
        PBE_SHA1_3DES => pbe::<des::TdesEde3>(r, ciphertext, password, 24),
        PBE_SHA1_RC2_40 => pbe::<rc2::Rc2>(r, ciphertext, password, 5),
        _ => Outcome::Refused,
    }
}

/// PKCS#12 appendix B key and IV derivation (SHA-1), then CBC with PKCS#7 padding.
fn pbe<C>(mut r: Reader<'_>, ciphertext: &[u8], password: &str, key_len: usize) -> Outcome
where
    C: cbc::cipher::KeyInit + cbc::cipher::BlockCipherDecrypt,
{
    use pkcs12::kdf::{derive_key_utf8, Pkcs12KeyType};
    let mut params = || -> Result<(&[u8], i32), der::Error> {
        let mut p = Reader::new(r.take(der::SEQUENCE)?);
        let salt = p.take(der::OCTET_STRING)?;
        let iterations = der::uint(p.take(der::INTEGER)?)?;
        Ok((
            salt,
            i32::try_from(iterations).map_err(|_| der::Error::Malformed)?,
        ))
    };
    let Ok((salt, iterations)) = params() else {
        return Outcome::Unreadable;
    };
    let derive = |kind, len| derive_key_utf8::<sha1::Sha1>(password, salt, kind, iterations, len);
    let (Ok(key), Ok(iv)) = (
        derive(Pkcs12KeyType::EncryptionKey, key_len),
        derive(Pkcs12KeyType::Iv, 8),
    ) else {
        return Outcome::Refused;
    };
    let Ok(cipher) = cbc::Decryptor::<C>::new_from_slices(&key, &iv) else {
        return Outcome::Refused;
    };
    match cipher.decrypt_padded_vec::<Pkcs7>(ciphertext) {
        Ok(plain) => Outcome::Plain(plain),
        Err(_) => Outcome::Refused,
    }
}
