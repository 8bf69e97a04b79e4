use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};

use super::super::{init, issue_gateway};
use super::*;

fn scratch() -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "mtlsgate-crl-test-{}",
        hex::encode(crate::random::bytes::<8>())
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn cert(path: &Path) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(path).unwrap()
}

/// The serials the directory's CRL lists and its CRL number, after checking it is signed by
/// the directory's CA.
fn listed(dir: &Path) -> (Vec<String>, u64) {
    let (entries, number) = read_crl(dir).unwrap();
    (
        entries.iter().map(|e| hex::encode(&e.serial)).collect(),
        number,
    )
}

/// The real rustls verifier the links use, over `dir`'s CA and CRL.
fn verifier(dir: &Path) -> Arc<dyn rustls::server::danger::ClientCertVerifier> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert(&dir.join("ca.pem"))).unwrap();
    let crl = CertificateRevocationListDer::from_pem_file(crl_path(dir)).unwrap();
    rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .with_crls([crl])
        .only_check_end_entity_revocation()
        .build()
        .unwrap()
}

fn accepted(dir: &Path, node: &str) -> Result<(), rustls::Error> {
    let leaf = cert(&gateway_dir(dir, node).join("gateway.pem"));
    verifier(dir)
        .verify_client_cert(&leaf, &[], UnixTime::now())
        .map(|_| ())
}

#[test]
fn a_revoked_gateway_is_listed_in_a_crl_of_the_ca_and_refused_by_the_verifier() {
    let dir = scratch();
    init(&dir, &[]).unwrap();
    issue_gateway(&dir, "gw-1").unwrap();
    issue_gateway(&dir, "gw-2").unwrap();
    // A new PKI has an empty CRL, which admits every gateway.
    let (empty, first_number) = listed(&dir);
    assert!(empty.is_empty());
    assert!(first_number > 0);
    assert!(accepted(&dir, "gw-1").is_ok() && accepted(&dir, "gw-2").is_ok());

    let gw1 = hex::encode(gateway_serial(&dir, "gw-1").unwrap());
    let done = revoke(&dir, &RevokeTarget::Node("gw-1".into())).unwrap();
    assert_eq!(
        done,
        Revocation {
            serial: gw1.clone(),
            newly: true,
            listed: 1
        }
    );
    let (serials, number) = listed(&dir);
    assert_eq!(serials, std::slice::from_ref(&gw1));
    assert!(number > first_number, "the CRL number grows");
    assert_eq!(
        accepted(&dir, "gw-1"),
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::Revoked
        ))
    );
    assert!(
        accepted(&dir, "gw-2").is_ok(),
        "another gateway still passes"
    );

    // Again: nothing added, the list written again.
    let again = revoke(&dir, &RevokeTarget::Node("gw-1".into())).unwrap();
    assert!(!again.newly && again.listed == 1);

    // By serial, as a log prints it (upper case, colons): the same number.
    let gw2 = hex::encode(gateway_serial(&dir, "gw-2").unwrap());
    let colons = gw2
        .to_uppercase()
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(":");
    let by_serial = revoke(&dir, &RevokeTarget::Serial(colons)).unwrap();
    assert_eq!(
        (by_serial.serial.as_str(), by_serial.listed),
        (gw2.as_str(), 2)
    );
    assert!(accepted(&dir, "gw-2").is_err());
    // The first revocation kept its date.
    let (entries, _) = read_crl(&dir).unwrap();
    assert!(entries.iter().all(|e| e.revoked_at > 0));
    // A re-issued gateway (new key, new serial) passes again.
    issue_gateway(&dir, "gw-1").unwrap();
    assert!(accepted(&dir, "gw-1").is_ok());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_crl_that_is_not_the_cas_is_not_written_over() {
    let (dir, other) = (scratch(), scratch());
    init(&dir, &[]).unwrap();
    init(&other, &[]).unwrap();
    issue_gateway(&dir, "gw-1").unwrap();
    // Another CA's list in its place: refused, and left as it was (nothing silently
    // un-revoked by writing over it).
    std::fs::copy(crl_path(&other), crl_path(&dir)).unwrap();
    let before = std::fs::read(crl_path(&dir)).unwrap();
    let e = revoke(&dir, &RevokeTarget::Node("gw-1".into()));
    assert!(matches!(e, Err(PkiError::Unreadable(_, _))), "{e:?}");
    assert_eq!(std::fs::read(crl_path(&dir)).unwrap(), before);
    let garbage = b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n";
    std::fs::write(crl_path(&dir), garbage).unwrap();
    assert!(matches!(
        revoke(&dir, &RevokeTarget::Node("gw-1".into())),
        Err(PkiError::Unreadable(_, _))
    ));
    assert_eq!(std::fs::read(crl_path(&dir)).unwrap(), garbage);
    // No CRL at all (a PKI made before revocation existed): one is created.
    std::fs::remove_file(crl_path(&dir)).unwrap();
    assert_eq!(
        revoke(&dir, &RevokeTarget::Node("gw-1".into()))
            .unwrap()
            .listed,
        1
    );
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(&other).unwrap();
}

#[test]
fn serials_and_node_ids_are_checked() {
    let dir = scratch();
    init(&dir, &[]).unwrap();
    for bad in ["", "zz", "12 34", &"ab".repeat(22)] {
        assert!(
            matches!(
                revoke(&dir, &RevokeTarget::Serial(bad.into())),
                Err(PkiError::Serial(_))
            ),
            "{bad:?}"
        );
    }
    assert!(matches!(
        revoke(&dir, &RevokeTarget::Node("never-issued".into())),
        Err(PkiError::NoGateway(_))
    ));
    assert!(matches!(
        revoke(&dir, &RevokeTarget::Node("../ca".into())),
        Err(PkiError::NodeId(_))
    ));
    // Leading zero bytes (DER's sign byte) do not make another number; an odd digit count
    // is read as a number.
    assert_eq!(normalize_serial(&[0, 0x80, 1]), [0x80, 1]);
    assert_eq!(normalize_serial(&[0]), [0]);
    assert_eq!(parse_hex_serial("0:0a:bc").unwrap(), [0x0a, 0xbc]);
    assert_eq!(parse_hex_serial("abc").unwrap(), [0x0a, 0xbc]);
    // Nothing was revoked by the refusals.
    assert!(listed(&dir).0.is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}
