//! Every fixture is made here, at test time, with the real tools (OpenSSL 3, JDK 17
//! keytool) or the `p12-keystore` writer for files those tools refuse to make. A missing
//! tool fails the test: a skipped test would hide that nothing was checked.

use super::*;

use std::path::{Path, PathBuf};
use std::time::Instant;

use p12_keystore::{
    Certificate, EncryptionAlgorithm, KeyStore, KeyStoreEntry, MacAlgorithm, PrivateKey,
    PrivateKeyChain,
};

/// Distinctive, so a leak into any output is unmistakable.
const PASSWORD: &str = "Pw-7q!Xz_tester";
const WRONG: &str = "Wr0ng-Pw_9k2";

const AES: &str = "PBES2/AES-256-CBC (PBKDF2-HMAC-SHA256)";
const RC2_40: &str = "pbeWithSHAAnd40BitRC2-CBC";
const TRIPLE_DES: &str = "pbeWithSHAAnd3-KeyTripleDES-CBC";

// ---------------------------------------------------------------------------------------
// Fixture helpers
// ---------------------------------------------------------------------------------------

/// A scratch directory, removed when dropped.
struct Dir(PathBuf);

impl Dir {
    fn new(label: &str) -> Dir {
        static N: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "mtlsgate-p12test-fixture-{label}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create the fixture directory");
        Dir(path)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap_or_else(|e| panic!("read {name}: {e}"))
    }

    fn write(&self, name: &str, contents: impl AsRef<[u8]>) {
        std::fs::write(self.path(name), contents).unwrap_or_else(|e| panic!("write {name}: {e}"));
    }

    /// Concatenates PEM files, in the given order.
    fn cat(&self, out: &str, names: &[&str]) {
        let all: Vec<u8> = names.iter().flat_map(|n| self.read(n)).collect();
        self.write(out, all);
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs a required tool; missing or failing tools fail the test with the reason.
fn run(dir: &Dir, program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .current_dir(&dir.0)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "`{program}` is required by the P12 tester's tests and could not be run ({e}); \
                 install OpenSSL 3 and a JDK 17 (keytool) and put them on PATH"
            )
        });
    assert!(
        out.status.success(),
        "`{program} {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn openssl(dir: &Dir, args: &[&str]) {
    run(dir, "openssl", args);
}

fn keytool(dir: &Dir, args: &[&str]) {
    run(dir, "keytool", args);
}

/// keytool's absolute path, for `java_check`.
fn keytool_path() -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("keytool"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("keytool (JDK 17) is required by the P12 tester's tests and is not on PATH")
        })
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

const DAY: i64 = 86_400;

/// A self-signed certificate and its key: `{name}.key`, `{name}.pem`.
fn self_signed(dir: &Dir, name: &str, newkey: &[&str], extra: &[&str]) {
    let (key, pem, subj) = (
        format!("{name}.key"),
        format!("{name}.pem"),
        format!("/CN={name}"),
    );
    let mut args = vec!["req", "-x509", "-nodes", "-newkey"];
    args.extend_from_slice(newkey);
    args.extend_from_slice(&["-keyout", &key, "-out", &pem, "-subj", &subj, "-days", "30"]);
    args.extend_from_slice(extra);
    openssl(dir, &args);
}

const CA_EXT: &str = "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n";
const CLIENT_EXT: &str = "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
                          extendedKeyUsage=clientAuth\n";

/// A certificate for a new RSA key, issued by `issuer` (`{issuer}.pem`/`.key`).
fn issued(dir: &Dir, name: &str, issuer: &str, digest: &str, ext: &str, serial: &str) {
    let (key, csr, pem) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
    );
    let (ca, ca_key, ext_file) = (
        format!("{issuer}.pem"),
        format!("{issuer}.key"),
        format!("{name}.ext"),
    );
    let subj = format!("/CN={name}");
    dir.write(&ext_file, ext);
    openssl(
        dir,
        &[
            "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj",
            &subj,
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-set_serial",
            serial,
            "-days",
            "30",
            digest,
            "-extfile",
            &ext_file,
            "-out",
            &pem,
        ],
    );
}

/// root -> int -> leaf, all RSA 2048, SHA-256.
fn ca_chain(dir: &Dir) {
    self_signed(
        dir,
        "root",
        &["rsa:2048"],
        &[
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    issued(dir, "int", "root", "-sha256", CA_EXT, "2");
    issued(dir, "leaf", "int", "-sha256", CLIENT_EXT, "3");
}

/// `openssl pkcs12 -export` of `{name}.key` + `{name}.pem` (+ `certfile`) with PASSWORD.
fn export(dir: &Dir, name: &str, certfile: Option<&str>, extra: &[&str]) -> Vec<u8> {
    let (key, pem, out) = (
        format!("{name}.key"),
        format!("{name}.pem"),
        format!("{name}.p12"),
    );
    let pass = format!("pass:{PASSWORD}");
    let mut args = vec![
        "pkcs12", "-export", "-inkey", &key, "-in", &pem, "-out", &out, "-passout", &pass,
    ];
    if let Some(f) = certfile {
        args.extend_from_slice(&["-certfile", f]);
    }
    args.extend_from_slice(extra);
    openssl(dir, &args);
    dir.read(&out)
}

/// A PEM file's DER: certificates via `x509`, keys as unencrypted PKCS#8.
fn cert_der(dir: &Dir, pem: &str) -> Vec<u8> {
    let out = format!("{pem}.der");
    openssl(dir, &["x509", "-in", pem, "-outform", "DER", "-out", &out]);
    dir.read(&out)
}

fn key_der(dir: &Dir, pem: &str) -> Vec<u8> {
    let out = format!("{pem}.p8.der");
    openssl(
        dir,
        &[
            "pkcs8", "-topk8", "-nocrypt", "-in", pem, "-outform", "DER", "-out", &out,
        ],
    );
    dir.read(&out)
}

fn chain_of(id: &str, key: &[u8], certs: &[&[u8]]) -> PrivateKeyChain {
    PrivateKeyChain::new(
        id,
        PrivateKey::from_der(key).expect("PKCS#8 key"),
        certs
            .iter()
            .map(|c| Certificate::from_der(c).expect("X.509 certificate")),
    )
}

fn write_store(entries: Vec<(&str, KeyStoreEntry)>) -> Vec<u8> {
    let mut store = KeyStore::new();
    for (alias, entry) in entries {
        store.add_entry(alias, entry);
    }
    store
        .writer(PASSWORD)
        .write()
        .expect("p12-keystore writes the file")
}

/// `analyze` plus the invariants every report must hold.
fn check(bytes: &[u8], password: &str, now: i64) -> Report {
    let report = analyze(bytes, password, now);
    let json = serde_json::to_string(&report).expect("report serializes");
    let debug = format!("{report:?}");
    for secret in [PASSWORD, WRONG, password] {
        if secret.is_empty() {
            continue;
        }
        assert!(
            !json.contains(secret),
            "a password leaked into the JSON: {json}"
        );
        assert!(
            !debug.contains(secret),
            "a password leaked into Debug: {debug}"
        );
    }
    assert_eq!(
        report.usable,
        !report
            .findings
            .iter()
            .any(|f| f.severity == Severity::Error),
        "usable must mean no error findings: {report:#?}"
    );
    if report.usable {
        // What the tester calls usable, the upload path must accept.
        assert!(
            crate::p12::open(bytes, password).is_ok(),
            "usable per the tester but refused by p12::open: {report:#?}"
        );
    }
    for f in &report.findings {
        assert!(
            !f.message.is_empty(),
            "every finding explains itself: {f:?}"
        );
    }
    report
}

fn codes_of(r: &Report) -> Vec<&'static str> {
    r.findings.iter().map(|f| f.code).collect()
}

fn severity_of(r: &Report, code: &str) -> Severity {
    r.findings
        .iter()
        .find(|f| f.code == code)
        .map(|f| f.severity)
        .unwrap_or_else(|| panic!("expected finding {code}; got {:?}", codes_of(r)))
}

fn assert_codes(r: &Report, expected: &[&str]) {
    let mut got = codes_of(r);
    got.sort_unstable();
    let mut want = expected.to_vec();
    want.sort_unstable();
    assert_eq!(got, want, "findings: {:#?}", r.findings);
}

/// A good, plain RSA 2048 file made by `openssl pkcs12 -export` (defaults).
fn openssl_default(dir: &Dir) -> Vec<u8> {
    self_signed(dir, "client", &["rsa:2048"], &[]);
    export(dir, "client", None, &[])
}

fn rfc3339_shaped(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 20 && b.get(4) == Some(&b'-') && b.get(10) == Some(&b'T') && b.get(19) == Some(&b'Z')
}

// ---------------------------------------------------------------------------------------
// Files that open
// ---------------------------------------------------------------------------------------

#[test]
fn openssl_default_export_is_aes_256_with_hmac_sha256_and_usable() {
    let dir = Dir::new("default");
    let bytes = openssl_default(&dir);
    let r = check(&bytes, PASSWORD, now());

    assert!(r.usable);
    assert!(r.password_opens_file);
    assert_codes(&r, &[]);
    assert_eq!(
        r.key,
        Some(KeyFacts {
            algorithm: "RSA".into(),
            size: Some(2048),
            curve: None
        })
    );
    assert_eq!(r.certificate_matches_key, Some(true));
    assert_eq!(r.encryption, vec![AES.to_string()]);
    assert_eq!(r.mac_algorithm.as_deref(), Some("HMAC-SHA256"));
    assert_eq!(r.java_readable, None);
    assert!(r.chain_in_order);
    assert_eq!(r.chain.len(), 1);
    let leaf = &r.chain[0];
    assert!(leaf.is_leaf);
    assert_eq!(leaf.subject, "CN=client");
    assert_eq!(leaf.issuer, "CN=client");
    assert_eq!(leaf.signature_algorithm, "sha256WithRSAEncryption");
    assert!(leaf.extended_key_usage.is_empty());
    assert!(rfc3339_shaped(&leaf.not_before), "{}", leaf.not_before);
    assert!(rfc3339_shaped(&leaf.not_after), "{}", leaf.not_after);
    assert!(!leaf.serial_number.is_empty());

    let json: serde_json::Value = serde_json::to_value(&r).expect("json");
    for field in [
        "usable",
        "passwordOpensFile",
        "key",
        "certificateMatchesKey",
        "chain",
        "chainInOrder",
        "encryption",
        "macAlgorithm",
        "javaReadable",
        "findings",
    ] {
        assert!(json.get(field).is_some(), "missing {field} in {json}");
    }
    assert!(json["chain"][0].get("signatureAlgorithm").is_some());
    assert!(json["chain"][0].get("extendedKeyUsage").is_some());
}

#[test]
fn openssl_legacy_export_is_rc2_and_3des_with_hmac_sha1() {
    let dir = Dir::new("legacy");
    self_signed(&dir, "client", &["rsa:2048"], &[]);
    let bytes = export(&dir, "client", None, &["-legacy"]);
    let r = check(&bytes, PASSWORD, now());

    assert!(r.usable, "{r:#?}");
    assert!(r.password_opens_file);
    // Certificates under RC2-40, the key under 3DES, in file order.
    assert_eq!(
        r.encryption,
        vec![RC2_40.to_string(), TRIPLE_DES.to_string()]
    );
    assert_eq!(r.mac_algorithm.as_deref(), Some("HMAC-SHA1"));
    assert_eq!(r.certificate_matches_key, Some(true));
    assert_codes(&r, &[codes::ENCRYPTION_LEGACY]);
    assert_eq!(severity_of(&r, codes::ENCRYPTION_LEGACY), Severity::Info);
}

#[test]
fn windows_style_3des_exports_open() {
    let dir = Dir::new("windows");
    self_signed(&dir, "client", &["rsa:2048"], &[]);

    // What Windows' certificate export writes: 3DES for keys and certificates, HMAC-SHA1.
    let bytes = export(
        &dir,
        "client",
        None,
        &["-descert", "-keypbe", "PBE-SHA1-3DES", "-macalg", "sha1"],
    );
    let r = check(&bytes, PASSWORD, now());
    assert!(r.usable, "{r:#?}");
    assert_eq!(r.encryption, vec![TRIPLE_DES.to_string()]);
    assert_eq!(r.mac_algorithm.as_deref(), Some("HMAC-SHA1"));
    assert_codes(&r, &[]);

    // `-descert` alone in OpenSSL 3: certificates under 3DES, the key still under AES.
    let bytes = export(&dir, "client", None, &["-descert"]);
    let r = check(&bytes, PASSWORD, now());
    assert!(r.usable, "{r:#?}");
    assert_eq!(r.encryption, vec![TRIPLE_DES.to_string(), AES.to_string()]);
    assert_eq!(r.mac_algorithm.as_deref(), Some("HMAC-SHA256"));
}

#[test]
fn p12_keystore_writer_rc2_with_hmac_sha1_opens() {
    let dir = Dir::new("writer-rc2");
    self_signed(&dir, "client", &["rsa:2048"], &[]);
    let (key, cert) = (key_der(&dir, "client.key"), cert_der(&dir, "client.pem"));
    let mut store = KeyStore::new();
    store.add_entry(
        "client",
        KeyStoreEntry::PrivateKeyChain(chain_of("id1", &key, &[&cert])),
    );
    let bytes = store
        .writer(PASSWORD)
        .encryption_algorithm(EncryptionAlgorithm::PbeWithShaAnd40BitRc4Cbc)
        .mac_algorithm(MacAlgorithm::HmacSha1)
        .write()
        .expect("write");
    let r = check(&bytes, PASSWORD, now());
    assert!(r.usable, "{r:#?}");
    assert_eq!(r.encryption, vec![RC2_40.to_string()]);
    assert_eq!(r.mac_algorithm.as_deref(), Some("HMAC-SHA1"));
    assert_eq!(r.certificate_matches_key, Some(true));
}

#[test]
fn keytool_rsa_2048_store_opens_and_java_reads_it() {
    let dir = Dir::new("keytool-rsa");
    keytool(
        &dir,
        &[
            "-genkeypair",
            "-alias",
            "client",
            "-keyalg",
            "RSA",
            "-keysize",
            "2048",
            "-storetype",
            "PKCS12",
            "-keystore",
            "kt.p12",
            "-storepass",
            PASSWORD,
            "-dname",
            "CN=keytool-rsa",
            "-validity",
            "30",
        ],
    );
    let bytes = dir.read("kt.p12");
    let mut r = check(&bytes, PASSWORD, now());

    assert!(r.usable, "{r:#?}");
    assert_eq!(
        r.key,
        Some(KeyFacts {
            algorithm: "RSA".into(),
            size: Some(2048),
            curve: None
        })
    );
    assert_eq!(r.certificate_matches_key, Some(true));
    assert_eq!(r.encryption, vec![AES.to_string()]);
    assert_eq!(r.mac_algorithm.as_deref(), Some("HMAC-SHA256"));
    assert_eq!(r.chain.len(), 1);
    assert_eq!(r.chain[0].subject, "CN=keytool-rsa");
    assert_eq!(r.chain[0].signature_algorithm, "sha256WithRSAEncryption");
    assert_codes(&r, &[]);

    let keytool = keytool_path();
    assert_eq!(java_check(&bytes, PASSWORD, &keytool), Ok(true));
    assert_eq!(java_check(&bytes, WRONG, &keytool), Ok(false));

    r.record_java_check(true);
    assert_eq!(r.java_readable, Some(true));
    assert!(r.usable);
    assert_codes(&r, &[]);
}

#[test]
fn keytool_ec_p256_store_opens_and_its_pointless_key_still_matches() {
    let dir = Dir::new("keytool-ec");
    keytool(
        &dir,
        &[
            "-genkeypair",
            "-alias",
            "client",
            "-keyalg",
            "EC",
            "-groupname",
            "secp256r1",
            "-storetype",
            "PKCS12",
            "-keystore",
            "kt.p12",
            "-storepass",
            PASSWORD,
            "-dname",
            "CN=keytool-ec",
            "-validity",
            "30",
        ],
    );
    let bytes = dir.read("kt.p12");
    let r = check(&bytes, PASSWORD, now());

    assert!(r.usable, "{r:#?}");
    assert_eq!(
        r.key,
        Some(KeyFacts {
            algorithm: "EC".into(),
            size: Some(256),
            curve: Some("P-256".into())
        })
    );
    // Java omits the public point from the key; the tester derives it.
    assert_eq!(r.certificate_matches_key, Some(true));
    assert_eq!(r.chain[0].signature_algorithm, "ecdsa-with-SHA256");
    assert_eq!(r.encryption, vec![AES.to_string()]);
    assert_eq!(r.mac_algorithm.as_deref(), Some("HMAC-SHA256"));
    assert_codes(&r, &[]);
}

#[test]
fn ed25519_key_matches_its_certificate() {
    let dir = Dir::new("ed25519");
    self_signed(&dir, "client", &["ed25519"], &[]);
    let bytes = export(&dir, "client", None, &[]);
    let r = check(&bytes, PASSWORD, now());
    assert_eq!(
        r.key,
        Some(KeyFacts {
            algorithm: "Ed25519".into(),
            size: Some(256),
            curve: None
        })
    );
    assert_eq!(r.certificate_matches_key, Some(true));
    assert_eq!(r.chain[0].signature_algorithm, "Ed25519");
    assert!(r.usable, "{r:#?}");
}

// ---------------------------------------------------------------------------------------
// Chains
// ---------------------------------------------------------------------------------------

#[test]
fn chain_with_intermediate_in_order() {
    let dir = Dir::new("chain-ordered");
    ca_chain(&dir);
    dir.cat("cas.pem", &["int.pem", "root.pem"]);
    let bytes = export(&dir, "leaf", Some("cas.pem"), &[]);
    let r = check(&bytes, PASSWORD, now());

    assert!(r.usable, "{r:#?}");
    assert_codes(&r, &[]);
    assert!(r.chain_in_order);
    let subjects: Vec<_> = r.chain.iter().map(|c| c.subject.as_str()).collect();
    assert_eq!(subjects, ["CN=leaf", "CN=int", "CN=root"]);
    let issuers: Vec<_> = r.chain.iter().map(|c| c.issuer.as_str()).collect();
    assert_eq!(issuers, ["CN=int", "CN=root", "CN=root"]);
    let roles: Vec<_> = r.chain.iter().map(|c| (c.is_leaf, c.is_ca)).collect();
    assert_eq!(roles, [(true, false), (false, true), (false, true)]);
    assert_eq!(r.chain[0].extended_key_usage, ["clientAuth"]);
    assert_eq!(r.chain[0].serial_number, "03");
    assert_eq!(r.certificate_matches_key, Some(true));
}

#[test]
fn chain_with_intermediate_out_of_order_is_a_warning() {
    let dir = Dir::new("chain-unordered");
    ca_chain(&dir);
    dir.cat("cas.pem", &["root.pem", "int.pem"]);
    let bytes = export(&dir, "leaf", Some("cas.pem"), &[]);
    let r = check(&bytes, PASSWORD, now());

    assert!(!r.chain_in_order);
    let subjects: Vec<_> = r.chain.iter().map(|c| c.subject.as_str()).collect();
    assert_eq!(subjects, ["CN=leaf", "CN=root", "CN=int"]);
    assert_codes(&r, &[codes::CHAIN_OUT_OF_ORDER]);
    assert_eq!(
        severity_of(&r, codes::CHAIN_OUT_OF_ORDER),
        Severity::Warning
    );
    assert!(r.usable, "a warning alone keeps the file usable: {r:#?}");
}

// ---------------------------------------------------------------------------------------
// Weak keys and signatures, validity, key usage
// ---------------------------------------------------------------------------------------

#[test]
fn rsa_1024_is_a_weak_key() {
    let dir = Dir::new("rsa1024");
    self_signed(&dir, "client", &["rsa:1024"], &[]);
    let bytes = export(&dir, "client", None, &[]);
    let r = check(&bytes, PASSWORD, now());
    assert_eq!(r.key.as_ref().and_then(|k| k.size), Some(1024));
    assert_codes(&r, &[codes::KEY_WEAK_RSA]);
    assert_eq!(severity_of(&r, codes::KEY_WEAK_RSA), Severity::Error);
    assert!(!r.usable);
    assert!(r.password_opens_file);
}

/// Finding 11: what the tester calls weak, the upload path refuses too (before, an RSA-1024
/// certificate was stored and mapped, and every gateway NACKed its secret).
#[test]
fn weak_keys_are_refused_by_the_upload_path_too() {
    let dir = Dir::new("weak-upload");
    self_signed(&dir, "rsa", &["rsa:1024"], &[]);
    let bytes = export(&dir, "rsa", None, &[]);
    let e = crate::p12::open(&bytes, PASSWORD).unwrap_err();
    assert_eq!(
        (e, e.code()),
        (crate::p12::P12Error::WeakKey, "p12_weak_key")
    );
    self_signed(&dir, "ok", &["rsa:2048"], &[]);
    let bytes = export(&dir, "ok", None, &[]);
    assert!(crate::p12::open(&bytes, PASSWORD).is_ok());
}

#[test]
fn ec_p224_is_a_weak_key() {
    let dir = Dir::new("p224");
    self_signed(
        &dir,
        "client",
        &["ec", "-pkeyopt", "ec_paramgen_curve:secp224r1"],
        &[],
    );
    let bytes = export(&dir, "client", None, &[]);
    let r = check(&bytes, PASSWORD, now());
    assert_eq!(
        r.key,
        Some(KeyFacts {
            algorithm: "EC".into(),
            size: Some(224),
            curve: Some("P-224".into())
        })
    );
    // OpenSSL keeps the public point in the key: compared directly.
    assert_eq!(r.certificate_matches_key, Some(true));
    assert_codes(&r, &[codes::KEY_WEAK_EC]);
    assert!(!r.usable);
}

#[test]
fn sha1_signed_leaf_is_weak() {
    let dir = Dir::new("sha1");
    ca_chain(&dir);
    issued(&dir, "old", "int", "-sha1", CLIENT_EXT, "9");
    dir.cat("cas.pem", &["int.pem", "root.pem"]);
    let bytes = export(&dir, "old", Some("cas.pem"), &[]);
    let r = check(&bytes, PASSWORD, now());
    assert_eq!(r.chain[0].signature_algorithm, "sha1WithRSAEncryption");
    assert_eq!(r.chain[1].signature_algorithm, "sha256WithRSAEncryption");
    assert_codes(&r, &[codes::LEAF_SIGNATURE_WEAK]);
    assert!(!r.usable);
}

#[test]
fn expired_and_not_yet_valid_certificates() {
    let dir = Dir::new("validity");
    let bytes = openssl_default(&dir);

    let r = check(&bytes, PASSWORD, now() + 60 * DAY);
    assert_codes(&r, &[codes::CERTIFICATE_EXPIRED]);
    assert_eq!(severity_of(&r, codes::CERTIFICATE_EXPIRED), Severity::Error);
    assert!(!r.usable);

    let r = check(&bytes, PASSWORD, now() - DAY);
    assert_codes(&r, &[codes::CERTIFICATE_NOT_YET_VALID]);
    assert!(!r.usable);

    assert!(check(&bytes, PASSWORD, now() + DAY).usable);
}

#[test]
fn expired_intermediate_is_reported_too() {
    let dir = Dir::new("validity-chain");
    ca_chain(&dir);
    dir.cat("cas.pem", &["int.pem", "root.pem"]);
    let bytes = export(&dir, "leaf", Some("cas.pem"), &[]);
    let r = check(&bytes, PASSWORD, now() + 60 * DAY);
    let expired = r
        .findings
        .iter()
        .filter(|f| f.code == codes::CERTIFICATE_EXPIRED)
        .count();
    assert_eq!(expired, 3, "{r:#?}");
}

#[test]
fn server_auth_only_leaf_lacks_client_auth() {
    let dir = Dir::new("serverauth");
    self_signed(
        &dir,
        "client",
        &["rsa:2048"],
        &["-addext", "extendedKeyUsage=serverAuth"],
    );
    let bytes = export(&dir, "client", None, &[]);
    let r = check(&bytes, PASSWORD, now());
    assert_eq!(r.chain[0].extended_key_usage, ["serverAuth"]);
    assert_codes(&r, &[codes::CLIENT_AUTH_MISSING]);
    assert_eq!(severity_of(&r, codes::CLIENT_AUTH_MISSING), Severity::Error);
    assert!(!r.usable);

    self_signed(
        &dir,
        "both",
        &["rsa:2048"],
        &["-addext", "extendedKeyUsage=serverAuth,clientAuth"],
    );
    let bytes = export(&dir, "both", None, &[]);
    let r = check(&bytes, PASSWORD, now());
    assert_eq!(r.chain[0].extended_key_usage, ["serverAuth", "clientAuth"]);
    assert!(r.usable, "{r:#?}");
}

#[test]
fn key_usage_without_digital_signature_is_an_error() {
    let dir = Dir::new("keyusage");
    self_signed(
        &dir,
        "client",
        &["rsa:2048"],
        &["-addext", "keyUsage=critical,keyEncipherment"],
    );
    let bytes = export(&dir, "client", None, &[]);
    let r = check(&bytes, PASSWORD, now());
    assert_codes(&r, &[codes::KEY_USAGE_WITHOUT_DIGITAL_SIGNATURE]);
    assert!(!r.usable);
}

// ---------------------------------------------------------------------------------------
// Files that do not open
// ---------------------------------------------------------------------------------------

#[test]
fn empty_input() {
    let r = check(&[], PASSWORD, now());
    assert_codes(&r, &[codes::P12_EMPTY]);
    assert!(!r.usable);
    assert!(!r.password_opens_file);
    assert!(r.encryption.is_empty());
    assert_eq!(r.mac_algorithm, None);
    assert_eq!(r.key, None);
    assert!(r.chain.is_empty());
}

#[test]
fn truncated_input_is_corrupted() {
    let dir = Dir::new("truncated");
    let bytes = openssl_default(&dir);
    for len in [1, 4, bytes.len() / 2, bytes.len() - 1] {
        let r = check(&bytes[..len], PASSWORD, now());
        assert_codes(&r, &[codes::P12_CORRUPTED]);
        assert!(!r.password_opens_file);
    }
    // Trailing garbage is damage too.
    let mut longer = bytes.clone();
    longer.extend_from_slice(b"garbage");
    assert_codes(&check(&longer, PASSWORD, now()), &[codes::P12_CORRUPTED]);
}

/// xorshift64: reproducible noise without a random-number crate.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

#[test]
fn random_bytes_are_corrupted() {
    for seed in 1..50u64 {
        let bytes = noise(4096, seed);
        let r = check(&bytes, PASSWORD, now());
        assert!(!r.usable);
        assert!(
            codes_of(&r) == [codes::P12_CORRUPTED] || codes_of(&r) == [codes::P12_UNSUPPORTED],
            "{:?}",
            r.findings
        );
    }
    // Noise behind a plausible SEQUENCE header.
    let mut bytes = vec![0x30, 0x82, 0x0f, 0xfc];
    bytes.extend(noise(4092, 7));
    assert_codes(&check(&bytes, PASSWORD, now()), &[codes::P12_CORRUPTED]);
    // A PEM or base64 copy is not the file.
    let pem = crate::p12::pem("PKCS12", &noise(300, 3));
    assert_codes(
        &check(pem.as_bytes(), PASSWORD, now()),
        &[codes::P12_CORRUPTED],
    );
}

#[test]
fn ber_indefinite_length_is_unsupported_not_corrupted() {
    let bytes = [0x30, 0x80, 0x02, 0x01, 0x03, 0x00, 0x00];
    let r = check(&bytes, PASSWORD, now());
    assert_codes(&r, &[codes::P12_UNSUPPORTED]);
}

#[test]
fn wrong_password() {
    let dir = Dir::new("wrong");
    self_signed(&dir, "client", &["rsa:2048"], &[]);
    for (extra, encryption, mac) in [
        (&[][..], vec![AES], "HMAC-SHA256"),
        (&["-legacy"][..], vec![RC2_40, TRIPLE_DES], "HMAC-SHA1"),
    ] {
        let bytes = export(&dir, "client", None, extra);
        let r = check(&bytes, WRONG, now());
        assert!(!r.password_opens_file);
        assert!(!r.usable);
        assert!(codes_of(&r).contains(&codes::P12_BAD_PASSWORD), "{r:#?}");
        assert_eq!(severity_of(&r, codes::P12_BAD_PASSWORD), Severity::Error);
        // The structure is still described: it needs no password.
        assert_eq!(r.encryption, encryption);
        assert_eq!(r.mac_algorithm.as_deref(), Some(mac));
        assert_eq!(r.key, None);
        assert!(r.chain.is_empty());
    }
}

#[test]
fn no_password_leaks_even_when_it_is_a_common_word() {
    // A password that also occurs in ordinary text must still not appear.
    let dir = Dir::new("leak");
    self_signed(&dir, "client", &["rsa:2048"], &[]);
    let secret = "Zq8-unusual-Password-Xy";
    openssl(
        &dir,
        &[
            "pkcs12",
            "-export",
            "-inkey",
            "client.key",
            "-in",
            "client.pem",
            "-out",
            "s.p12",
            "-passout",
            &format!("pass:{secret}"),
        ],
    );
    let bytes = dir.read("s.p12");
    for pw in [secret, "not-it-either"] {
        let r = check(&bytes, pw, now());
        assert!(!serde_json::to_string(&r).expect("json").contains(secret));
        assert!(!format!("{r:?}").contains(secret));
    }
}

// ---------------------------------------------------------------------------------------
// Keys and certificates that do not belong together
// ---------------------------------------------------------------------------------------

#[test]
fn several_private_keys() {
    let dir = Dir::new("several");
    self_signed(&dir, "a", &["rsa:2048"], &[]);
    self_signed(&dir, "b", &["rsa:2048"], &[]);
    let bytes = write_store(vec![
        (
            "a",
            KeyStoreEntry::PrivateKeyChain(chain_of(
                "id-a",
                &key_der(&dir, "a.key"),
                &[&cert_der(&dir, "a.pem")],
            )),
        ),
        (
            "b",
            KeyStoreEntry::PrivateKeyChain(chain_of(
                "id-b",
                &key_der(&dir, "b.key"),
                &[&cert_der(&dir, "b.pem")],
            )),
        ),
    ]);
    let r = check(&bytes, PASSWORD, now());
    assert!(r.password_opens_file);
    // Two unrelated self-signed certificates are also not one ordered chain.
    assert_codes(
        &r,
        &[codes::SEVERAL_PRIVATE_KEYS, codes::CHAIN_OUT_OF_ORDER],
    );
    assert!(!r.usable);
    assert_eq!(r.chain.len(), 2);
}

#[test]
fn key_without_certificate() {
    let dir = Dir::new("nocert");
    self_signed(&dir, "a", &["rsa:2048"], &[]);
    let bytes = write_store(vec![(
        "a",
        KeyStoreEntry::PrivateKeyChain(chain_of("id-a", &key_der(&dir, "a.key"), &[])),
    )]);
    let r = check(&bytes, PASSWORD, now());
    assert!(r.password_opens_file);
    assert_codes(&r, &[codes::KEY_WITHOUT_CERTIFICATE]);
    assert_eq!(r.certificate_matches_key, None);
    assert_eq!(r.key.as_ref().map(|k| k.algorithm.as_str()), Some("RSA"));
    assert!(r.chain.is_empty());
    assert!(!r.usable);
}

#[test]
fn certificate_key_mismatch() {
    let dir = Dir::new("mismatch");
    self_signed(&dir, "a", &["rsa:2048"], &[]);
    self_signed(&dir, "b", &["rsa:2048"], &[]);
    let bytes = write_store(vec![(
        "a",
        KeyStoreEntry::PrivateKeyChain(chain_of(
            "id-a",
            &key_der(&dir, "a.key"),
            &[&cert_der(&dir, "b.pem")],
        )),
    )]);
    let r = check(&bytes, PASSWORD, now());
    assert_eq!(r.certificate_matches_key, Some(false));
    assert_codes(&r, &[codes::CERTIFICATE_KEY_MISMATCH]);
    assert!(!r.usable);
    assert!(r.chain[0].is_leaf);
    // Finding 11: what the tester calls a mismatch, the upload paths refuse (P12 and the
    // key stores of credentials); Envoy would reject the secret on every gateway.
    let e = crate::p12::open(&bytes, PASSWORD).unwrap_err();
    assert_eq!(
        (e, e.code()),
        (crate::p12::P12Error::KeyMismatch, "p12_key_mismatch")
    );
    let e = crate::keystore::open(&bytes, PASSWORD).unwrap_err();
    assert_eq!(e, crate::p12::P12Error::KeyMismatch);
    let matching = write_store(vec![(
        "a",
        KeyStoreEntry::PrivateKeyChain(chain_of(
            "id-a",
            &key_der(&dir, "a.key"),
            &[&cert_der(&dir, "a.pem")],
        )),
    )]);
    assert!(crate::p12::open(&matching, PASSWORD).is_ok());
}

#[test]
fn ec_keys_without_public_point_are_checked_by_derivation() {
    let dir = Dir::new("ec-nopoint");
    for (curve, bits) in [("prime256v1", 256), ("secp384r1", 384)] {
        self_signed(
            &dir,
            "a",
            &["ec", "-pkeyopt", &format!("ec_paramgen_curve:{curve}")],
            &[],
        );
        self_signed(
            &dir,
            "b",
            &["ec", "-pkeyopt", &format!("ec_paramgen_curve:{curve}")],
            &[],
        );
        openssl(
            &dir,
            &["ec", "-in", "a.key", "-no_public", "-out", "a-nopub.key"],
        );
        let key = key_der(&dir, "a-nopub.key");
        let (a, b) = (cert_der(&dir, "a.pem"), cert_der(&dir, "b.pem"));

        let matching = write_store(vec![(
            "a",
            KeyStoreEntry::PrivateKeyChain(chain_of("id", &key, &[&a])),
        )]);
        let r = check(&matching, PASSWORD, now());
        assert_eq!(r.key.as_ref().and_then(|k| k.size), Some(bits));
        assert_eq!(r.certificate_matches_key, Some(true), "{curve}");
        assert!(r.usable, "{r:#?}");

        let other = write_store(vec![(
            "a",
            KeyStoreEntry::PrivateKeyChain(chain_of("id", &key, &[&b])),
        )]);
        let r = check(&other, PASSWORD, now());
        assert_eq!(r.certificate_matches_key, Some(false), "{curve}");
        assert_codes(&r, &[codes::CERTIFICATE_KEY_MISMATCH]);
    }
}

#[test]
fn certificates_without_a_key() {
    let dir = Dir::new("nokey");
    self_signed(&dir, "client", &["rsa:2048"], &[]);
    let pass = format!("pass:{PASSWORD}");
    openssl(
        &dir,
        &[
            "pkcs12",
            "-export",
            "-nokeys",
            "-in",
            "client.pem",
            "-out",
            "nokey.p12",
            "-passout",
            &pass,
        ],
    );
    let r = check(&dir.read("nokey.p12"), PASSWORD, now());
    assert!(r.password_opens_file);
    assert_codes(&r, &[codes::KEY_MISSING]);
    assert_eq!(r.key, None);
    assert_eq!(r.certificate_matches_key, None);
    assert_eq!(r.chain.len(), 1);
    assert!(!r.chain[0].is_leaf);
}

// ---------------------------------------------------------------------------------------
// Cost
// ---------------------------------------------------------------------------------------

#[test]
fn one_mebibyte_is_analyzed_quickly() {
    let started = Instant::now();
    let r = analyze(&noise(1 << 20, 99), PASSWORD, now());
    assert!(!r.usable);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );

    // A real 1 MiB key store: one key chain and over a thousand certificates, more entries
    // than the key-store budget allows: refused quickly, found in its encrypted safe.
    let dir = Dir::new("big");
    self_signed(&dir, "client", &["rsa:2048"], &[]);
    let (key, cert) = (key_der(&dir, "client.key"), cert_der(&dir, "client.pem"));
    let mut store = KeyStore::new();
    store.add_entry(
        "client",
        KeyStoreEntry::PrivateKeyChain(chain_of("id", &key, &[&cert])),
    );
    let copies = (1 << 20) / cert.len() + 1;
    for i in 0..copies {
        let c = Certificate::from_der(&cert).expect("certificate");
        store.add_entry(&format!("extra-{i}"), KeyStoreEntry::Certificate(c));
    }
    let bytes = store.writer(PASSWORD).write().expect("write");
    assert!(bytes.len() >= 1 << 20);
    let started = Instant::now();
    let r = analyze(&bytes, PASSWORD, now());
    let elapsed = started.elapsed();
    assert_codes(&r, &[codes::KEYSTORE_TOO_COSTLY]);
    // The key's bag, its certificate's and the copies.
    assert!(r.findings[0]
        .message
        .contains(&format!("{} entries", copies + 2)));
    assert!(elapsed < Duration::from_millis(900), "{elapsed:?}");
}

#[test]
fn excessive_key_derivation_work_is_refused_before_doing_it() {
    let dir = Dir::new("iterations");
    self_signed(&dir, "client", &["rsa:2048"], &[]);
    let (key, cert) = (key_der(&dir, "client.key"), cert_der(&dir, "client.pem"));
    let mut store = KeyStore::new();
    store.add_entry(
        "client",
        KeyStoreEntry::PrivateKeyChain(chain_of("id", &key, &[&cert])),
    );
    // 65536 encodes as 02 03 01 00 00, the file's last five bytes (the MAC iterations);
    // patch it to 8,388,607 without changing any length.
    let mut bytes = store
        .writer(PASSWORD)
        .mac_iterations(65_536)
        .write()
        .expect("write");
    let n = bytes.len();
    assert_eq!(bytes[n - 5..], [0x02, 0x03, 0x01, 0x00, 0x00]);
    bytes[n - 3..].copy_from_slice(&[0x7f, 0xff, 0xff]);
    let started = Instant::now();
    let r = check(&bytes, PASSWORD, now());
    assert!(started.elapsed() < Duration::from_millis(200));
    assert_codes(&r, &[codes::KEYSTORE_TOO_COSTLY]);
}

// ---------------------------------------------------------------------------------------
// Java check plumbing
// ---------------------------------------------------------------------------------------

fn fake_keytool(dir: &Dir, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.path("keytool");
    dir.write("keytool", format!("#!/bin/sh\n{body}\n"));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

#[test]
fn java_check_passes_the_password_by_environment_and_removes_the_file() {
    let dir = Dir::new("fake-keytool");
    let out = dir.0.display().to_string();
    let tool = fake_keytool(
        &dir,
        &format!(
            "printf '%s\\n' \"$@\" > '{out}/args'\n\
             printenv {STOREPASS_ENV} > '{out}/env'\n\
             stat -c %a \"$5\" > '{out}/mode'\n\
             cmp -s \"$5\" '{out}/input' || exit 9\n\
             exit 1"
        ),
    );
    let bytes = noise(100, 5);
    dir.write("input", &bytes);
    assert_eq!(java_check(&bytes, PASSWORD, &tool), Ok(false));

    let args = String::from_utf8(dir.read("args")).expect("utf-8");
    assert!(
        !args.contains(PASSWORD),
        "password on the command line: {args}"
    );
    let args: Vec<&str> = args.lines().collect();
    assert_eq!(args[..4], ["-list", "-storetype", "PKCS12", "-keystore"]);
    assert_eq!(args[5..], ["-storepass:env", STOREPASS_ENV]);
    assert_eq!(
        String::from_utf8(dir.read("env"))
            .expect("utf-8")
            .trim_end(),
        PASSWORD
    );
    assert_eq!(
        String::from_utf8(dir.read("mode")).expect("utf-8").trim(),
        "600"
    );
    assert!(
        !Path::new(args[4]).exists(),
        "temporary key store left behind"
    );

    let yes = fake_keytool(&dir, "exit 0");
    assert_eq!(java_check(&bytes, PASSWORD, &yes), Ok(true));
}

#[test]
fn java_check_is_bounded_by_a_timeout() {
    let dir = Dir::new("slow-keytool");
    let tool = fake_keytool(&dir, "exec sleep 30");
    let started = Instant::now();
    let answer = java_check_within(b"x", PASSWORD, &tool, Duration::from_millis(300));
    assert_eq!(
        answer,
        Err(JavaCheckError::Timeout(Duration::from_millis(300)))
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn java_check_reports_a_missing_keytool_as_an_error() {
    let answer = java_check(b"x", PASSWORD, Path::new("/nonexistent/keytool"));
    assert!(
        matches!(answer, Err(JavaCheckError::Spawn(_))),
        "{answer:?}"
    );
}

#[test]
fn java_unreadable_is_a_warning_that_keeps_the_file_usable() {
    let dir = Dir::new("java-warning");
    let bytes = openssl_default(&dir);
    let mut r = check(&bytes, PASSWORD, now());
    r.record_java_check(false);
    assert_eq!(r.java_readable, Some(false));
    assert_codes(&r, &[codes::JAVA_UNREADABLE]);
    assert_eq!(severity_of(&r, codes::JAVA_UNREADABLE), Severity::Warning);
    assert!(r.usable);
    // Recording again replaces, never duplicates.
    r.record_java_check(true);
    assert_codes(&r, &[]);
}

// ---------------------------------------------------------------------------------------
// Small pieces
// ---------------------------------------------------------------------------------------

#[test]
fn rfc3339_formats_utc() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
    assert_eq!(rfc3339(253_402_300_799), "9999-12-31T23:59:59Z");
}

#[test]
fn der_oids_and_integers() {
    assert_eq!(
        der::oid(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x0a, 0x01, 0x02]),
        Ok("1.2.840.113549.1.12.10.1.2".to_string())
    );
    assert_eq!(
        der::oid(&[0x55, 0x1d, 0x25, 0x00]),
        Ok("2.5.29.37.0".into())
    );
    assert_eq!(der::oid(&[]), Err(der::Error::Malformed));
    assert_eq!(der::oid(&[0x86]), Err(der::Error::Malformed));
    assert_eq!(der::oid(&[0xff; 20]), Err(der::Error::Malformed));
    assert_eq!(der::uint(&[0x08, 0x00]), Ok(2048));
    assert_eq!(der::uint(&[0x00, 0xff]), Ok(255));
    assert_eq!(der::uint(&[0x80]), Err(der::Error::Malformed));
    assert_eq!(der::uint(&[0x01; 12]), Ok(u64::MAX));
    assert_eq!(der::bits(&[0x00, 0x80, 0x00]), 16);
    assert_eq!(der::bits(&[0x01]), 1);
    // Non-minimal length, length beyond the input, high tag numbers.
    assert!(der::Reader::new(&[0x04, 0x81, 0x01, 0x00]).any().is_err());
    assert!(der::Reader::new(&[0x04, 0x05, 0x00]).any().is_err());
    assert!(der::Reader::new(&[0x1f, 0x01, 0x00]).any().is_err());
    assert!(der::Reader::new(&[0x04, 0x84, 0xff, 0xff, 0xff, 0xff])
        .any()
        .is_err());
}

#[test]
fn file_without_mac_opens_and_says_so() {
    let dir = Dir::new("nomac");
    self_signed(&dir, "client", &["rsa:2048"], &[]);
    let bytes = export(&dir, "client", None, &["-nomac"]);
    let r = check(&bytes, PASSWORD, now());
    assert!(r.usable, "{r:#?}");
    assert_eq!(r.mac_algorithm, None);
    assert_eq!(r.encryption, vec![AES.to_string()]);
    assert_codes(&r, &[codes::MAC_MISSING]);
    assert_eq!(severity_of(&r, codes::MAC_MISSING), Severity::Info);

    // Without a MAC, a wrong password shows up when the key does not decrypt.
    let r = check(&bytes, WRONG, now());
    assert!(!r.password_opens_file);
    assert_codes(&r, &[codes::MAC_MISSING, codes::P12_BAD_PASSWORD]);
}

#[test]
fn pbes2_triple_des_is_unsupported_not_a_bad_password() {
    let dir = Dir::new("pbes2-3des");
    self_signed(&dir, "client", &["rsa:2048"], &[]);
    let bytes = export(&dir, "client", None, &["-keypbe", "des-ede3-cbc"]);
    let r = check(&bytes, PASSWORD, now());
    assert_eq!(
        r.encryption,
        vec![
            AES.to_string(),
            "PBES2/DES-EDE3-CBC (PBKDF2-HMAC-SHA256)".to_string()
        ]
    );
    assert_codes(&r, &[codes::P12_UNSUPPORTED]);
    assert!(r.findings[0].message.contains("PBES2/DES-EDE3-CBC"));
    // The MAC is checked first, so a wrong password is still called a wrong password.
    assert_codes(&check(&bytes, WRONG, now()), &[codes::P12_BAD_PASSWORD]);
}

#[test]
fn findings_serialize_with_lower_case_severity() {
    let r = check(b"", PASSWORD, now());
    let json = serde_json::to_value(&r).expect("json");
    assert_eq!(json["usable"], false);
    assert_eq!(json["findings"][0]["code"], "p12_empty");
    assert_eq!(json["findings"][0]["severity"], "error");
    assert!(json["findings"][0]["message"].is_string());
}
