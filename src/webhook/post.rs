//! The HTTP client of one webhook task: hyper's HTTP/1.1 client
//! connection over a glommio TCP stream (rustls for https://), kept for
//! the next batch while the server allows.
//!
//! The host is resolved with the core's own resolver (or is an IP
//! literal); glommio's connect gets a socket address, never a name (its
//! name lookup would block the core in getaddrinfo). Every exchange runs
//! under one glommio timer (`timeout_ms`): connect, TLS, request and
//! response together. Any failure drops the connection.

use super::sign::Secret;
use crate::config::Webhook;
use crate::delivery::{server_name, ClientStream};
use crate::dns::Resolver;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper::StatusCode;
use rustls::ClientConfig;
use smol_hyper::rt::FuturesIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// A receiver's answer body is read (so the connection can be reused) up
/// to this much, and otherwise ignored.
pub const RESPONSE_BYTES_MAX: usize = 64 << 10;
/// Addresses of the host tried, in the resolver's order, per exchange.
pub const ADDRESSES_MAX: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum PostError {
    #[error("DNS: {0}")]
    Dns(#[from] crate::dns::DnsError),
    #[error("connect to {0}: {1}")]
    Connect(SocketAddr, std::io::Error),
    #[error("TLS with {0}: {1}")]
    Tls(SocketAddr, std::io::Error),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("reading the answer: {0}")]
    Answer(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// One batch, ready to send (and to send again, unchanged).
pub struct Post {
    pub body: Bytes,
    pub signature: String,
    pub batch_id: String,
}

impl Post {
    pub fn new(body: Vec<u8>, secret: &Secret, batch_id: String) -> Post {
        Post {
            signature: secret.signature(&body),
            body: Bytes::from(body),
            batch_id,
        }
    }
}

struct Conn {
    sender: SendRequest<Full<Bytes>>,
    /// Drives the connection; dropping it closes the connection.
    _driver: glommio::Task<()>,
}

pub struct Client {
    tls: Option<Arc<ClientConfig>>,
    conn: Option<Conn>,
}

impl Client {
    pub fn new(tls: Option<Arc<ClientConfig>>) -> Client {
        Client { tls, conn: None }
    }

    /// POSTs `post` to the webhook: the status it answered, or why none.
    pub async fn post(
        &mut self,
        w: &Webhook,
        resolver: &Resolver,
        post: &Post,
    ) -> Result<StatusCode, PostError> {
        let exchange = async { Some(self.exchange(w, resolver, post).await) };
        let timer = async {
            glommio::timer::sleep(w.timeout).await;
            None
        };
        let result = futures_lite::future::or(exchange, timer)
            .await
            .unwrap_or(Err(PostError::Timeout(w.timeout)));
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    async fn exchange(
        &mut self,
        w: &Webhook,
        resolver: &Resolver,
        post: &Post,
    ) -> Result<StatusCode, PostError> {
        if self.conn.as_ref().is_none_or(|c| c.sender.is_closed()) {
            self.conn = None;
            self.conn = Some(self.connect(w, resolver).await?);
        }
        let conn = self.conn.as_mut().expect("connected above");
        conn.sender.ready().await?;
        let request = hyper::Request::post(w.path.as_str())
            .header(hyper::header::HOST, w.authority())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::USER_AGENT, "spate")
            .header("X-Spate-Signature", post.signature.as_str())
            .header("X-Spate-Webhook", w.name.as_str())
            .header("X-Spate-Batch", post.batch_id.as_str())
            .body(Full::new(post.body.clone()))
            .expect("a request of checked parts");
        let answer = conn.sender.send_request(request).await?;
        let status = answer.status();
        Limited::new(answer.into_body(), RESPONSE_BYTES_MAX)
            .collect()
            .await
            .map_err(|e| PostError::Answer(e.to_string()))?;
        Ok(status)
    }

    async fn connect(&self, w: &Webhook, resolver: &Resolver) -> Result<Conn, PostError> {
        let ips = resolver.addresses(&w.host).await?;
        let mut failed = None;
        for ip in ips.into_iter().take(ADDRESSES_MAX) {
            let addr = SocketAddr::new(ip, w.port);
            let tcp = match glommio::net::TcpStream::connect(addr).await {
                Ok(tcp) => tcp,
                Err(e) => {
                    failed = Some(PostError::Connect(addr, e.into()));
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let stream = match &self.tls {
                None => ClientStream::Plain(tcp),
                Some(cfg) => {
                    let tls = futures_rustls::TlsConnector::from(cfg.clone())
                        .connect(server_name(&w.host, ip), tcp)
                        .await
                        .map_err(|e| PostError::Tls(addr, e))?;
                    ClientStream::Tls(Box::new(tls))
                }
            };
            let (sender, connection) =
                hyper::client::conn::http1::handshake(FuturesIo::new(stream)).await?;
            let driver = glommio::spawn_local(async move {
                let _ = connection.await;
            });
            return Ok(Conn {
                sender,
                _driver: driver,
            });
        }
        Err(failed.unwrap_or(PostError::Dns(crate::dns::DnsError::NoAddresses)))
    }
}
