//! RTMPS: the rustls client configuration, built once per relay and shared by every
//! destination, and what a TLS failure means for the operator.
//!
//! The crypto provider is aws-lc-rs, the one reqwest already builds into the binary.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::{Class, Error};

/// rustls client configuration, built once per relay and shared by every destination.
#[derive(Clone)]
pub struct TlsConfig {
    config: Arc<ClientConfig>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsConfig")
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

impl TlsConfig {
    /// `verify`: certificates checked against the PEM bundle at `ca_file`, host name checked,
    /// SNI sent. Not `verify`: no certificate check (the operator's explicit choice); SNI is
    /// still sent and the handshake signatures are still checked.
    pub fn new(verify: bool, ca_file: &Path) -> Result<TlsConfig, Error> {
        let provider = provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::new(Class::Tls, format!("TLS setup: {e}")))?;
        let config = if verify {
            let unreadable = |e: &dyn std::fmt::Display| {
                Error::new(
                    Class::Certificate,
                    format!("cannot read the CA bundle {}: {e}", ca_file.display()),
                )
            };
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca_file).map_err(|e| unreadable(&e))? {
                let cert = cert.map_err(|e| unreadable(&e))?;
                // A bundle may hold certificates webpki cannot use; the others still count.
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(unreadable(&"no usable certificate in it"));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoCertificateCheck(provider)))
                .with_no_client_auth()
        };
        Ok(TlsConfig {
            config: Arc::new(config),
        })
    }

    pub(crate) fn connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.config.clone())
    }
}

/// The server name for SNI and the certificate check: a DNS name or an IP address.
pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>, Error> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(bare.to_owned()).map_err(|_| {
        Error::new(
            Class::Tls,
            format!("'{host}' is not a valid TLS server name"),
        )
    })
}

/// The class and message of a failed TLS handshake.
pub(crate) fn handshake_error(e: &std::io::Error, server: &str) -> Error {
    let tls = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match tls {
        Some(rustls::Error::InvalidCertificate(why)) => Error::new(
            Class::Certificate,
            format!("the certificate of {server} was not accepted: {why:?}"),
        ),
        Some(other) => Error::new(
            Class::Tls,
            format!("TLS handshake with {server} failed: {other}"),
        ),
        None => Error::new(
            Class::Tls,
            format!("TLS handshake with {server} failed: {e}"),
        ),
    }
}

/// NEUSTREAM_TLS_VERIFY=false: any certificate, any name.
#[derive(Debug)]
struct NoCertificateCheck(Arc<CryptoProvider>);

impl ServerCertVerifier for NoCertificateCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_empty_bundle_is_an_error_naming_it() {
        let err = TlsConfig::new(true, Path::new("/nonexistent/ca.pem")).unwrap_err();
        assert_eq!(err.class, Class::Certificate);
        assert!(err.message.contains("/nonexistent/ca.pem"), "{err}");
        let dir = std::env::temp_dir().join(format!("rtmp-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = TlsConfig::new(true, &empty).unwrap_err();
        assert!(err.message.contains("no usable certificate"), "{err}");
        // Without verification no bundle is read.
        TlsConfig::new(false, Path::new("/nonexistent/ca.pem")).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_system_bundle_loads() {
        // Debian's ca-certificates: what the relay uses by default.
        TlsConfig::new(true, Path::new("/etc/ssl/certs/ca-certificates.crt")).unwrap();
    }

    #[test]
    fn server_names() {
        assert!(matches!(
            server_name("a.rtmps.youtube.com"),
            Ok(ServerName::DnsName(_))
        ));
        assert!(matches!(
            server_name("127.0.0.1"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(matches!(server_name("[::1]"), Ok(ServerName::IpAddress(_))));
        assert_eq!(server_name("bad host!").unwrap_err().class, Class::Tls);
    }
}
