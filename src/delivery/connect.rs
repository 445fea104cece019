//! Outbound connections: a TCP socket built with socket2 so it can be bound
//! to a source address before connecting (glommio cannot), then handed to
//! glommio; and the rustls client configurations for STARTTLS.
//!
//! Only ever connects to an IP address: no name is resolved here (glommio's
//! own connect would run blocking getaddrinfo on the core).

use crate::config::TlsPolicy;
use futures_lite::{AsyncRead, AsyncWrite};
use futures_rustls::client::TlsStream;
use glommio::net::TcpStream;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Starts a non-blocking connect from `source` (if set) to `ip:port`. The
/// connection completes (or fails) while the caller waits for the greeting.
pub fn start_connect(ip: IpAddr, port: u16, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let addr = SocketAddr::new(ip, port);
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.set_nodelay(true)?;
    if let Some(src) = source {
        defer_port_choice_to_connect(&socket)?;
        socket.bind(&SocketAddr::new(src, 0).into())?;
    }
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let fd = socket.into_raw_fd();
    // SAFETY: `fd` was just released by the socket2 `Socket` that owned it
    // (`into_raw_fd` gives up ownership), so the glommio stream becomes its
    // only owner and closes it exactly once. glommio's `From<Socket>` would
    // do the same, but for another socket2 version.
    Ok(unsafe { TcpStream::from_raw_fd(fd) })
}

/// Binds a socket to `source` once, as every delivery connection will: an
/// address this host does not have fails here, at start, not on each try.
pub fn check_source(source: IpAddr) -> io::Result<()> {
    let addr = SocketAddr::new(source, 0);
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    defer_port_choice_to_connect(&socket)?;
    socket.bind(&addr.into())
}

/// Sets IP_BIND_ADDRESS_NO_PORT (honoured by IPv6 sockets too), so that binding to a source address leaves
/// the port to be chosen at connect time, per destination. Without it each
/// bind reserves a port on the source address for every destination at
/// once, and a busy source runs out after ~28,000 connections (EADDRINUSE).
fn defer_port_choice_to_connect(socket: &Socket) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: the fd is open (owned by `socket`), and the option value is a
    // live c_int whose exact size is passed, as setsockopt(2) requires.
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(socket),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A delivery connection before or after STARTTLS.
pub enum ClientStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_close(cx),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}

/// The two client TLS configurations, built once and shared read-only.
pub struct TlsClients {
    /// Opportunistic: encrypt, accept any certificate (RFC 7435).
    pub any_cert: Arc<ClientConfig>,
    /// Required: the certificate must chain to a trusted root and match.
    pub verified: Arc<ClientConfig>,
}

impl TlsClients {
    pub fn new(extra_ca: Option<&std::path::Path>) -> Result<TlsClients, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        if let Some(path) = extra_ca {
            let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
            for cert in rustls_pemfile::certs(&mut io::BufReader::new(file)) {
                let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        let builder = || {
            ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())
        };
        let verified = builder()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let any_cert = builder()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider.clone())))
            .with_no_client_auth();
        Ok(TlsClients {
            any_cert: Arc::new(any_cert),
            verified: Arc::new(verified),
        })
    }

    pub fn for_policy(&self, policy: TlsPolicy) -> Option<Arc<ClientConfig>> {
        match policy {
            TlsPolicy::Disabled => None,
            TlsPolicy::Opportunistic => Some(self.any_cert.clone()),
            TlsPolicy::Required => Some(self.verified.clone()),
        }
    }
}

/// The server name to send (SNI) and check against: the MX host name, or
/// the IP address when the next hop was given as one.
pub fn server_name(host: &str, ip: IpAddr) -> ServerName<'static> {
    ServerName::try_from(host.to_string()).unwrap_or(ServerName::IpAddress(ip.into()))
}

/// Opportunistic TLS checks no certificate: it protects against passive
/// listeners only, which is what a sender without MTA-STS or DANE can get.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
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
