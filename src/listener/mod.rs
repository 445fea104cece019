//! SMTP injection: each core accepts on its own SO_REUSEPORT socket for every
//! configured address and runs its sessions to completion on that core.
//!
//! The listener owns sessions, never messages: a message leaves a session
//! only as a durable spool record handed to the router.

pub mod admission;
pub mod command;
pub mod data;
pub mod reply;
pub mod session;

pub use admission::{Inbound, DATA_FREE_BYTES};

use crate::engine::Core;
use futures_lite::AsyncWriteExt;
use glommio::net::{TcpListener, TcpStream};
use session::{End, Session};
use std::net::SocketAddr;
use std::rc::Rc;

/// The listen backlog of each socket (tuning/sockets.md).
pub const BACKLOG: i32 = 1024;

/// A listening socket for this core at `addr`: SO_REUSEPORT, so every
/// core has its own at the same address, and SO_REUSEADDR, so a restart
/// binds at once even while connections the last run closed first (an
/// admin event stream, a session cut at shutdown) sit in TIME_WAIT on the
/// port. glommio's own `bind` sets only the first. TCP_NODELAY is set here
/// once: Linux copies it to every connection the socket accepts, which
/// saves a system call a connection.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    use std::os::fd::{FromRawFd, IntoRawFd};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    // SAFETY: the descriptor is a bound, listening TCP socket that
    // `into_raw_fd` gave up; the listener takes sole ownership of it.
    Ok(unsafe { TcpListener::from_raw_fd(socket.into_raw_fd()) })
}

/// Accepts until `core` stops, giving `each` every connection; a failed
/// accept (out of descriptors, say) is reported and tried again shortly.
pub async fn accept_until_stopped(
    listener: &TcpListener,
    core: &Core,
    what: &str,
    mut each: impl FnMut(TcpStream),
) {
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            core.stop.wait().await;
            None
        })
        .await;
        match accepted {
            None => return,
            Some(Ok(s)) => each(s),
            Some(Err(e)) => {
                eprintln!("spate: core {}: {what} accept failed: {e}", core.index);
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

/// Accepts SMTP clients until the core stops; each connection runs as
/// its own task.
pub async fn accept_loop(listener: TcpListener, core: Rc<Core>) {
    accept_until_stopped(&listener, &core, "SMTP", |stream| {
        let Ok(peer) = stream.peer_addr() else {
            return;
        };
        glommio::spawn_local(serve(stream, peer, core.clone())).detach();
    })
    .await
}

/// Runs one client connection: plaintext, then TLS after STARTTLS.
async fn serve(mut stream: TcpStream, peer: SocketAddr, core: Rc<Core>) {
    let cfg = &core.cfg;
    let admitted = core.inbound.admit(
        peer.ip(),
        cfg.max_connections_per_core,
        cfg.max_connections_per_ip,
    );
    let _pass = match admitted {
        Ok(pass) => pass,
        Err(admission::Refusal::CoreFull) => {
            return refuse(&mut stream, &core, "Too many connections, try again later").await
        }
        Err(admission::Refusal::AddressFull) => {
            return refuse(&mut stream, &core, "Too many connections from your address").await
        }
    };
    let plain = Session::new(stream, core.clone(), peer, false);
    if let End::StartTls(stream) = plain.run(true).await {
        let Some(acceptor) = core.tls.clone() else {
            return;
        };
        let handshake = async { acceptor.accept(stream).await };
        match crate::conn::with_timeout(core.cfg.command_timeout, handshake).await {
            Ok(tls) => {
                Session::new(tls, core.clone(), peer, true).run(false).await;
            }
            Err(e) => eprintln!("spate: TLS handshake with {peer} failed: {e}"),
        }
    }
}

/// Greets a connection over a limit with 421 and lets it go.
async fn refuse(stream: &mut TcpStream, core: &Core, why: &str) {
    let line = format!("421 4.7.0 {} {why}\r\n", core.cfg.hostname);
    let _ = crate::conn::with_timeout(
        crate::conn::WRITE_TIMEOUT,
        stream.write_all(line.as_bytes()),
    )
    .await;
}

#[cfg(test)]
mod tests {
    /// `bind` sets TCP_NODELAY on the listening socket only; each accepted
    /// connection must have it (else a reply waits behind Nagle and the
    /// client's delayed ACK).
    #[test]
    fn accepted_connections_have_nodelay() {
        glommio::LocalExecutor::default().run(async {
            let listener = super::bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let addr = listener.local_addr().unwrap();
            let client = std::net::TcpStream::connect(addr).unwrap();
            let accepted = listener.accept().await.unwrap();
            assert!(accepted.nodelay().unwrap());
            drop(client);
        });
    }
}
