//! hyper over glommio: one HTTP/1.1 connection served with
//! [`super::routes::handle`], and the small helpers that make responses.
//! hyper does all the parsing; this file only adapts the stream
//! (`smol_hyper`'s `FuturesIo`) and shapes bodies.

use super::Admin;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use smol_hyper::rt::FuturesIo;
use std::rc::Rc;

/// A response body; not `Send`: an event stream waits on this core's timers.
pub type Body = std::pin::Pin<Box<dyn hyper::body::Body<Data = Bytes, Error = std::io::Error>>>;

/// Serves one connection until the client closes it, or until no byte
/// has moved on it for `admin.idle_timeout_secs`.
pub async fn serve(admin: &Rc<Admin>, stream: glommio::net::TcpStream) {
    let moved = Rc::new(std::cell::Cell::new(std::time::Instant::now()));
    let limit = admin.control.core().cfg.admin.idle_timeout;
    let stream = super::idle::Idle::new(stream, moved.clone());
    futures_lite::future::or(
        serve_stream(admin, stream),
        super::idle::watch(moved, limit),
    )
    .await
}

async fn serve_stream(admin: &Rc<Admin>, stream: super::idle::Idle<glommio::net::TcpStream>) {
    let peer: Rc<str> = stream
        .get_ref()
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default()
        .into();
    match &admin.tls {
        Some(acceptor) => {
            // A failed handshake is the client's problem; it gets nothing.
            if let Ok(tls) = acceptor.accept(stream).await {
                serve_io(admin, FuturesIo::new(tls), peer).await
            }
        }
        None => serve_io(admin, FuturesIo::new(stream), peer).await,
    }
}

async fn serve_io<T>(admin: &Rc<Admin>, io: FuturesIo<T>, peer: Rc<str>)
where
    T: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + 'static,
{
    let a = admin.clone();
    let service = hyper::service::service_fn(move |req| {
        let a = a.clone();
        let peer = peer.clone();
        async move { Ok::<_, std::convert::Infallible>(super::routes::handle(&a, req, &peer).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .max_buf_size(super::BODY_BYTES_MAX * 2)
        .serve_connection(io, service)
        .await;
}

/// A failed request: its status and what to tell the client.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    pub fn unavailable(core: usize) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("core {core} did not answer"),
        )
    }

    pub fn response(&self) -> Response<Body> {
        json(self.status, &serde_json::json!({ "error": self.message }))
    }
}

pub type Answer = Result<Response<Body>, ApiError>;

pub fn full(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let body: Body = Box::pin(Full::new(body.into()).map_err(|never| match never {}));
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

pub fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    let mut text = serde_json::to_vec(value).expect("API values serialize");
    text.push(b'\n');
    full(status, "application/json", text)
}

pub fn ok(value: &impl serde::Serialize) -> Answer {
    Ok(json(StatusCode::OK, value))
}
