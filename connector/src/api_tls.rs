//! The gRPC API's TLS certificate: a self-signed one made at `bayspace
//! init`, or the institution's own, and the SHA-256 fingerprint by which a
//! researcher checks the certificate they were sent.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest as _, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum ApiTlsError {
    #[error("could not make the API certificate: {0}")]
    Generate(String),
    #[error("{what} is not a PEM {expected}: {reason}")]
    Pem {
        what: String,
        expected: &'static str,
        reason: String,
    },
}

/// A certificate and its private key, both PEM.
pub struct ApiCert {
    pub cert_pem: String,
    pub key_pem: zeroize::Zeroizing<String>,
}

/// The names a self-signed API certificate covers: the configured address
/// (for an unspecified one, every loopback), and always the loopback
/// addresses and `localhost`, so clients on the node's host verify it too.
pub fn subject_names(grpc: SocketAddr) -> Vec<String> {
    let mut names: Vec<String> = vec![
        "localhost".into(),
        IpAddr::V6(Ipv6Addr::LOCALHOST).to_string(),
        IpAddr::V4(Ipv4Addr::LOCALHOST).to_string(),
    ];
    let ip = grpc.ip();
    if !ip.is_unspecified() && !names.contains(&ip.to_string()) {
        names.push(ip.to_string());
    }
    names
}

/// A new ECDSA P-256 key and a self-signed certificate for `names` (IP
/// addresses or DNS names).
pub fn self_signed(names: Vec<String>) -> Result<ApiCert, ApiTlsError> {
    let certified = rcgen::generate_simple_self_signed(names)
        .map_err(|e| ApiTlsError::Generate(e.to_string()))?;
    Ok(ApiCert {
        cert_pem: certified.cert.pem(),
        key_pem: zeroize::Zeroizing::new(certified.key_pair.serialize_pem()),
    })
}

/// Checks that `pem` holds at least one certificate; returns the SHA-256
/// fingerprint of the first (the leaf), as colon-separated upper-case hex.
pub fn fingerprint(pem: &[u8], what: &str) -> Result<String, ApiTlsError> {
    let der = CertificateDer::from_pem_slice(pem).map_err(|e| ApiTlsError::Pem {
        what: what.to_owned(),
        expected: "certificate",
        reason: e.to_string(),
    })?;
    Ok(Sha256::digest(der.as_ref())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":"))
}

/// Checks that `pem` holds a private key.
pub fn check_key(pem: &[u8], what: &str) -> Result<(), ApiTlsError> {
    PrivateKeyDer::from_pem_slice(pem)
        .map(drop)
        .map_err(|e| ApiTlsError::Pem {
            what: what.to_owned(),
            expected: "private key",
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_round_trips_and_names_the_address() {
        let names = subject_names("[2001:db8::5]:7410".parse().unwrap());
        assert!(names.contains(&"2001:db8::5".to_owned()), "{names:?}");
        assert!(names.contains(&"::1".to_owned()), "{names:?}");
        assert_eq!(subject_names("[::]:7410".parse().unwrap()).len(), 3);
        let cert = self_signed(names).unwrap();
        let fp = fingerprint(cert.cert_pem.as_bytes(), "api.crt").unwrap();
        assert_eq!(fp.len(), 32 * 3 - 1, "{fp}");
        check_key(cert.key_pem.as_bytes(), "api.key").unwrap();
        let e = fingerprint(cert.key_pem.as_bytes(), "api.key").unwrap_err();
        assert!(e.to_string().contains("api.key"), "{e}");
        assert!(check_key(cert.cert_pem.as_bytes(), "api.crt").is_err());
    }
}
