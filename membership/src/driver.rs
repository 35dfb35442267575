//! The one task that owns foca: its timers, its UDP socket, and the view
//! derived from it. Every loop turn must stay short: a task blocked for ~2 s
//! gets this node declared down, so nothing here blocks or awaits anything
//! but the socket.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use foca::{Foca, Notification, OwnedNotification, PostcardCodec, Timer};
use rand::RngExt;
use rand::rngs::StdRng;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, sleep_until};
use tracing::{debug, error, info, warn};

use crate::broadcast::{Handler, MAX_BROADCAST, encode_item};
use crate::envelope::Envelope;
use crate::freshness::Stale;
use crate::member::{MemberEvent, MemberState, MemberView};
use crate::push_pull::PushPull;
use crate::reject_log::RejectLog;
use crate::stats::{Rejected, Stats};
use crate::stream::{Channel, SealedStream};
use crate::timings::{MAX_DATAGRAM, Timings};
use crate::view::View;
use crate::{Error, NodeId, epoch};

/// Plaintext tag of a SWIM datagram (foca's bytes follow).
const TAG_SWIM: u8 = 0;
/// Plaintext tag of a leave notice (the leaving `NodeId` follows).
const TAG_LEAVE: u8 = 1;
/// Tag of a notice that the receiver's datagrams were refused as stale,
/// with how many peers agree with the refuser's clock (one byte): the
/// receiver learns the refuser's clock from its send time, and whether it
/// is the odd one out.
const TAG_CLOCK: u8 = 2;
/// Most custom broadcasts queued in foca at once; beyond, broadcasts are
/// refused so the queue stays bounded.
const MAX_BROADCAST_BACKLOG: usize = 256;
/// Connect and reply timeout of a push-pull round.
const PUSH_PULL_TIMEOUT: Duration = Duration::from_secs(3);

type Swim = Foca<NodeId, PostcardCodec, StdRng, Handler>;

/// Requests from the [`crate::Membership`] handle and the stream tasks.
pub(crate) enum Cmd {
    Broadcast(Vec<u8>, oneshot::Sender<Result<(), Error>>),
    ApplyMembers(Vec<foca::Member<NodeId>>),
    Snapshot(oneshot::Sender<PushPull>),
    Leave(oneshot::Sender<()>),
    /// Announce to these addresses now, and keep them as seeds.
    Join(Vec<SocketAddr>),
    /// Leave these names out of the list (and call them no more) while
    /// they are down or left: an operator's `force-leave`.
    Forget(BTreeSet<String>),
}

/// The fuzz target's body: what `handle_datagram` does with an opened
/// datagram's payload (the tag byte, then foca's decoder or a leave
/// notice), on a fresh foca of its own; any bytes are taken or refused,
/// never a panic.
pub(crate) fn fuzz_payload(plain: &[u8]) {
    use rand::SeedableRng;
    let Ok(config) = Timings::default().foca_config() else {
        return;
    };
    let local = NodeId {
        name: "fuzz".into(),
        addr: SocketAddr::from(([127, 0, 0, 1], 7946)),
        epoch: 1,
    };
    let (deliver, _delivered) = mpsc::channel(16);
    let mut foca: Swim = Foca::with_custom_broadcast(
        local,
        config,
        StdRng::seed_from_u64(1),
        PostcardCodec,
        Handler::new(deliver, Arc::default()),
    );
    let mut effects = Effects::default();
    match plain.split_first() {
        Some((&TAG_SWIM, swim)) => {
            let _ = foca.handle_data(swim, &mut effects);
        }
        Some((&TAG_LEAVE, notice)) => {
            if let Ok(id) = postcard::from_bytes::<NodeId>(notice) {
                let down = std::iter::once(foca::Member::down(id));
                let _ = foca.apply_many(down, true, &mut effects);
            }
        }
        _ => {}
    }
}

/// Seeds an agent keeps at most (`join` adds to them).
const MAX_SEEDS: usize = 64;

/// Collects foca's effects during one call; drained right after it.
#[derive(Default)]
pub(crate) struct Effects {
    out: Vec<(SocketAddr, Vec<u8>)>,
    timers: Vec<(Duration, Timer<NodeId>)>,
    notes: Vec<OwnedNotification<NodeId>>,
}

impl foca::Runtime<NodeId> for Effects {
    fn notify(&mut self, notification: Notification<'_, NodeId>) {
        self.notes.push(notification.to_owned());
    }

    fn send_to(&mut self, to: NodeId, data: &[u8]) {
        let mut plain = Vec::with_capacity(data.len() + 1);
        plain.push(TAG_SWIM);
        plain.extend_from_slice(data);
        self.out.push((to.addr, plain));
    }

    fn submit_after(&mut self, event: Timer<NodeId>, after: Duration) {
        self.timers.push((after, event));
    }
}

/// What woke the loop.
enum Input {
    Cmd(Option<Cmd>),
    Timers,
    Datagram(std::io::Result<(usize, SocketAddr)>),
    Rejoin,
    PushPull,
}

/// Everything the foca task owns.
pub(crate) struct Driver {
    pub(crate) foca: Swim,
    pub(crate) socket: Arc<UdpSocket>,
    pub(crate) envelope: Envelope,
    pub(crate) stats: Arc<Stats>,
    pub(crate) timings: Timings,
    pub(crate) seeds: Vec<SocketAddr>,
    pub(crate) data_dir: Option<PathBuf>,
    pub(crate) cmds: mpsc::Receiver<Cmd>,
    pub(crate) cmd_tx: mpsc::WeakSender<Cmd>,
    pub(crate) events: mpsc::Sender<MemberEvent>,
    pub(crate) members: watch::Sender<Vec<MemberView>>,
    pub(crate) rng: StdRng,
    pub(crate) frame_limit: usize,
    pub(crate) broadcast_origin: u64,
    pub(crate) broadcast_seq: u64,
    pub(crate) effects: Effects,
    pub(crate) timers: BinaryHeap<Reverse<(Instant, Timer<NodeId>)>>,
    /// Rejected packets are a WARN once a minute per peer.
    pub(crate) rejects: RejectLog,
    /// Nonces of fresh datagrams seen within the window.
    pub(crate) replays: crate::freshness::ReplayGuard,
    /// The keys each peer holds, for sealing to it.
    pub(crate) peer_keys: crate::peer_keys::PeerKeys,
    /// Datagrams refused for a clock far off are an ERROR once a minute
    /// per peer.
    pub(crate) skewed: RejectLog,
    /// Offsets over [`CLOCK_WARN_MS`] are a WARN once a minute per peer.
    pub(crate) clock_warned: RejectLog,
    /// Clock notices sent, at most one a second per address.
    pub(crate) notified: RejectLog,
    pub(crate) view: View,
    pub(crate) left: HashSet<NodeId>,
    /// See [`Cmd::Forget`].
    pub(crate) forgotten: BTreeSet<String>,
    pub(crate) active: bool,
    pub(crate) leaving: bool,
    pub(crate) rejoin_delay: Duration,
    pub(crate) rejoin_at: Instant,
    pub(crate) push_pull_at: Instant,
}

impl Driver {
    /// Runs until a leave completes or every handle is dropped.
    pub(crate) async fn run(mut self) {
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        self.publish();
        loop {
            let next_timer = self.timers.peek().map(|Reverse((at, _))| *at);
            let socket = self.socket.clone();
            let input = tokio::select! {
                biased;
                cmd = self.cmds.recv() => Input::Cmd(cmd),
                _ = sleep_until(next_timer.unwrap_or_else(Instant::now)), if next_timer.is_some() => Input::Timers,
                received = socket.recv_from(&mut buf) => Input::Datagram(received),
                _ = sleep_until(self.rejoin_at), if !self.active && !self.leaving => Input::Rejoin,
                _ = sleep_until(self.push_pull_at), if !self.leaving => Input::PushPull,
            };
            match input {
                Input::Cmd(None) => break,
                Input::Cmd(Some(Cmd::Leave(done))) => {
                    self.leave().await;
                    let _ = done.send(());
                    break;
                }
                Input::Cmd(Some(cmd)) => self.handle_cmd(cmd),
                Input::Timers => self.fire_timers(),
                Input::Datagram(Ok((len, from))) => self.handle_datagram(&buf[..len], from),
                Input::Datagram(Err(e)) => debug!(error = %e, "udp receive failed"),
                Input::Rejoin => self.rejoin(),
                Input::PushPull => self.start_push_pull(),
            }
            self.flush().await;
        }
    }

    fn me(&self) -> &NodeId {
        self.foca.identity()
    }

    fn handle_cmd(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Broadcast(payload, reply) => {
                let _ = reply.send(self.broadcast(&payload));
            }
            Cmd::ApplyMembers(members) => {
                let result = self
                    .foca
                    .apply_many(members.into_iter(), true, &mut self.effects);
                self.log_foca_error(result, None);
            }
            Cmd::Snapshot(reply) => {
                let _ = reply.send(self.snapshot());
            }
            Cmd::Leave(_) => {}
            Cmd::Forget(names) => {
                self.forgotten = names;
                self.publish();
            }
            Cmd::Join(addrs) => {
                for addr in addrs {
                    if !self.seeds.contains(&addr) && self.seeds.len() < MAX_SEEDS {
                        self.seeds.push(addr);
                    }
                    let target = NodeId {
                        name: String::new(),
                        addr,
                        epoch: 0,
                    };
                    let result = self.foca.announce(target, &mut self.effects);
                    self.log_foca_error(result, None);
                }
            }
        }
    }

    fn broadcast(&mut self, payload: &[u8]) -> Result<(), Error> {
        if payload.len() > MAX_BROADCAST {
            return Err(Error::BroadcastTooLarge {
                size: payload.len(),
                limit: MAX_BROADCAST,
            });
        }
        let backlog = self.foca.custom_broadcast_backlog();
        if backlog >= MAX_BROADCAST_BACKLOG {
            return Err(Error::BroadcastBacklogFull(backlog));
        }
        self.broadcast_seq += 1;
        let item = encode_item(self.broadcast_origin, self.broadcast_seq, payload);
        self.foca
            .add_broadcast(&item)
            .map_err(|e| Error::Stream(format!("broadcast rejected by foca: {e}")))?;
        // Push at once instead of waiting for the next gossip tick.
        let result = self.foca.broadcast(&mut self.effects);
        self.log_foca_error(result, None);
        Ok(())
    }

    fn snapshot(&self) -> PushPull {
        let mut members: Vec<_> = self.foca.iter_membership_state().cloned().collect();
        members.push(foca::Member::alive(self.me().clone()));
        PushPull { members }
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, timer))) = self.timers.pop() else {
                break;
            };
            let result = self.foca.handle_timer(timer, &mut self.effects);
            self.log_foca_error(result, None);
        }
    }

    fn handle_datagram(&mut self, data: &[u8], from: SocketAddr) {
        self.stats.received(data.len());
        let now = unix_ms();
        let opened = match self
            .envelope
            .open_datagram(data, MAX_DATAGRAM, now, &mut self.replays)
        {
            Ok(opened) => opened,
            Err(e) => return self.reject(from, Rejected::Unopened, &e.to_string()),
        };
        // Whatever its freshness, it was sealed with the key at that time
        // by the sender's clock.
        self.stats.clock_seen(from, opened.sent_ms, now);
        let offset = i128::from(opened.sent_ms) - i128::from(now);
        let at = std::time::Instant::now();
        match opened.fresh {
            Ok(()) => {
                self.peer_keys.heard(from, opened.keys);
                if offset.unsigned_abs() > u128::from(CLOCK_WARN_MS)
                    && self.clock_warned.should_log(from, at)
                {
                    warn!(peer = %from, offset_ms = offset as i64, "peer's clock is off from this one by more than 1 s");
                }
            }
            Err(Stale::Replayed) => {
                return self.reject(from, Rejected::Replayed, &Stale::Replayed.to_string());
            }
            Err(stale) => {
                self.stats.rejected(Rejected::Stale);
                if self.skewed.should_log(from, at) {
                    error!(peer = %from, offset_ms = offset as i64, error = %stale, "datagram refused: stale");
                }
                // Tell the sender, so that it knows its clock (or ours) is
                // off, unless this is such a notice itself; at most once a
                // second per address.
                match opened.payload.split_first() {
                    Some((&TAG_CLOCK, agreeing)) => {
                        let agreeing = agreeing.first().copied().unwrap_or(0);
                        self.stats.refused_by(from, u32::from(agreeing));
                    }
                    _ if self.notified.should_log(from, at) => {
                        let agreeing = u8::try_from(self.stats.clock_agreeing()).unwrap_or(u8::MAX);
                        self.effects.out.push((from, vec![TAG_CLOCK, agreeing]));
                    }
                    _ => {}
                }
                return;
            }
        }
        let plain = opened.payload;
        match plain.split_first() {
            Some((&TAG_SWIM, swim)) => {
                let result = self.foca.handle_data(swim, &mut self.effects);
                self.log_foca_error(result, Some(from));
            }
            Some((&TAG_LEAVE, notice)) => match postcard::from_bytes::<NodeId>(notice) {
                // Sealed with the cluster key, so it comes from a member.
                Ok(id) => {
                    self.left.insert(id.clone());
                    let result = self.foca.apply_many(
                        std::iter::once(foca::Member::down(id)),
                        true,
                        &mut self.effects,
                    );
                    self.log_foca_error(result, Some(from));
                }
                Err(e) => self.reject(from, Rejected::Malformed, &format!("bad leave notice: {e}")),
            },
            // (Its send time was noted above.)
            Some((&TAG_CLOCK, _)) => {}
            Some((tag, _)) => self.reject(
                from,
                Rejected::Malformed,
                &format!("unknown datagram tag {tag}"),
            ),
            None => self.reject(from, Rejected::Malformed, "empty datagram"),
        }
    }

    fn reject(&mut self, from: SocketAddr, reason: Rejected, why: &str) {
        self.stats.rejected(reason);
        // A WARN an operator sees (a peer with the wrong key, say), at most
        // once a minute per peer: a flood can't flood the log.
        if self.rejects.should_log(from, std::time::Instant::now()) {
            warn!(peer = %from, error = why, "packet rejected");
        }
    }

    fn log_foca_error(&mut self, result: Result<(), foca::Error>, from: Option<SocketAddr>) {
        let Err(e) = result else { return };
        match (&e, from) {
            (
                foca::Error::Decode(_) | foca::Error::MalformedPacket | foca::Error::DataTooBig,
                Some(from),
            ) => {
                self.reject(from, Rejected::Malformed, &e.to_string());
            }
            _ => debug!(error = %e, "foca"),
        }
    }

    fn rejoin(&mut self) {
        let me = self.me().addr;
        let seeds = self.seeds.iter().filter(|s| **s != me).map(|addr| NodeId {
            name: String::new(),
            addr: *addr,
            epoch: 0,
        });
        let down = self
            .view
            .list()
            .into_iter()
            .filter(|m| m.state == MemberState::Down)
            .map(|m| m.id);
        let targets: Vec<NodeId> = seeds.chain(down).collect();
        for target in targets {
            let result = self.foca.announce(target, &mut self.effects);
            self.log_foca_error(result, None);
        }
        let jitter = self.rng.random_range(0.8..1.2);
        self.rejoin_at = Instant::now() + self.rejoin_delay.mul_f64(jitter);
        self.rejoin_delay = (self.rejoin_delay * 2).min(self.timings.rejoin_max);
    }

    fn start_push_pull(&mut self) {
        let jitter = self.rng.random_range(0.9..1.1);
        self.push_pull_at = Instant::now() + self.timings.push_pull_period.mul_f64(jitter);
        // Down members too: that is how two halves of a healed partition meet.
        let candidates: Vec<SocketAddr> = self
            .view
            .list()
            .into_iter()
            .filter(|m| m.state != MemberState::Left)
            .map(|m| m.id.addr)
            .collect();
        if candidates.is_empty() {
            return;
        }
        let peer = candidates[self.rng.random_range(0..candidates.len())];
        let ours = self.snapshot();
        let (envelope, stats, limit) =
            (self.envelope.clone(), self.stats.clone(), self.frame_limit);
        let cmds = self.cmd_tx.clone();
        tokio::spawn(async move {
            let round = async {
                let mut stream = SealedStream::connect(
                    peer,
                    Channel::PushPull,
                    envelope,
                    limit,
                    stats,
                    PUSH_PULL_TIMEOUT,
                )
                .await?;
                stream.send(&ours).await?;
                stream.recv_within::<PushPull>(PUSH_PULL_TIMEOUT).await
            };
            match round.await {
                Ok(theirs) => {
                    if let Some(cmds) = cmds.upgrade() {
                        let _ = cmds.try_send(Cmd::ApplyMembers(theirs.into_bounded()));
                    }
                }
                Err(Error::Rejected(_)) => {}
                Err(e) => debug!(peer = %peer, error = %e, "push-pull failed"),
            }
        });
    }

    async fn leave(&mut self) {
        self.leaving = true;
        let notice = postcard::to_stdvec(self.me()).unwrap_or_default();
        let mut plain = Vec::with_capacity(notice.len() + 1);
        plain.push(TAG_LEAVE);
        plain.extend_from_slice(&notice);
        // Tell every live member directly, so each reports `left` at once
        // instead of hearing a `down` second-hand.
        let now = unix_ms();
        let to: Vec<SocketAddr> = self.foca.iter_members().map(|m| m.id().addr).collect();
        for addr in to {
            let sealed = self
                .envelope
                .seal_datagram(&plain, now, self.peer_keys.of(addr));
            if let Ok(n) = self.socket.send_to(&sealed, addr).await {
                self.stats.sent(n);
            }
        }
        let result = self.foca.leave_cluster(&mut self.effects);
        self.log_foca_error(result, None);
        self.flush().await;
    }

    /// Applies foca's effects: timers, datagrams, notifications; then
    /// refreshes the view and publishes what changed.
    async fn flush(&mut self) {
        let now = Instant::now();
        for (after, timer) in self.effects.timers.drain(..) {
            self.timers.push(Reverse((now + after, timer)));
        }
        let out: Vec<_> = self.effects.out.drain(..).collect();
        for (to, plain) in out {
            let sealed = self
                .envelope
                .seal_datagram(&plain, unix_ms(), self.peer_keys.of(to));
            match self.socket.send_to(&sealed, to).await {
                Ok(n) => self.stats.sent(n),
                Err(e) => debug!(peer = %to, error = %e, "udp send failed"),
            }
        }
        let notes: Vec<_> = self.effects.notes.drain(..).collect();
        for note in notes {
            self.handle_notification(note);
        }
        self.publish();
    }

    fn handle_notification(&mut self, note: OwnedNotification<NodeId>) {
        match note {
            OwnedNotification::Active => {
                if !self.active {
                    debug!(node = %self.me().name, "joined the cluster");
                }
                self.active = true;
            }
            OwnedNotification::Idle => {
                if !self.leaving {
                    warn!(node = %self.me().name, "no live members left; announcing to seeds");
                }
                self.active = false;
                self.rejoin_delay = self.timings.rejoin_min;
                self.rejoin_at = Instant::now();
            }
            OwnedNotification::Rejoin(id) => {
                info!(node = %id.name, epoch = id.epoch, "declared down by the cluster; rejoined with a new epoch");
                if let Some(dir) = self.data_dir.clone() {
                    let epoch = id.epoch;
                    tokio::task::spawn_blocking(move || {
                        if let Err(e) = epoch::store_epoch(&dir, epoch) {
                            error!(error = %e, "cannot persist the epoch");
                        }
                    });
                }
            }
            OwnedNotification::Defunct if !self.leaving => {
                error!(node = %self.me().name, "identity exhausted; this agent can no longer take part");
            }
            _ => {}
        }
    }

    /// Derives the view from foca, logs and sends one event per change, and
    /// publishes the member list if it changed.
    fn publish(&mut self) {
        let me = self.me().addr;
        let events = self.view.update(
            me,
            self.foca
                .iter_membership_state()
                .map(|m| (m.id(), m.state())),
            &self.left,
            &self.forgotten,
            unix_ms(),
        );
        let members = self.view.active() + 1;
        for event in events {
            let id = event.id();
            let (node, addr, epoch) = (&id.name, id.addr, id.epoch);
            match &event {
                MemberEvent::Up(id) => {
                    info!(node = %node, addr = %addr, epoch, members, "member up");
                    if id.name == self.me().name && id.addr != self.me().addr {
                        error!(node = %node, addr = %addr, "another live member uses this node's name; names must be unique");
                    }
                }
                MemberEvent::Suspect(_) => {
                    info!(node = %node, addr = %addr, epoch, members, "member suspect")
                }
                MemberEvent::Down(_) => {
                    info!(node = %node, addr = %addr, epoch, members, "member down")
                }
                MemberEvent::Left(_) => {
                    info!(node = %node, addr = %addr, epoch, members, "member left")
                }
            }
            if self.events.try_send(event).is_err() {
                self.stats.dropped_notice();
            }
        }
        let states: HashSet<&NodeId> = self.foca.iter_membership_state().map(|m| m.id()).collect();
        self.left.retain(|id| states.contains(id));
        let mut list = vec![MemberView {
            id: self.me().clone(),
            state: if self.leaving {
                MemberState::Left
            } else {
                MemberState::Alive
            },
            since_ms: self.me().epoch,
        }];
        list.extend(self.view.list());
        self.members.send_if_modified(|current| {
            if *current == list {
                false
            } else {
                *current = list;
                true
            }
        });
    }
}

/// A peer's clock further off than this is worth a warning.
const CLOCK_WARN_MS: u64 = 1_000;

/// The wall clock, in unix ms: datagrams carry it.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
