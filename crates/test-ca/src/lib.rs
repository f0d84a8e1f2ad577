//! # ferry-test-ca
//!
//! Certificates for TLS tests (`ferry-secure`'s and the client's): a throw-away CA and a leaf it
//! signed, as PEM, made fresh by each call. A dev-dependency only; never shipped.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// A CA called `ca_name`, and a leaf for `names` signed by it: (the CA's certificate, the
/// leaf's chain (leaf, then CA), the leaf's private key), all PEM.
pub fn ca_and_leaf(ca_name: &str, names: &[&str]) -> (String, String, String) {
    let ca_key = KeyPair::generate().expect("a CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, ca_name);
    let ca = ca_params.self_signed(&ca_key).expect("a CA certificate");
    let leaf_key = KeyPair::generate().expect("a leaf key");
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let leaf = CertificateParams::new(names)
        .expect("leaf parameters (valid names)")
        .signed_by(&leaf_key, &ca, &ca_key)
        .expect("a leaf certificate");
    (
        ca.pem(),
        format!("{}{}", leaf.pem(), ca.pem()),
        leaf_key.serialize_pem(),
    )
}
