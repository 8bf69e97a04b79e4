//! mtlsgate's own PKI for the links between control planes and gateways: a private CA, the
//! control plane's server certificate, and one client certificate per gateway that names its
//! Envoy node id. ADS and the runtime snapshot feed carry private keys and AppKey secrets, so
//! they are served over mutual TLS only (Envoy's SDS documentation requires a secure channel;
//! Istio serves xDS with mTLS on 15012), and a gateway gets only its own node's resources.
//!
//! Layout of a PKI directory (`mtlsgate pki init --dir D`):
//! - `ca.pem`, `ca.key`: the CA (keep `ca.key` offline once the gateways are issued);
//! - `control-plane.pem`, `control-plane.key`: the control planes' server identity
//!   (`--link-cert-file`, `--link-key-file`), SANs `mtlsgate-control-plane` and those asked for;
//! - `crl.pem`: the CA's revocation list (`--link-crl-file`), empty at first and written again
//!   by `mtlsgate pki revoke-gateway`;
//! - `gateways/<node>/gateway.pem`, `gateway.key`, `sds.yaml`: a gateway's identity and the
//!   file-based SDS resource its Envoy watches (so the certificate can be replaced in place).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

mod crl;

pub use crl::{crl_path, gateway_serial, revoke, RevokeTarget};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// The DNS name every control plane's certificate carries, and gateways verify.
pub const CONTROL_PLANE_NAME: &str = "mtlsgate-control-plane";
/// How a gateway certificate names its node: `spiffe://mtlsgate/gateway/<node id>`.
const GATEWAY_URI_PREFIX: &str = "spiffe://mtlsgate/gateway/";

/// Why a PKI operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{0} already exists; refusing to overwrite a PKI")]
    Exists(PathBuf),
    #[error("invalid node id {0:?}: 1-128 letters, digits, '.', '-' or '_'")]
    NodeId(String),
    #[error("no certificate was issued to gateway {0:?} in this directory")]
    NoGateway(String),
    #[error("invalid serial number {0:?}: hex digits, colons allowed, at most 20 bytes")]
    Serial(String),
    #[error("{0} does not hold {1}")]
    Unreadable(PathBuf, &'static str),
    #[error("the system clock is out of the range a certificate can say")]
    Clock,
}

/// Whether a node id can be named in a certificate and a file name.
pub fn valid_node_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        && !id.starts_with('.')
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, "mtlsgate");
    dn
}

/// Writes `contents` to `path`, private files readable by their owner only.
fn write(path: &Path, contents: &str, private: bool) -> Result<(), PkiError> {
    let io = |e| PkiError::Io(path.to_owned(), e);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    // why: written beside and renamed into place, so Envoy's watched directory and a control
    // plane reloading its files never read half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).map_err(io)?;
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)
}

fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|e| PkiError::Io(path.to_owned(), e))
}

/// Creates a CA and the control plane's certificate in `dir` (which must not hold a CA yet).
/// `names` are extra DNS names or IP addresses the control planes are reached by.
pub fn init(dir: &Path, names: &[String]) -> Result<(), PkiError> {
    let ca_path = dir.join("ca.pem");
    if ca_path.exists() {
        return Err(PkiError::Exists(ca_path));
    }
    let ca_key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = dn("mtlsgate link CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let (y, m, d) = years_from_now(10);
    params.not_after = rcgen::date_time_ymd(y, m, d);
    let ca = params.self_signed(&ca_key)?;
    write(&dir.join("ca.key"), &ca_key.serialize_pem(), true)?;
    write(&ca_path, &ca.pem(), false)?;
    crl::write_empty_crl(dir)?;
    issue_control_plane(dir, names)
}

/// The date `years` from now, as (year, month, day).
fn years_from_now(years: i64) -> (i32, u8, u8) {
    let secs = crate::clock::now().saturating_add(years.saturating_mul(365 * 86_400));
    // Read back from `clock::rfc3339`'s text rather than a second calendar.
    let text = crate::clock::rfc3339(secs);
    let y: i32 = text.get(0..4).and_then(|s| s.parse().ok()).unwrap_or(2035);
    let m: u8 = text.get(5..7).and_then(|s| s.parse().ok()).unwrap_or(1);
    let d: u8 = text.get(8..10).and_then(|s| s.parse().ok()).unwrap_or(1);
    (y, m, d)
}

fn issuer(dir: &Path) -> Result<Issuer<'static, KeyPair>, PkiError> {
    let key = KeyPair::from_pem(&read(&dir.join("ca.key"))?)?;
    Ok(Issuer::from_ca_cert_pem(&read(&dir.join("ca.pem"))?, key)?)
}

/// (Re)issues the control planes' server certificate: `control-plane.pem` / `.key`.
pub fn issue_control_plane(dir: &Path, names: &[String]) -> Result<(), PkiError> {
    let issuer = issuer(dir)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(CONTROL_PLANE_NAME);
    let mut sans = vec![
        SanType::DnsName(CONTROL_PLANE_NAME.try_into()?),
        SanType::DnsName("localhost".try_into()?),
        SanType::IpAddress(IpAddr::from([127, 0, 0, 1])),
    ];
    for n in names {
        match n.parse::<IpAddr>() {
            Ok(ip) => sans.push(SanType::IpAddress(ip)),
            Err(_) => sans.push(SanType::DnsName(n.as_str().try_into()?)),
        }
    }
    params.subject_alt_names = sans;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let (y, m, d) = years_from_now(1);
    params.not_after = rcgen::date_time_ymd(y, m, d);
    let cert = params.signed_by(&key, &issuer)?;
    write(&dir.join("control-plane.key"), &key.serialize_pem(), true)?;
    write(&dir.join("control-plane.pem"), &cert.pem(), false)
}

/// Where a gateway's files live in the PKI directory.
pub fn gateway_dir(dir: &Path, node_id: &str) -> PathBuf {
    dir.join("gateways").join(node_id)
}

/// Issues (or replaces) the certificate of gateway `node_id`: `gateway.pem`, `gateway.key`
/// and the file-based SDS resource `sds.yaml` that names them, in [`gateway_dir`].
pub fn issue_gateway(dir: &Path, node_id: &str) -> Result<PathBuf, PkiError> {
    if !valid_node_id(node_id) {
        return Err(PkiError::NodeId(node_id.to_owned()));
    }
    let issuer = issuer(dir)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(node_id);
    params.subject_alt_names = vec![SanType::URI(
        format!("{GATEWAY_URI_PREFIX}{node_id}")
            .as_str()
            .try_into()?,
    )];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let (y, m, d) = years_from_now(1);
    params.not_after = rcgen::date_time_ymd(y, m, d);
    let cert = params.signed_by(&key, &issuer)?;
    let out = gateway_dir(dir, node_id);
    let out_abs = std::path::absolute(&out).map_err(|e| PkiError::Io(out.clone(), e))?;
    write(&out.join("gateway.key"), &key.serialize_pem(), true)?;
    write(&out.join("gateway.pem"), &cert.pem(), false)?;
    // Envoy's file-based SDS: one Secret, read again whenever the directory changes.
    let sds = format!(
        "resources:\n- \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret\n  name: mtlsgate_gateway_identity\n  tls_certificate:\n    certificate_chain: {{ filename: {chain} }}\n    private_key: {{ filename: {key} }}\n",
        chain = out_abs.join("gateway.pem").display(),
        key = out_abs.join("gateway.key").display(),
    );
    write(&out.join("sds.yaml"), &sds, false)?;
    Ok(out)
}

/// The node id a gateway certificate (DER) names, if it names one.
pub fn node_id_of(cert_der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(uri) => uri
            .strip_prefix(GATEWAY_URI_PREFIX)
            .filter(|id| valid_node_id(id))
            .map(str::to_owned),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "mtlsgate-pki-test-{}",
            hex::encode(crate::random::bytes::<8>())
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_gateway_certificate_names_its_node_and_chains_to_the_ca() {
        let dir = scratch();
        init(&dir, &["10.9.8.7".into(), "cp.example".into()]).unwrap();
        assert!(matches!(init(&dir, &[]), Err(PkiError::Exists(_))));
        let out = issue_gateway(&dir, "gw-1").unwrap();
        let pem = std::fs::read_to_string(out.join("gateway.pem")).unwrap();
        let der = x509_parser::pem::parse_x509_pem(pem.as_bytes())
            .unwrap()
            .1
            .contents;
        assert_eq!(node_id_of(&der).as_deref(), Some("gw-1"));
        // The CA signed it.
        let ca_pem = std::fs::read_to_string(dir.join("ca.pem")).unwrap();
        let ca_der = x509_parser::pem::parse_x509_pem(ca_pem.as_bytes())
            .unwrap()
            .1
            .contents;
        let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        let (_, leaf) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert!(leaf.verify_signature(Some(ca.public_key())).is_ok());
        // The control plane's names.
        let cp = std::fs::read_to_string(dir.join("control-plane.pem")).unwrap();
        let cp_der = x509_parser::pem::parse_x509_pem(cp.as_bytes())
            .unwrap()
            .1
            .contents;
        let (_, cp) = x509_parser::parse_x509_certificate(&cp_der).unwrap();
        let sans = format!(
            "{:?}",
            cp.subject_alternative_name().unwrap().unwrap().value
        );
        for name in [CONTROL_PLANE_NAME, "cp.example", "10.9.8.7"] {
            assert!(
                sans.contains(name) || sans.contains("10, 9, 8, 7"),
                "{name}: {sans}"
            );
        }
        assert_eq!(node_id_of(&cp_der), None);
        // Keys are private.
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(out.join("gateway.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0);
        let sds = std::fs::read_to_string(out.join("sds.yaml")).unwrap();
        assert!(sds.contains("mtlsgate_gateway_identity") && sds.contains("gateway.key"));
        assert!(matches!(
            issue_gateway(&dir, "../evil"),
            Err(PkiError::NodeId(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
