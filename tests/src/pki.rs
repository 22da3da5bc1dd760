//! Test certificates: a CA, a server certificate for `janusd` (also valid for
//! `localhost` and 127.0.0.1), a client certificate signed by the CA, and a
//! client certificate from an unrelated CA (must be refused).

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType};

/// PEM files written by [`Pki::generate`].
#[derive(Debug, Clone)]
pub struct Pki {
    /// CA certificate.
    pub ca: PathBuf,
    /// Server certificate (`janusd`, `localhost`, 127.0.0.1).
    pub server_cert: PathBuf,
    /// Server key.
    pub server_key: PathBuf,
    /// Client certificate signed by the CA.
    pub client_cert: PathBuf,
    /// Client key.
    pub client_key: PathBuf,
    /// Client certificate signed by another CA.
    pub rogue_cert: PathBuf,
    /// Its key.
    pub rogue_key: PathBuf,
}

fn new_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("ca key")).expect("ca cert")
}

fn leaf(cn: &str, issuer: &CertifiedIssuer<'static, KeyPair>) -> (String, String) {
    let mut params = CertificateParams::new(vec![cn.to_string(), "localhost".to_string()]).expect("params");
    params.subject_alt_names.push(SanType::IpAddress("127.0.0.1".parse().expect("ip")));
    params.distinguished_name.push(DnType::CommonName, cn);
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, issuer).expect("sign");
    (cert.pem(), key.serialize_pem())
}

impl Pki {
    /// Generates everything into `dir`.
    pub fn generate(dir: &Path) -> Pki {
        let ca = new_ca("janus-test-ca");
        let rogue_ca = new_ca("someone-else");
        let write = |name: &str, pem: &str| {
            let p = dir.join(name);
            std::fs::write(&p, pem).expect("write pem");
            p
        };
        let (sc, sk) = leaf("janusd", &ca);
        let (cc, ck) = leaf("janus-controller", &ca);
        let (rc, rk) = leaf("janus-controller", &rogue_ca);
        Pki {
            ca: write("ca.pem", &ca.pem()),
            server_cert: write("server.pem", &sc),
            server_key: write("server-key.pem", &sk),
            client_cert: write("client.pem", &cc),
            client_key: write("client-key.pem", &ck),
            rogue_cert: write("rogue.pem", &rc),
            rogue_key: write("rogue-key.pem", &rk),
        }
    }
}
