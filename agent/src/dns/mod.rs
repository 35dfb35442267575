//! DNS on every agent: `--dns ADDR` (UDP and TCP, one port), answering
//! for `mob.` from the local table ([`answer`]), with no network round
//! trip. A packet that does not decode is dropped and counted.
//!
//! Bounded: one datagram at a time on UDP, at most [`MAX_TCP`] TCP
//! connections, each closed after [`TCP_IDLE`] without a query.

mod answer;

pub(crate) use answer::example_table;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use crate::replication::handle::TableHandle;

/// Most TCP connections served at once; more wait to be accepted.
pub(crate) const MAX_TCP: usize = 64;
/// A TCP connection with no query for this long is closed.
pub(crate) const TCP_IDLE: Duration = Duration::from_secs(5);
/// The largest datagram read (EDNS clients ask for up to 4096).
const MAX_DATAGRAM: usize = 4096;

/// Counters of the DNS server.
#[derive(Debug, Default)]
pub(crate) struct DnsStats {
    /// Queries answered.
    pub(crate) queries: AtomicU64,
    /// Packets dropped because they did not decode as a DNS query.
    pub(crate) malformed: AtomicU64,
}

/// Binds `addr` (UDP and TCP, the same port) and serves from `table`,
/// with answers valid for `ttl` seconds. Returns the UDP address bound.
pub(crate) async fn serve(
    addr: SocketAddr,
    ttl: u32,
    table: TableHandle,
    stats: Arc<DnsStats>,
) -> std::io::Result<SocketAddr> {
    let (udp, tcp, bound) = bind(addr).await?;
    tokio::spawn(serve_udp(udp, ttl, table.clone(), stats.clone()));
    tokio::spawn(serve_tcp(tcp, ttl, table, stats));
    Ok(bound)
}

/// UDP and TCP sockets on one port. With port 0 the UDP socket picks it,
/// and the TCP port of that number may be taken (outgoing connections
/// take ports of the same range): then another is tried.
async fn bind(addr: SocketAddr) -> std::io::Result<(UdpSocket, TcpListener, SocketAddr)> {
    const TRIES: usize = 20;
    let mut last = None;
    for _ in 0..TRIES {
        let udp = UdpSocket::bind(addr).await?;
        let bound = udp.local_addr()?;
        match TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((udp, tcp, bound)),
            Err(e) if addr.port() == 0 => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::from(std::io::ErrorKind::AddrInUse)))
}

/// The fuzz target's body: any bytes are a query answered from the
/// example table, over UDP and over TCP, or dropped; no answer fails to
/// encode.
pub(crate) fn fuzz_query(bytes: &[u8]) {
    let Some(request) = decode(bytes, &DnsStats::default()) else {
        return;
    };
    let (table, members) = example_table();
    for udp in [true, false] {
        let response = answer::answer(&request, &table, &members, 0, udp);
        assert!(response.to_vec().is_ok(), "an answer that does not encode");
    }
}

/// Decodes a query: `None` (and counted) for anything else.
fn decode(bytes: &[u8], stats: &DnsStats) -> Option<Message> {
    match Message::from_vec(bytes) {
        Ok(m) if m.message_type() == MessageType::Query => Some(m),
        _ => {
            stats.malformed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// The encoded answer to `request`, read from the table task.
async fn respond(request: Message, ttl: u32, udp: bool, table: &TableHandle) -> Option<Vec<u8>> {
    let response = table
        .read(move |node| answer::answer(&request, node.table(), node.members(), ttl, udp))
        .await
        .ok()?;
    match response.to_vec() {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            debug!(error = %e, "dns answer not encoded");
            None
        }
    }
}

async fn serve_udp(socket: UdpSocket, ttl: u32, table: TableHandle, stats: Arc<DnsStats>) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(e) => {
                // (An ICMP error from an earlier reply, say: keep serving.)
                debug!(error = %e, "dns datagram not received");
                continue;
            }
        };
        let Some(request) = buf.get(..n).and_then(|b| decode(b, &stats)) else {
            continue;
        };
        let Some(bytes) = respond(request, ttl, true, &table).await else {
            continue;
        };
        stats.queries.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = socket.send_to(&bytes, from).await {
            debug!(peer = %from, error = %e, "dns answer not sent");
        }
    }
}

async fn serve_tcp(listener: TcpListener, ttl: u32, table: TableHandle, stats: Arc<DnsStats>) {
    let slots = Arc::new(Semaphore::new(MAX_TCP));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, from) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(error = %e, "dns connection not accepted");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (table, stats) = (table.clone(), stats.clone());
        tokio::spawn(async move {
            if let Err(e) = serve_connection(stream, ttl, &table, &stats).await {
                debug!(peer = %from, error = %e, "dns connection ended");
            }
            drop(permit);
        });
    }
}

/// Queries on one TCP connection, each with its two-byte length (RFC
/// 1035 4.2.2), until the client closes it or goes idle.
async fn serve_connection(
    mut stream: TcpStream,
    ttl: u32,
    table: &TableHandle,
    stats: &DnsStats,
) -> std::io::Result<()> {
    loop {
        let len = match tokio::time::timeout(TCP_IDLE, stream.read_u16()).await {
            Ok(Ok(len)) => usize::from(len),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(()),
        };
        // (At most 64 KiB: the length is two bytes.)
        let mut buf = vec![0u8; len];
        tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut buf))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        let Some(request) = decode(&buf, stats) else {
            // Framing can't be trusted after garbage: close.
            return Ok(());
        };
        let Some(bytes) = respond(request, ttl, false, table).await else {
            return Ok(());
        };
        stats.queries.fetch_add(1, Ordering::Relaxed);
        let Ok(len) = u16::try_from(bytes.len()) else {
            return Ok(());
        };
        stream.write_u16(len).await?;
        stream.write_all(&bytes).await?;
    }
}
