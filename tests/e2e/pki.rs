//! Test certificates, made fresh for every run.

use p12_keystore::{Certificate, KeyStore, KeyStoreEntry, LocalKeyId, PrivateKey, PrivateKeyChain};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use sha2::{Digest, Sha256};

/// A certificate authority.
pub struct Ca {
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

/// An issued certificate and its key.
pub struct Issued {
    pub cert_der: Vec<u8>,
    pub key_der: Vec<u8>,
}

impl Issued {
    /// Hex SHA-256 of the DER: what the upstream reports for the client certificate it saw.
    pub fn fingerprint(&self) -> String {
        hex::encode(Sha256::digest(&self.cert_der))
    }

    /// A PKCS#12 file (AES-256, HMAC-SHA256) with this key, this certificate and the CA.
    pub fn p12(&self, ca: &Ca, password: &str) -> Vec<u8> {
        let chain = PrivateKeyChain::new(
            LocalKeyId(vec![1, 2, 3, 4]),
            PrivateKey::from_der(&self.key_der).expect("key"),
            [
                Certificate::from_der(&self.cert_der).expect("cert"),
                Certificate::from_der(&ca.cert_der).expect("ca"),
            ],
        );
        let mut store = KeyStore::new();
        store.add_entry("client", KeyStoreEntry::PrivateKeyChain(chain));
        store.writer(password).write().expect("p12")
    }
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, "mtlsgate tests");
    dn
}

impl Ca {
    pub fn new(cn: &str) -> Ca {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(cn);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("ca");
        Ca {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            issuer: Issuer::new(params, key),
        }
    }

    fn issue(&self, cn: &str, sans: Vec<String>, usage: ExtendedKeyUsagePurpose) -> Issued {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(sans).expect("params");
        params.distinguished_name = dn(cn);
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.issuer).expect("issue");
        Issued {
            cert_der: cert.der().to_vec(),
            key_der: key.serialize_der(),
        }
    }

    /// A client certificate (clientAuth).
    pub fn client(&self, cn: &str) -> Issued {
        self.issue(cn, vec![], ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// A server certificate for the IP address 127.0.0.1 (serverAuth).
    pub fn server_ip(&self) -> Issued {
        self.issue(
            "127.0.0.1",
            vec!["127.0.0.1".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A server certificate for `localhost` (serverAuth).
    pub fn server(&self) -> Issued {
        self.issue(
            "localhost",
            vec!["localhost".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }
}
