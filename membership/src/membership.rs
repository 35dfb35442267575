//! The handle the agent holds: start membership, read the member list, send
//! broadcasts, open streams, leave.

use std::collections::{BTreeSet, BinaryHeap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use foca::{Foca, PostcardCodec};
use rand::RngExt;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::debug;

use crate::broadcast::Handler;
use crate::driver::{Cmd, Driver};
use crate::envelope::Envelope;
use crate::keyring::Keyring;
use crate::member::{MemberEvent, MemberView};
use crate::push_pull::PushPull;
use crate::stats::{Stats, StatsSnapshot};
use crate::stream::{Channel, HELLO_FRAME_LIMIT, Hello, IncomingStream, SealedStream};
use crate::{Error, NodeId, Timings};

const CHANNEL_DEPTH: usize = 1024;
/// Streams past their hello (the peer holds the key) served at once.
const MAX_CONCURRENT_STREAMS: usize = 64;
/// Connections not past their hello yet: a pool of their own, so that
/// connections from anyone, key or not, never take the permits members
/// need.
const MAX_UNPROVEN: usize = 32;
/// Of those, from one source address.
const MAX_UNPROVEN_PER_SOURCE: usize = 4;
/// A connection must prove the key (a hello sealed with it) within this
/// time.
const HELLO_TIMEOUT: Duration = Duration::from_millis(500);
/// Time for each later step of a push-pull.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// How to start membership.
#[derive(Debug, Clone)]
pub struct MembershipConfig {
    /// This node's name, unique in the cluster.
    pub name: String,
    /// Address to bind UDP and TCP on (port 0 picks a free one).
    pub bind: SocketAddr,
    /// Address other nodes reach us at; derived from `bind` when `None`.
    pub advertise: Option<SocketAddr>,
    /// Seeds to announce to until joined.
    pub seeds: Vec<SocketAddr>,
    /// The keys: the primary seals, all of them open.
    pub keyring: Keyring,
    /// This start's epoch (see [`crate::epoch::next_epoch`]).
    pub epoch: u64,
    /// Where to persist a renewed epoch; `None` keeps it in memory.
    pub data_dir: Option<PathBuf>,
    /// Timings.
    pub timings: Timings,
    /// Largest stream frame accepted or sent, envelope included.
    pub frame_limit: usize,
}

/// The agent's side of the channels membership feeds.
pub struct Channels {
    /// One event per membership change.
    pub events: mpsc::Receiver<MemberEvent>,
    /// Payloads of custom broadcasts from other nodes.
    pub broadcasts: mpsc::Receiver<Vec<u8>>,
    /// Streams peers opened on the agent's channels.
    pub streams: mpsc::Receiver<IncomingStream>,
}

/// A running membership. Cheap to clone.
#[derive(Clone)]
pub struct Membership {
    cmds: mpsc::Sender<Cmd>,
    members: watch::Receiver<Vec<MemberView>>,
    stats: Arc<Stats>,
    envelope: Envelope,
    local: NodeId,
    frame_limit: usize,
}

impl Membership {
    /// Binds the gossip address (UDP and TCP, same port) and starts the
    /// membership tasks on the current tokio runtime.
    pub async fn start(config: MembershipConfig) -> Result<(Self, Channels), Error> {
        let foca_config = config.timings.foca_config()?;
        crate::identity::validate_name(&config.name)
            .map_err(|why| Error::Config(format!("node name {:?} {why}", config.name)))?;
        let (socket, listener) = bind_pair(config.bind).await?;
        let bound = socket.local_addr().map_err(|source| Error::Bind {
            addr: config.bind,
            source,
        })?;
        let advertise = config
            .advertise
            .unwrap_or_else(|| advertise_for(bound, &config.seeds));
        let local = NodeId {
            name: config.name.clone(),
            addr: advertise,
            epoch: config.epoch,
        };
        let stats = Arc::new(Stats::default());
        let envelope = Envelope::with_keyring(&config.keyring);
        let (cmd_tx, cmd_rx) = mpsc::channel(CHANNEL_DEPTH);
        let (events_tx, events) = mpsc::channel(CHANNEL_DEPTH);
        let (broadcasts_tx, broadcasts) = mpsc::channel(CHANNEL_DEPTH);
        let (streams_tx, streams) = mpsc::channel(MAX_CONCURRENT_STREAMS);
        let (members_tx, members) = watch::channel(Vec::new());
        let mut rng: rand::rngs::StdRng = rand::make_rng();
        let foca = Foca::with_custom_broadcast(
            local.clone(),
            foca_config,
            rand::make_rng(),
            PostcardCodec,
            Handler::new(broadcasts_tx, stats.clone()),
        );
        let socket = Arc::new(socket);
        let now = Instant::now();
        let driver = Driver {
            foca,
            socket,
            envelope: envelope.clone(),
            stats: stats.clone(),
            seeds: config.seeds.clone(),
            data_dir: config.data_dir.clone(),
            cmds: cmd_rx,
            cmd_tx: cmd_tx.downgrade(),
            events: events_tx,
            members: members_tx,
            broadcast_origin: rng.random(),
            broadcast_seq: 0,
            frame_limit: config.frame_limit,
            effects: Default::default(),
            timers: BinaryHeap::new(),
            rejects: crate::reject_log::RejectLog::every(Duration::from_secs(60)),
            replays: Default::default(),
            peer_keys: Default::default(),
            skewed: crate::reject_log::RejectLog::every(Duration::from_secs(60)),
            clock_warned: crate::reject_log::RejectLog::every(Duration::from_secs(60)),
            notified: Default::default(),
            view: Default::default(),
            left: HashSet::new(),
            forgotten: Default::default(),
            active: false,
            leaving: false,
            rejoin_delay: config.timings.rejoin_min,
            rejoin_at: now,
            push_pull_at: now + config.timings.push_pull_period,
            timings: config.timings.clone(),
            rng,
        };
        tokio::spawn(driver.run());
        tokio::spawn(accept_streams(
            listener,
            cmd_tx.downgrade(),
            streams_tx,
            envelope.clone(),
            stats.clone(),
            config.frame_limit,
        ));
        let membership = Self {
            cmds: cmd_tx,
            members,
            stats,
            envelope,
            local,
            frame_limit: config.frame_limit,
        };
        Ok((
            membership,
            Channels {
                events,
                broadcasts,
                streams,
            },
        ))
    }

    /// Seals with `keyring`'s primary and opens with its keys from now on,
    /// on the gossip socket and every stream opened after.
    pub fn set_keyring(&self, keyring: &Keyring) {
        self.envelope.set_keyring(keyring);
    }

    /// This node's identity as of start (the address is the advertised one).
    pub fn local(&self) -> &NodeId {
        &self.local
    }

    /// Every known member, this node first, then by name.
    pub fn members(&self) -> Vec<MemberView> {
        self.members.borrow().clone()
    }

    /// A receiver that changes whenever the member list does.
    pub fn watch(&self) -> watch::Receiver<Vec<MemberView>> {
        self.members.clone()
    }

    /// The clock offset of the peer at `peer` (ms, positive: ahead of
    /// ours), from its datagrams of the last minute.
    pub fn clock_offset(&self, peer: SocketAddr) -> Option<i64> {
        self.stats.clock_offset(peer)
    }

    /// How far this node's clock seems off from its peers' (ms, positive:
    /// ahead), when most of them say so.
    pub fn own_clock_skew(&self) -> Option<i64> {
        self.stats.own_clock_skew()
    }

    /// Current counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Sends `payload` to every member, best effort (piggybacked on gossip
    /// and pushed at once). At most [`crate::MAX_BROADCAST`] bytes.
    pub async fn broadcast(&self, payload: Vec<u8>) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(Cmd::Broadcast(payload, tx))
            .await
            .map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)?
    }

    /// Opens a sealed stream to `addr` on `channel`.
    pub async fn open_stream(
        &self,
        addr: SocketAddr,
        channel: Channel,
        timeout: Duration,
    ) -> Result<SealedStream, Error> {
        SealedStream::connect(
            addr,
            channel,
            self.envelope.clone(),
            self.frame_limit,
            self.stats.clone(),
            timeout,
        )
        .await
    }

    /// Announces this node to `addrs` (other agents) now, and keeps them
    /// as seeds: the answer to `mob-agent join`.
    pub async fn join(&self, addrs: Vec<SocketAddr>) -> Result<(), Error> {
        self.cmds
            .send(Cmd::Join(addrs))
            .await
            .map_err(|_| Error::Stopped)
    }

    /// Leaves `names` out of the member list while they are down or left,
    /// and calls them no more (rejoins, push-pull): the nodes an operator
    /// removed with `force-leave`. Replaces the previous set.
    pub async fn forget(&self, names: BTreeSet<String>) -> Result<(), Error> {
        self.cmds
            .send(Cmd::Forget(names))
            .await
            .map_err(|_| Error::Stopped)
    }

    /// Leaves the cluster: tells every live member, then stops gossiping.
    /// Returns once the leave datagrams are sent, or after `timeout`.
    pub async fn leave(&self, timeout: Duration) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(Cmd::Leave(tx))
            .await
            .map_err(|_| Error::Stopped)?;
        tokio::time::timeout(timeout, rx)
            .await
            .map_err(|_| Error::Stream("leave timed out".into()))?
            .map_err(|_| Error::Stopped)
    }
}

/// Binds UDP and TCP on the same address. With port 0, retries until a port
/// free for both is found.
async fn bind_pair(bind: SocketAddr) -> Result<(UdpSocket, TcpListener), Error> {
    let mut last = None;
    for _ in 0..32 {
        let udp = UdpSocket::bind(bind)
            .await
            .map_err(|source| Error::Bind { addr: bind, source })?;
        let addr = udp
            .local_addr()
            .map_err(|source| Error::Bind { addr: bind, source })?;
        match TcpListener::bind(addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(source) if bind.port() == 0 => last = Some(source),
            Err(source) => return Err(Error::Bind { addr, source }),
        }
    }
    Err(Error::Bind {
        addr: bind,
        source: last.unwrap_or_else(|| std::io::Error::other("no free port")),
    })
}

/// The address to advertise when none is given: the bound one, or for a
/// wildcard bind the local address that routes towards the first seed
/// (no packet is sent), else loopback.
fn advertise_for(bound: SocketAddr, seeds: &[SocketAddr]) -> SocketAddr {
    if !bound.ip().is_unspecified() {
        return bound;
    }
    let routed = seeds.first().and_then(|seed| {
        let probe = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
        probe.connect(seed).ok()?;
        probe.local_addr().ok().map(|a| a.ip())
    });
    let ip = routed
        .filter(|ip| !ip.is_unspecified())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    SocketAddr::new(ip, bound.port())
}

/// Accepts streams: push-pull is served here, other channels go to the agent.
async fn accept_streams(
    listener: TcpListener,
    cmds: mpsc::WeakSender<Cmd>,
    streams: mpsc::Sender<IncomingStream>,
    envelope: Envelope,
    stats: Arc<Stats>,
    limit: usize,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONCURRENT_STREAMS));
    let unproven = Arc::new(Unproven::default());
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                debug!(error = %e, "tcp accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(pending) = unproven.admit(peer.ip()) else {
            stats.refused_connection();
            debug!(peer = %peer, "too many connections without a hello; refused");
            continue;
        };
        let (cmds, streams, envelope, stats, permits) = (
            cmds.clone(),
            streams.clone(),
            envelope.clone(),
            stats.clone(),
            permits.clone(),
        );
        tokio::spawn(async move {
            let served = serve_stream(tcp, pending, permits, cmds, streams, envelope, stats, limit);
            match served.await {
                Ok(()) | Err(Error::Rejected(_)) => {}
                Err(e) => debug!(peer = %peer, error = %e, "stream ended"),
            }
        });
    }
}

/// Connections not past their hello, in all and by source address.
#[derive(Debug, Default)]
struct Unproven {
    by_source: std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>,
}

/// One connection's place among the [`Unproven`]; given back on drop.
struct UnprovenGuard {
    pool: Arc<Unproven>,
    source: IpAddr,
}

impl Unproven {
    /// A place for a connection from `source`, if the pool and the
    /// source's share of it have one.
    fn admit(self: &Arc<Self>, source: IpAddr) -> Option<UnprovenGuard> {
        let mut by_source = self.by_source.lock().unwrap_or_else(|e| e.into_inner());
        let total: usize = by_source.values().sum();
        let mine = by_source.entry(source).or_default();
        if total >= MAX_UNPROVEN || *mine >= MAX_UNPROVEN_PER_SOURCE {
            return None;
        }
        *mine += 1;
        Some(UnprovenGuard {
            pool: self.clone(),
            source,
        })
    }
}

impl Drop for UnprovenGuard {
    fn drop(&mut self) {
        let mut by_source = self
            .pool
            .by_source
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = by_source.get_mut(&self.source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                by_source.remove(&self.source);
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn serve_stream(
    tcp: tokio::net::TcpStream,
    pending: UnprovenGuard,
    permits: Arc<Semaphore>,
    cmds: mpsc::WeakSender<Cmd>,
    streams: mpsc::Sender<IncomingStream>,
    envelope: Envelope,
    stats: Arc<Stats>,
    limit: usize,
) -> Result<(), Error> {
    let accepted = SealedStream::accept(tcp, envelope, HELLO_FRAME_LIMIT, stats.clone());
    let mut stream = tokio::time::timeout(HELLO_TIMEOUT, accepted)
        .await
        .map_err(|_| Error::Stream("challenge not taken in time".into()))??;
    let hello: Hello = stream.recv_within(HELLO_TIMEOUT).await?;
    // The key is proven: the stream leaves the unproven pool for a permit
    // of the members', which it holds until it is dropped, here or by the
    // agent that serves its channel.
    drop(pending);
    let Ok(permit) = permits.try_acquire_owned() else {
        stats.refused_connection();
        return Err(Error::Stream("too many streams; refused".into()));
    };
    stream.hold(permit);
    stream.set_frame_limit(limit);
    match Channel::from_number(hello.channel) {
        Some(Channel::PushPull) => {}
        Some(channel) => {
            return streams
                .try_send(IncomingStream { channel, stream })
                .map_err(|_| Error::Stream(format!("channel {channel:?} not served")));
        }
        None => return Err(Error::Stream(format!("unknown channel {}", hello.channel))),
    }
    let theirs: PushPull = stream.recv_within(STEP_TIMEOUT).await?;
    let cmds = cmds.upgrade().ok_or(Error::Stopped)?;
    let (tx, rx) = oneshot::channel();
    cmds.send(Cmd::Snapshot(tx))
        .await
        .map_err(|_| Error::Stopped)?;
    let ours = rx.await.map_err(|_| Error::Stopped)?;
    stream.send(&ours).await?;
    cmds.try_send(Cmd::ApplyMembers(theirs.into_bounded()))
        .map_err(|_| Error::Stopped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_without_a_hello_have_a_pool_and_a_share_per_source() {
        let pool = Arc::new(Unproven::default());
        let one = IpAddr::from([10, 0, 0, 1]);
        let mine: Vec<_> = (0..MAX_UNPROVEN_PER_SOURCE)
            .map(|_| pool.admit(one).unwrap())
            .collect();
        assert!(pool.admit(one).is_none(), "one source takes its share only");
        let others: Vec<_> = (0..MAX_UNPROVEN - MAX_UNPROVEN_PER_SOURCE)
            .map(|i| pool.admit(IpAddr::from([10, 0, 1, i as u8])).unwrap())
            .collect();
        assert!(
            pool.admit(IpAddr::from([10, 0, 2, 1])).is_none(),
            "the pool is full"
        );
        drop(mine);
        assert!(pool.admit(one).is_some(), "given back on drop");
        drop(others);
    }
}
