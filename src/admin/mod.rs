//! The admin server: the HTTP API (`/api/v1/...`), Prometheus metrics
//! (`/metrics`) and the dashboard (`/`), served by the cores themselves.
//! Each core accepts on its own SO_REUSEPORT socket at every
//! `admin.listen` address and answers with hyper (HTTP/1.1) over glommio's
//! streams, optionally inside rustls.
//!
//! A request is answered by asking the cores over the control mesh
//! ([`crate::control`]): the owner of a domain, or every core for a
//! summary. Nothing here touches another core's state, and nothing waits
//! on the delivery path: the admin server's tasks are ordinary tasks of
//! the core, a few per request.
//!
//! Every change needs a bearer token ([`token`]); when the server listens
//! beyond loopback, every request does. At most [`CONNECTIONS_MAX`]
//! connections per core, and request bodies of at most [`BODY_BYTES_MAX`].

mod api;
mod events;
mod http;
mod idle;
mod metrics;
mod platform;
mod routes;
pub mod token;

use crate::control::Control;
use futures_rustls::TlsAcceptor;
use glommio::net::TcpListener;
use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

pub use events::{history as log_history, history_of as log_history_of};
pub use token::Tokens;

pub const CONNECTIONS_MAX: usize = 256;
pub const BODY_BYTES_MAX: usize = 64 * 1024;

/// One core's admin server.
pub struct Admin {
    control: Rc<Control>,
    tokens: Arc<Tokens>,
    /// Reads need a token too (the server listens beyond loopback).
    reads_need_token: bool,
    tls: Option<TlsAcceptor>,
    started: Instant,
    connections: Cell<usize>,
    /// Numbers the actions this core's server puts in force; ids are
    /// unique across cores (`seq * cores + core + 1`).
    next_action: Cell<u64>,
    /// Set on the injection listener's server, which answers only the
    /// injection routes (and the admin listener's none of them).
    injector: Option<crate::inject::Injector>,
}

impl Admin {
    pub fn new(
        control: Rc<Control>,
        tokens: Arc<Tokens>,
        reads_need_token: bool,
        tls: Option<TlsAcceptor>,
        injector: Option<crate::inject::Injector>,
    ) -> Rc<Admin> {
        Rc::new(Admin {
            control,
            tokens,
            reads_need_token,
            tls,
            started: Instant::now(),
            connections: Cell::new(0),
            next_action: Cell::new(0),
            injector,
        })
    }

    fn action_id(&self) -> u64 {
        let seq = self.next_action.get();
        self.next_action.set(seq + 1);
        let cores = self.control.cores() as u64;
        seq * cores + self.control.core().index as u64 + 1
    }
}

/// Accepts admin connections until the core stops.
pub async fn accept_loop(listener: TcpListener, admin: Rc<Admin>) {
    let core = admin.control.core().clone();
    crate::listener::accept_until_stopped(&listener, &core, "admin", |stream| {
        if admin.connections.get() >= CONNECTIONS_MAX {
            return;
        }
        let _ = stream.set_nodelay(true);
        admin.connections.set(admin.connections.get() + 1);
        let a = admin.clone();
        glommio::spawn_local(async move {
            http::serve(&a, stream).await;
            a.connections.set(a.connections.get() - 1);
        })
        .detach();
    })
    .await
}
