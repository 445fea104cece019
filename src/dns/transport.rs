//! Asking the configured recursive resolvers one question and getting one
//! reply: UDP first, TCP when the UDP reply is truncated.
//!
//! Every wait has a timer, every buffer a size, every loop a count. It never
//! blocks the thread and never resolves a host name itself: servers are
//! socket addresses, so glommio never reaches getaddrinfo. A reply is only
//! taken when it comes from the server asked and echoes the query's id and
//! question; anything else is ignored (RFC 5452).

use crate::conn::with_timeout;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpStream, UdpSocket};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// The UDP payload size we advertise with EDNS0 (the DNS flag day 2020
/// value: fits an IPv6 minimum MTU without fragmentation).
pub const UDP_PAYLOAD_BYTES: u16 = 1232;
/// Our receive buffer for one UDP reply. Servers keep to the advertised
/// payload; the slack lets an oversized reply fail to decode rather than be
/// cut silently by the kernel into something that might.
pub const UDP_REPLY_BYTES_MAX: usize = 4096;
/// The largest reply over TCP: what a two-byte length prefix can say.
pub const TCP_REPLY_BYTES_MAX: usize = u16::MAX as usize;
/// The largest query we send; a 255-byte name plus header and OPT is ~300.
pub const QUERY_BYTES_MAX: usize = 512;
/// Datagrams that do not answer our query (late replies to an earlier try,
/// spoofing attempts) tolerated on one socket before the try is given up.
pub const STRAY_REPLIES_MAX: usize = 16;

/// Ports picked for one UDP socket before the try is given up.
const PORT_PICKS_MAX: usize = 3;

const _: () = assert!(UDP_PAYLOAD_BYTES as usize <= UDP_REPLY_BYTES_MAX);
const _: () = assert!(QUERY_BYTES_MAX <= TCP_REPLY_BYTES_MAX);

/// Asks `servers` about `name`/`qtype`: each server in turn, `attempts`
/// rounds. A server that answers with an error code (SERVFAIL, REFUSED,
/// FORMERR...) is not asked again for this question: it has answered, and
/// asking at once again would get the same. Returns the first NOERROR or
/// NXDOMAIN reply, or a diagnostic naming the last failure.
pub(crate) async fn ask(
    servers: &[SocketAddr],
    timeout: Duration,
    attempts: u32,
    name: &Name,
    qtype: RecordType,
) -> Result<Message, String> {
    let mut done = vec![false; servers.len()];
    let mut last = format!("no DNS server to ask for {name} {qtype}");
    for _ in 0..attempts {
        for (i, server) in servers.iter().enumerate() {
            if done[i] {
                continue;
            }
            let query = build_query(name, qtype);
            match exchange(*server, &query, timeout).await {
                Ok(reply) => match reply.response_code {
                    ResponseCode::NoError | ResponseCode::NXDomain => return Ok(reply),
                    code => {
                        done[i] = true;
                        let code = rcode_name(code);
                        last = format!("{server} answered {code} for {name} {qtype}");
                    }
                },
                Err(e) => last = format!("{server}: {e} ({name} {qtype})"),
            }
        }
    }
    Err(last)
}

/// The mnemonic operators know from dig and server logs.
fn rcode_name(code: ResponseCode) -> String {
    match code {
        ResponseCode::FormErr => "FORMERR".to_string(),
        ResponseCode::ServFail => "SERVFAIL".to_string(),
        ResponseCode::NotImp => "NOTIMP".to_string(),
        ResponseCode::Refused => "REFUSED".to_string(),
        other => format!("rcode {}", u16::from(other)),
    }
}

/// A recursive query with EDNS0 and a fresh random id.
fn build_query(name: &Name, qtype: RecordType) -> Message {
    let mut query = Message::new(fastrand::u16(..), MessageType::Query, OpCode::Query);
    query.metadata.recursion_desired = true;
    query.add_query(Query::query(name.clone(), qtype));
    let mut edns = Edns::new();
    edns.set_max_payload(UDP_PAYLOAD_BYTES);
    query.set_edns(edns);
    query
}

/// One try against one server: a UDP exchange, then TCP if truncated. Each
/// of the two has its own `timeout`.
pub(crate) async fn exchange(
    server: SocketAddr,
    query: &Message,
    timeout: Duration,
) -> io::Result<Message> {
    let bytes = query.to_vec().map_err(invalid)?;
    if bytes.len() > QUERY_BYTES_MAX {
        return Err(invalid("query too large"));
    }
    match with_timeout(timeout, udp_exchange(server, &bytes, query)).await? {
        Some(reply) if !reply.truncation => Ok(reply),
        // Truncated (TC), or too large for a datagram we accept: TCP.
        _ => with_timeout(timeout, tcp_exchange(server, &bytes, query)).await,
    }
}

/// One UDP exchange: the reply, or `None` when the server sent one larger
/// than [`UDP_REPLY_BYTES_MAX`] without setting TC (it ignored our EDNS
/// size): the kernel cut it, so it is asked again over TCP.
async fn udp_exchange(
    server: SocketAddr,
    bytes: &[u8],
    query: &Message,
) -> io::Result<Option<Message>> {
    let socket = bind_own_port(server)?;
    // Connecting makes the kernel drop datagrams from anyone but the server
    // and reports ICMP port unreachable as an error instead of a timeout.
    socket.connect(server).await?;
    socket.send(bytes).await?;
    // One byte more than accepted: a datagram that fills it was cut.
    let mut buf = vec![0u8; UDP_REPLY_BYTES_MAX + 1];
    for _ in 0..STRAY_REPLIES_MAX {
        let n = socket.recv(&mut buf).await?;
        if n > UDP_REPLY_BYTES_MAX {
            // Only its header can be trusted: our id and a reply.
            if buf[..2] == query.id.to_be_bytes() && buf[2] & 0x80 != 0 {
                return Ok(None);
            }
            continue;
        }
        // A datagram that does not decode or does not match is not ours to
        // act on: keep waiting for the real reply until the timer runs out.
        if let Ok(reply) = Message::from_vec(&buf[..n]) {
            if answers(query, &reply) {
                return Ok(Some(reply));
            }
        }
    }
    Err(invalid("too many stray datagrams"))
}

/// A UDP socket on an unspecified address of the server's family, on a
/// port no other socket holds.
///
/// glommio sets SO_REUSEPORT on every UDP socket it binds, and with it the
/// kernel may give the same ephemeral port to two sockets of one user
/// (measured: about 15 repeats in 900 sockets). Two queries to one server
/// from one port would share a 4-tuple, the kernel would hand both replies
/// to one of them, and the other would time out. A socket without
/// SO_REUSEPORT never shares, so a plain std socket picks the (random) port
/// first; it is closed just before glommio binds the same port. Should
/// another socket take the port in that instant, another port is picked.
fn bind_own_port(server: SocketAddr) -> io::Result<UdpSocket> {
    let ip: IpAddr = match server {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let mut last = None;
    for _ in 0..PORT_PICKS_MAX {
        let probe = std::net::UdpSocket::bind((ip, 0))?;
        let port = probe.local_addr()?.port();
        drop(probe);
        match UdpSocket::bind((ip, port)) {
            Ok(socket) => return Ok(socket),
            Err(e) => last = Some(io::Error::from(e)),
        }
    }
    Err(last.unwrap_or_else(|| invalid("no port to bind")))
}

async fn tcp_exchange(server: SocketAddr, bytes: &[u8], query: &Message) -> io::Result<Message> {
    let mut stream = TcpStream::connect(server).await?;
    let len = u16::try_from(bytes.len()).map_err(invalid)?;
    let mut framed = Vec::with_capacity(2 + bytes.len());
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(bytes);
    stream.write_all(&framed).await?;
    stream.flush().await?;
    let mut prefix = [0u8; 2];
    stream.read_exact(&mut prefix).await?;
    let len = usize::from(u16::from_be_bytes(prefix));
    assert!(len <= TCP_REPLY_BYTES_MAX);
    let mut buf = vec![0u8; len];
    stream.read_exact(&mut buf).await?;
    let reply = Message::from_vec(&buf).map_err(invalid)?;
    if !answers(query, &reply) {
        return Err(invalid("TCP reply does not match the query"));
    }
    Ok(reply)
}

/// Whether `reply` is the server's reply to `query`: same id, a response,
/// and the same single question (names compared without case).
pub(crate) fn answers(query: &Message, reply: &Message) -> bool {
    reply.id == query.id
        && reply.message_type == MessageType::Response
        && reply.queries.len() == 1
        && query.queries.len() == 1
        && reply.queries[0].name() == query.queries[0].name()
        && reply.queries[0].query_type() == query.queries[0].query_type()
        && reply.queries[0].query_class() == query.queries[0].query_class()
}

fn invalid(e: impl ToString) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn reply_to(query: &Message) -> Message {
        let mut reply = Message::new(query.id, MessageType::Response, OpCode::Query);
        reply.add_queries(query.queries.iter().cloned());
        reply
    }

    #[test]
    fn query_is_recursive_with_edns() {
        let query = build_query(&name("example.test."), RecordType::MX);
        let bytes = query.to_vec().unwrap();
        assert!(bytes.len() <= QUERY_BYTES_MAX);
        let decoded = Message::from_vec(&bytes).unwrap();
        assert!(decoded.recursion_desired);
        assert_eq!(decoded.edns.as_ref().map(|e| e.max_payload()), Some(1232));
        assert_eq!(decoded.queries.len(), 1);
    }

    #[test]
    fn a_reply_matches_only_its_query() {
        let query = build_query(&name("example.test."), RecordType::MX);
        let reply = reply_to(&query);
        assert!(answers(&query, &reply));

        let mut upper = Message::new(query.id, MessageType::Response, OpCode::Query);
        upper.add_query(Query::query(name("EXAMPLE.test."), RecordType::MX));
        assert!(answers(&query, &upper), "names compare without case");

        let mut other_id = reply_to(&query);
        other_id.metadata.id = query.id.wrapping_add(1);
        assert!(!answers(&query, &other_id));

        let mut other_type = Message::new(query.id, MessageType::Response, OpCode::Query);
        other_type.add_query(Query::query(name("example.test."), RecordType::A));
        assert!(!answers(&query, &other_type));

        let mut not_response = reply_to(&query);
        not_response.metadata.message_type = MessageType::Query;
        assert!(!answers(&query, &not_response));

        let mut no_question = reply_to(&query);
        no_question.queries.clear();
        assert!(!answers(&query, &no_question));
    }
}
