//! A test PKI made with rcgen: a CA, a server certificate for `localhost` and `127.0.0.1` signed
//! by it, a client certificate signed by it, and an unrelated CA that signed nothing here; all
//! written as PEM files into a directory.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use std::path::{Path, PathBuf};

/// The PEM files of a test PKI.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The CA that signed the server's and the client's certificates.
    pub ca: PathBuf,
    /// The server's certificate and key.
    pub server_cert: PathBuf,
    /// The server's key.
    pub server_key: PathBuf,
    /// The client's certificate.
    pub client_cert: PathBuf,
    /// The client's key.
    pub client_key: PathBuf,
    /// A CA that signed none of these.
    pub wrong_ca: PathBuf,
}

impl Pki {
    /// Makes the certificates and writes them into `dir`.
    #[must_use]
    pub fn generate(dir: &Path) -> Self {
        let (ca_pem, ca) = authority("Lepus test CA");
        let (wrong_ca_pem, _) = authority("Some other CA");
        let (server_cert, server_key) = leaf(&ca, vec!["localhost".into(), "127.0.0.1".into()], "localhost");
        let (client_cert, client_key) = leaf(&ca, vec!["lepus-test-client".into()], "lepus-test-client");
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("certificate written");
            path
        };
        Self {
            ca: write("ca.pem", &ca_pem),
            server_cert: write("server.pem", &server_cert),
            server_key: write("server.key", &server_key),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client.key", &client_key),
            wrong_ca: write("wrong-ca.pem", &wrong_ca_pem),
        }
    }
}

fn authority(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::new()).expect("CA parameters");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let key = KeyPair::generate().expect("a CA key");
    let pem = params.self_signed(&key).expect("a CA certificate").pem();
    (pem, Issuer::new(params, key))
}

fn leaf(issuer: &Issuer<'static, KeyPair>, names: Vec<String>, common_name: &str) -> (String, String) {
    let mut params = CertificateParams::new(names).expect("certificate parameters");
    params.distinguished_name.push(DnType::CommonName, common_name);
    let key = KeyPair::generate().expect("a key");
    let cert = params.signed_by(&key, issuer).expect("a signed certificate");
    (cert.pem(), key.serialize_pem())
}
