//! Files real tools make pass with room to spare; files that ask for too much work, in the
//! open or hidden inside an encrypted safe, or hold too many entries, are refused before any
//! key is derived. Hostile layouts are built here byte by byte (no tool makes them).

use std::time::{Duration, Instant};

use pkcs5::der::Encode;

use super::*;

const PASSWORD: &str = "budget-Pw_3x";

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

fn seq(parts: &[Vec<u8>]) -> Vec<u8> {
    tlv(der::SEQUENCE, &parts.concat())
}

fn oid(dotted: &str) -> Vec<u8> {
    let arcs: Vec<u64> = dotted.split('.').map(|a| a.parse().unwrap()).collect();
    let mut body = vec![(arcs[0] * 40 + arcs[1]) as u8];
    for &arc in &arcs[2..] {
        let mut chunk = vec![(arc & 0x7f) as u8];
        let mut rest = arc >> 7;
        while rest > 0 {
            chunk.push(0x80 | (rest & 0x7f) as u8);
            rest >>= 7;
        }
        chunk.reverse();
        body.extend(chunk);
    }
    tlv(der::OID, &body)
}

const DATA: &str = "1.2.840.113549.1.7.1";
const ENCRYPTED_DATA: &str = "1.2.840.113549.1.7.6";
const SHROUDED_KEY_BAG: &str = "1.2.840.113549.1.12.10.1.2";
const CERT_BAG: &str = "1.2.840.113549.1.12.10.1.3";
const SECRET_BAG: &str = "1.2.840.113549.1.12.10.1.5";

fn pbes2(iterations: u32) -> pkcs5::pbes2::Parameters {
    pkcs5::pbes2::Parameters::generate_pbkdf2_sha256_aes256cbc(iterations, &[7; 16], [9; 16])
        .unwrap()
}

/// An AlgorithmIdentifier: PBES2, PBKDF2-HMAC-SHA256 with `iterations`, AES-256-CBC.
fn pbes2_alg(iterations: u32) -> Vec<u8> {
    seq(&[
        oid("1.2.840.113549.1.5.13"),
        pbes2(iterations).to_der().unwrap(),
    ])
}

/// A shrouded key bag claiming `iterations` (its ciphertext is never decrypted here).
fn shrouded_bag(iterations: u32) -> Vec<u8> {
    let epki = seq(&[pbes2_alg(iterations), tlv(der::OCTET_STRING, &[0; 32])]);
    seq(&[oid(SHROUDED_KEY_BAG), tlv(der::CONTEXT_0, &epki)])
}

fn cert_bag() -> Vec<u8> {
    let cert_bag = seq(&[
        oid("1.2.840.113549.1.9.22.1"),
        tlv(der::CONTEXT_0, &tlv(der::OCTET_STRING, &[0x30, 0x00])),
    ]);
    seq(&[oid(CERT_BAG), tlv(der::CONTEXT_0, &cert_bag)])
}

/// A ContentInfo of type data holding `bags`.
fn plain_safe(bags: &[Vec<u8>]) -> Vec<u8> {
    seq(&[
        oid(DATA),
        tlv(der::CONTEXT_0, &tlv(der::OCTET_STRING, &seq(bags))),
    ])
}

/// A ContentInfo of type encryptedData holding `bags`, encrypted with PASSWORD.
fn encrypted_safe(bags: &[Vec<u8>], iterations: u32) -> Vec<u8> {
    let ciphertext = pbes2(iterations).encrypt(PASSWORD, &seq(bags)).unwrap();
    let eci = seq(&[
        oid(DATA),
        pbes2_alg(iterations),
        tlv(der::CONTEXT_0_PRIMITIVE, &ciphertext),
    ]);
    let encrypted_data = seq(&[tlv(der::INTEGER, &[0]), eci]);
    seq(&[oid(ENCRYPTED_DATA), tlv(der::CONTEXT_0, &encrypted_data)])
}

/// A PFX without a MAC holding `safes`.
fn pfx(safes: &[Vec<u8>]) -> Vec<u8> {
    let auth_safe = plain_content(&seq(safes));
    seq(&[tlv(der::INTEGER, &[3]), auth_safe])
}

fn plain_content(content: &[u8]) -> Vec<u8> {
    seq(&[
        oid(DATA),
        tlv(der::CONTEXT_0, &tlv(der::OCTET_STRING, content)),
    ])
}

#[test]
fn openssl_exports_are_far_within_the_budget() {
    let dir = std::env::temp_dir().join(format!(
        "mtlsgate-budget-{}",
        hex::encode(crate::random::bytes::<6>())
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("`openssl` is required by this test");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-nodes",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-keyout",
        "k.pem",
        "-out",
        "c.pem",
        "-subj",
        "/CN=budget",
        "-days",
        "1",
    ]);
    let pass = format!("pass:{PASSWORD}");
    for (out, extra) in [("default.p12", &[][..]), ("legacy.p12", &["-legacy"][..])] {
        let mut args = vec![
            "pkcs12", "-export", "-inkey", "k.pem", "-in", "c.pem", "-out", out, "-passout", &pass,
        ];
        args.extend_from_slice(extra);
        run(&args);
        let bytes = std::fs::read(dir.join(out)).unwrap();
        // MAC, certificate safe (twice: decrypted here to look inside), key: 2,048 each
        // (the legacy PBEs derive key and IV, twice the work).
        let work = pkcs12(&bytes, PASSWORD).unwrap();
        assert!((4 * 2048..=8 * 2048).contains(&work), "{out}: {work}");
        assert!(crate::p12::open(&bytes, PASSWORD).is_ok(), "{out}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn key_derivations_hidden_in_an_encrypted_safe_are_counted_before_any_runs() {
    // Each hidden key asks for 900,000 iterations (under p12-keystore's own cap of a
    // million); three of them are 2.7 million.
    let hostile = pfx(&[encrypted_safe(
        &[
            shrouded_bag(900_000),
            shrouded_bag(900_000),
            shrouded_bag(900_000),
        ],
        2048,
    )]);
    let started = Instant::now();
    assert!(matches!(
        pkcs12(&hostile, PASSWORD),
        Err(OverBudget::Work { work }) if work > MAX_TOTAL_WORK
    ));
    let refused = crate::p12::open(&hostile, PASSWORD).unwrap_err();
    assert_eq!(refused.code(), OverBudget::CODE);
    // Only the outer safe was decrypted (2,048 iterations), never a hidden key.
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );

    // The same shape with modest costs passes the budget (and fails later, on its fake
    // keys, as p12-keystore decides).
    let modest = pfx(&[encrypted_safe(
        &[shrouded_bag(2048), shrouded_bag(2048)],
        2048,
    )]);
    assert_eq!(pkcs12(&modest, PASSWORD), Ok(4 * 2048));
    // With the wrong password the safe does not decrypt: p12-keystore stops there too.
    assert_eq!(pkcs12(&hostile, "wrong"), Ok(2 * 2048));
}

#[test]
fn key_derivations_in_the_open_are_counted_per_part_and_in_all() {
    let over_part = pfx(&[plain_safe(&[shrouded_bag(1_000_001)])]);
    assert!(matches!(
        pkcs12(&over_part, PASSWORD),
        Err(OverBudget::Work { .. })
    ));
    let over_total = pfx(&[plain_safe(&vec![shrouded_bag(700_000); 3])]);
    assert!(matches!(
        pkcs12(&over_total, PASSWORD),
        Err(OverBudget::Work { work: 2_100_000 })
    ));
    // Secret bags carry key derivations too; one this reader cannot parse is charged the
    // most a part may cost.
    let garbage_secret = seq(&[oid(SECRET_BAG), tlv(der::CONTEXT_0, &[0x05, 0x00])]);
    let secrets = pfx(&[plain_safe(&[
        garbage_secret.clone(),
        garbage_secret.clone(),
        garbage_secret,
    ])]);
    assert!(matches!(
        pkcs12(&secrets, PASSWORD),
        Err(OverBudget::Work { .. })
    ));
}

#[test]
fn too_many_entries_are_refused_in_the_open_and_hidden() {
    let bags = vec![cert_bag(); MAX_ENTRIES];
    assert_eq!(pkcs12(&pfx(&[plain_safe(&bags)]), PASSWORD), Ok(0));
    let one_more = [bags.clone(), vec![cert_bag()]].concat();
    assert_eq!(
        pkcs12(&pfx(&[plain_safe(&one_more)]), PASSWORD),
        Err(OverBudget::Entries {
            entries: MAX_ENTRIES + 1
        })
    );
    let hidden = pfx(&[plain_safe(&bags), encrypted_safe(&[cert_bag()], 1000)]);
    assert_eq!(
        pkcs12(&hidden, PASSWORD),
        Err(OverBudget::Entries {
            entries: MAX_ENTRIES + 1
        })
    );
    assert!(jks_entries(MAX_ENTRIES).is_ok());
    assert_eq!(
        jks_entries(MAX_ENTRIES + 1),
        Err(OverBudget::Entries {
            entries: MAX_ENTRIES + 1
        })
    );
}

#[test]
fn an_encrypted_safe_that_decrypts_to_nonsense_is_refused() {
    let ciphertext = pbes2(1000).encrypt(PASSWORD, b"not DER at all").unwrap();
    let eci = seq(&[
        oid(DATA),
        pbes2_alg(1000),
        tlv(der::CONTEXT_0_PRIMITIVE, &ciphertext),
    ]);
    let safe = seq(&[
        oid(ENCRYPTED_DATA),
        tlv(der::CONTEXT_0, &seq(&[tlv(der::INTEGER, &[0]), eci])),
    ]);
    assert_eq!(pkcs12(&pfx(&[safe]), PASSWORD), Err(OverBudget::Unreadable));
    assert_eq!(
        pkcs12(b"\x30\x03\x02\x01", PASSWORD),
        Err(OverBudget::Unreadable)
    );
}
