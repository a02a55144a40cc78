//! TLS for connections to an `https://` relay: a CA certificate to trust
//! ([`ClientOptions::ca_cert`](super::ClientOptions::ca_cert)), and a clear error when the
//! relay's certificate is not trusted.

use crate::error::BoxError;
use std::sync::Arc;

/// A TLS connector trusting the CA certificate `pem` besides the system's roots.
pub(crate) fn tls_connector(pem: &[u8]) -> Result<native_tls::TlsConnector, CaCertError> {
    let ca = native_tls::Certificate::from_pem(pem).map_err(CaCertError)?;
    native_tls::TlsConnector::builder()
        .add_root_certificate(ca)
        .build()
        .map_err(CaCertError)
}

/// The CA certificate given to trust could not be used.
#[derive(Debug, thiserror::Error)]
#[error("the CA certificate to trust is not a usable PEM certificate")]
pub(crate) struct CaCertError(#[source] native_tls::Error);

/// The relay's TLS certificate was not trusted.
#[derive(Debug, thiserror::Error)]
#[error(
    "the relay's TLS certificate is not trusted (if it is the right relay, trust the CA that \
     signed it: ClientOptions::with_ca_cert, or --ca-cert on the command line)"
)]
pub(crate) struct UntrustedCertificate(#[source] rust_socketio::Error);

/// The cause of a failed connect: `e` itself, or, when it is a rejected certificate, an
/// [`UntrustedCertificate`] around it.
pub(crate) fn explain(e: rust_socketio::Error) -> BoxError {
    if is_certificate_rejection(&e) {
        Arc::new(UntrustedCertificate(e))
    } else {
        Arc::new(e)
    }
}

/// Whether `e` (or one of its causes) is a TLS handshake that failed on the relay's certificate.
fn is_certificate_rejection(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if c.is::<native_tls::Error>() {
            let text = c.to_string().to_ascii_lowercase();
            return text.contains("certificate") || text.contains("verify");
        }
        cause = c.source();
    }
    false
}
