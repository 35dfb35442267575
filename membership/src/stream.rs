//! Sealed TCP streams: length-delimited frames, each one a sealed postcard
//! message. Push-pull, anti-entropy and log fetching all use them; the first
//! frame of a stream is a [`Hello`] naming its channel.
//!
//! # Replay
//!
//! The acceptor speaks first: a challenge of 16 random bytes, sealed with
//! each of its keys (a dialer that missed a key rotation holds only an
//! older one); both sides then seal with the key it opened with.
//! Every later frame, both ways, starts (inside the box) with that
//! challenge and its own sequence number in its direction, and a frame
//! with another challenge or out of sequence ends the stream. So a stream
//! recorded on the wire cannot be played again (the acceptor's challenge
//! is new), nor can frames of one stream be replayed into another or
//! within it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::Error;
use crate::envelope::{Envelope, OpenError};
use crate::key::KeyId;
use crate::keyring::MAX_KEYS;
use crate::stats::Stats;

/// The protocol a stream speaks, named by number in its first frame.
/// Membership serves push-pull; the agent serves the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// The membership exchange (0).
    PushPull,
    /// The table's anti-entropy rounds (1).
    AntiEntropy,
    /// Instance logs fetched from the node that runs them (2).
    Logs,
}

impl Channel {
    /// The number a [`Hello`] carries.
    pub const fn number(self) -> u16 {
        match self {
            Self::PushPull => 0,
            Self::AntiEntropy => 1,
            Self::Logs => 2,
        }
    }

    /// The channel a number names, if any.
    pub fn from_number(number: u16) -> Option<Self> {
        [Self::PushPull, Self::AntiEntropy, Self::Logs]
            .into_iter()
            .find(|c| c.number() == number)
    }
}

/// Default cap on one frame, envelope included.
pub const DEFAULT_FRAME_LIMIT: usize = 8 * 1024 * 1024;

/// Cap on a stream's first frame, read before the peer proved it holds
/// the key: the codec reserves what a frame header claims, so an
/// unauthenticated peer gets no more than this.
pub(crate) const HELLO_FRAME_LIMIT: usize = 1024;

/// The acceptor's first frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Challenge {
    nonce: [u8; 16],
}

/// One sealed box of a challenge frame, which holds one per key.
const CHALLENGE_BOX_LEN: usize = 16 + crate::envelope::OVERHEAD;

/// Bytes every frame after the challenge starts with: the challenge and
/// the frame's sequence number.
const BINDING_LEN: usize = 16 + 8;

/// First frame of every stream after the challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Which protocol the rest of the stream speaks.
    pub channel: u16,
}

/// A TCP stream whose frames are sealed with the cluster key.
pub struct SealedStream {
    framed: Framed<TcpStream, LengthDelimitedCodec>,
    envelope: Envelope,
    limit: usize,
    peer: SocketAddr,
    stats: Arc<Stats>,
    /// An accepted stream's slot among the concurrent ones, held for as
    /// long as the stream lives, whoever serves it.
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
    /// The acceptor's challenge, which every frame carries.
    session: [u8; 16],
    /// Frames sent and received so far (the next one's sequence number).
    sent: u64,
    received: u64,
    /// The key this stream seals with: the one the challenge (dialer) or
    /// the hello (acceptor) opened with; the primary until then.
    key: Option<KeyId>,
}

impl SealedStream {
    pub(crate) fn new(
        tcp: TcpStream,
        envelope: Envelope,
        limit: usize,
        stats: Arc<Stats>,
    ) -> Result<Self, Error> {
        let peer = tcp.peer_addr().map_err(|e| Error::Stream(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let codec = LengthDelimitedCodec::builder()
            .max_frame_length(limit)
            .new_codec();
        Ok(Self {
            framed: Framed::new(tcp, codec),
            envelope,
            limit,
            peer,
            stats,
            _permit: None,
            session: [0; 16],
            sent: 0,
            received: 0,
            key: None,
        })
    }

    /// The acceptor's side: sends a fresh challenge, which the peer's
    /// hello must carry.
    pub(crate) async fn accept(
        tcp: TcpStream,
        envelope: Envelope,
        limit: usize,
        stats: Arc<Stats>,
    ) -> Result<Self, Error> {
        let mut stream = Self::new(tcp, envelope, limit, stats)?;
        let nonce: [u8; 16] = rand::random();
        let plain =
            postcard::to_stdvec(&Challenge { nonce }).map_err(|e| Error::Stream(e.to_string()))?;
        // Sealed with each key: the dialer may hold only an older one.
        let sealed: Vec<u8> = stream.envelope.seal_each(&plain).concat();
        stream.stats.stream_sent(sealed.len() + 4);
        stream
            .framed
            .send(Bytes::from(sealed))
            .await
            .map_err(|e| Error::Stream(format!("send to {}: {e}", stream.peer)))?;
        stream.session = nonce;
        Ok(stream)
    }

    /// Changes the frame limit: raised once the peer said hello, lowered
    /// by a protocol whose messages are smaller.
    pub fn set_frame_limit(&mut self, limit: usize) {
        self.framed.codec_mut().set_max_frame_length(limit);
        self.limit = limit;
    }

    /// Ties a concurrency permit to the stream's life.
    pub(crate) fn hold(&mut self, permit: tokio::sync::OwnedSemaphorePermit) {
        self._permit = Some(permit);
    }

    /// Connects to `addr` and opens `channel`, within `timeout`.
    pub(crate) async fn connect(
        addr: SocketAddr,
        channel: Channel,
        envelope: Envelope,
        limit: usize,
        stats: Arc<Stats>,
        timeout: Duration,
    ) -> Result<Self, Error> {
        let tcp = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| Error::Stream(format!("connect to {addr} timed out")))?
            .map_err(|e| Error::Stream(format!("connect to {addr}: {e}")))?;
        let mut stream = Self::new(tcp, envelope, limit, stats)?;
        let challenge = tokio::time::timeout(timeout, stream.framed.next())
            .await
            .map_err(|_| Error::Stream(format!("{addr} sent no challenge in time")))?;
        let frame = match challenge {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => return Err(stream.reject(format!("challenge from {addr}: {e}"))),
            None => return Err(Error::Stream(format!("{addr} closed the stream"))),
        };
        stream.stats.stream_received(frame.len() + 4);
        let challenge = match stream.open_challenge(&frame) {
            Ok((plain, key)) => {
                stream.key = Some(key);
                postcard::from_bytes::<Challenge>(&plain)
                    .map_err(|e| stream.reject(format!("undecodable challenge from {addr}: {e}")))?
            }
            Err(e) => return Err(stream.reject(format!("challenge from {addr}: {e}"))),
        };
        stream.session = challenge.nonce;
        stream
            .send(&Hello {
                channel: channel.number(),
            })
            .await?;
        Ok(stream)
    }

    /// Opens the first of a challenge's boxes that opens with a key held.
    fn open_challenge(&self, frame: &[u8]) -> Result<(Vec<u8>, KeyId), OpenError> {
        let mut last = OpenError::Truncated(frame.len());
        for sealed in frame.chunks(CHALLENGE_BOX_LEN).take(MAX_KEYS) {
            match self.envelope.open_keyed(sealed, CHALLENGE_BOX_LEN) {
                Ok(opened) => return Ok(opened),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The remote address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Sends one message. A message larger than the frame limit is an error
    /// and nothing is sent.
    pub async fn send<T: Serialize>(&mut self, message: &T) -> Result<(), Error> {
        let mut plain = Vec::with_capacity(BINDING_LEN + 64);
        plain.extend_from_slice(&self.session);
        plain.extend_from_slice(&self.sent.to_le_bytes());
        let plain =
            postcard::to_extend(message, plain).map_err(|e| Error::Stream(e.to_string()))?;
        let sealed = self.envelope.seal_with(self.key, &plain);
        if sealed.len() > self.limit {
            return Err(Error::Stream(format!(
                "frame of {} bytes exceeds the limit of {}",
                sealed.len(),
                self.limit
            )));
        }
        // Frame plus its 4-byte length prefix.
        self.stats.stream_sent(sealed.len() + 4);
        self.sent += 1;
        self.framed
            .send(Bytes::from(sealed))
            .await
            .map_err(|e| Error::Stream(format!("send to {}: {e}", self.peer)))
    }

    /// Receives one message. `Ok(None)` when the peer closed the stream
    /// cleanly; a frame that fails to open or decode is counted as rejected
    /// and ends the stream with an error.
    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<Option<T>, Error> {
        let frame = match self.framed.next().await {
            None => return Ok(None),
            Some(Ok(frame)) => {
                self.stats.stream_received(frame.len() + 4);
                frame
            }
            // A frame header over the limit; other errors are the connection's.
            Some(Err(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                return Err(self.reject(format!("from {}: {e}", self.peer)));
            }
            Some(Err(e)) => return Err(Error::Stream(format!("from {}: {e}", self.peer))),
        };
        let plain = match self.envelope.open_keyed(&frame, self.limit) {
            // The acceptor answers with the key the dialer's first frame
            // opened with: one the dialer holds.
            Ok((plain, key)) => {
                self.key.get_or_insert(key);
                plain
            }
            Err(e) => return Err(self.reject(format!("frame from {}: {e}", self.peer))),
        };
        let mut expected = [0u8; BINDING_LEN];
        expected[..16].copy_from_slice(&self.session);
        expected[16..].copy_from_slice(&self.received.to_le_bytes());
        if plain.get(..BINDING_LEN) != Some(&expected[..]) {
            return Err(self.reject(format!(
                "frame from {} out of place (another stream's, or out of sequence): a replay",
                self.peer
            )));
        }
        self.received += 1;
        postcard::from_bytes(&plain[BINDING_LEN..])
            .map(Some)
            .map_err(|e| self.reject(format!("undecodable frame from {}: {e}", self.peer)))
    }

    /// Counts a rejected frame and logs it (rate-limited).
    fn reject(&self, why: String) -> Error {
        if self.stats.stream_rejected(self.peer) {
            tracing::debug!(peer = %self.peer, error = %why, "stream frame rejected");
        }
        Error::Rejected(why)
    }

    /// Receives one message within `timeout`; a closed stream is an error.
    pub async fn recv_within<T: DeserializeOwned>(
        &mut self,
        timeout: Duration,
    ) -> Result<T, Error> {
        match tokio::time::timeout(timeout, self.recv()).await {
            Err(_) => Err(Error::Stream(format!("{} timed out", self.peer))),
            Ok(Ok(None)) => Err(Error::Stream(format!("{} closed the stream", self.peer))),
            Ok(Ok(Some(message))) => Ok(message),
            Ok(Err(e)) => Err(e),
        }
    }
}

/// A stream a peer opened on a channel the agent (not membership) serves.
pub struct IncomingStream {
    /// The channel from the peer's [`Hello`].
    pub channel: Channel,
    /// The stream, past its hello.
    pub stream: SealedStream,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ClusterKey;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    /// A server-side stream at the hello limit, and the raw client socket.
    async fn pair(key: &ClusterKey) -> (SealedStream, TcpStream, Arc<Stats>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (tcp, _) = listener.accept().await.unwrap();
        let stats = Arc::new(Stats::default());
        let server =
            SealedStream::accept(tcp, Envelope::new(key), HELLO_FRAME_LIMIT, stats.clone())
                .await
                .unwrap();
        (server, client, stats)
    }

    /// The client's side of [`pair`]: reads the challenge, as `connect` does.
    async fn client_of(client: TcpStream, key: &ClusterKey, stats: Arc<Stats>) -> SealedStream {
        let mut stream =
            SealedStream::new(client, Envelope::new(key), DEFAULT_FRAME_LIMIT, stats).unwrap();
        let frame = stream.framed.next().await.unwrap().unwrap();
        let (plain, key) = stream.open_challenge(&frame).unwrap();
        stream.key = Some(key);
        stream.session = postcard::from_bytes::<Challenge>(&plain).unwrap().nonce;
        stream
    }

    #[tokio::test]
    async fn before_hello_a_big_frame_header_is_refused_unread() {
        let key = ClusterKey::generate();
        let (mut server, mut client, stats) = pair(&key).await;
        // Claims 8 MiB: refused on the header, nothing that size reserved.
        client.write_all(&(8u32 << 20).to_be_bytes()).await.unwrap();
        let err = server.recv::<Hello>().await.unwrap_err();
        assert!(matches!(err, Error::Rejected(_)), "{err}");
        assert_eq!(stats.snapshot().packets_rejected, 1);
    }

    #[tokio::test]
    async fn a_dialer_that_missed_a_rotation_talks_with_the_key_both_hold() {
        let (old, new) = (ClusterKey::generate(), ClusterKey::generate());
        let mut ring = crate::Keyring::single(old.clone());
        ring.install(new.clone()).unwrap();
        ring.use_key(&new.fingerprint()).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(Stats::default());
        let server_side = {
            let stats = stats.clone();
            tokio::spawn(async move {
                let (tcp, _) = listener.accept().await.unwrap();
                let envelope = Envelope::with_keyring(&ring);
                let mut stream = SealedStream::accept(tcp, envelope, HELLO_FRAME_LIMIT, stats)
                    .await
                    .unwrap();
                let hello: Option<Hello> = stream.recv().await.unwrap();
                stream.send(&"answer".to_owned()).await.unwrap();
                hello
            })
        };
        // Holds the old key only: opens the challenge's second box, and
        // the answer comes sealed with the old key.
        let mut dialer = SealedStream::connect(
            addr,
            Channel::AntiEntropy,
            Envelope::new(&old),
            DEFAULT_FRAME_LIMIT,
            Arc::new(Stats::default()),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!(
            dialer.recv::<String>().await.unwrap().as_deref(),
            Some("answer")
        );
        assert_eq!(
            server_side.await.unwrap(),
            Some(Hello {
                channel: Channel::AntiEntropy.number()
            })
        );
        assert_eq!(stats.snapshot().packets_rejected, 0);
        // A dialer with neither key opens no box.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let only_new = Envelope::new(&new);
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let _ = SealedStream::accept(tcp, only_new, HELLO_FRAME_LIMIT, stats).await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let refused = SealedStream::connect(
            addr,
            Channel::AntiEntropy,
            Envelope::new(&ClusterKey::generate()),
            DEFAULT_FRAME_LIMIT,
            Arc::new(Stats::default()),
            Duration::from_secs(5),
        )
        .await;
        assert!(matches!(refused, Err(Error::Rejected(_))));
    }

    #[tokio::test]
    async fn a_hello_under_another_key_is_rejected_and_counted() {
        let (mut server, client, stats) = pair(&ClusterKey::generate()).await;
        let mut other = SealedStream::new(
            client,
            Envelope::new(&ClusterKey::generate()),
            DEFAULT_FRAME_LIMIT,
            Arc::new(Stats::default()),
        )
        .unwrap();
        other.send(&Hello { channel: 1 }).await.unwrap();
        let err = server.recv::<Hello>().await.unwrap_err();
        assert!(matches!(err, Error::Rejected(_)), "{err}");
        assert_eq!(stats.snapshot().packets_rejected, 1);
        // The same key passes, and the limit can be raised after.
        let key = ClusterKey::generate();
        let (mut server, client, _) = pair(&key).await;
        let mut ours = client_of(client, &key, stats).await;
        ours.send(&Hello { channel: 7 }).await.unwrap();
        assert_eq!(
            server.recv::<Hello>().await.unwrap(),
            Some(Hello { channel: 7 })
        );
        server.set_frame_limit(DEFAULT_FRAME_LIMIT);
        ours.send(&vec![0u8; 100_000]).await.unwrap();
        assert_eq!(
            server.recv::<Vec<u8>>().await.unwrap().map(|v| v.len()),
            Some(100_000)
        );
    }

    #[tokio::test]
    async fn a_recorded_stream_played_again_is_refused() {
        let key = ClusterKey::generate();
        // Record what a client sends on one stream.
        let (mut server, client, _) = pair(&key).await;
        let mut ours = client_of(client, &key, Arc::new(Stats::default())).await;
        let mut recorded = Vec::new();
        for message in [1u16, 2, 3] {
            let before = ours.sent;
            ours.send(&Hello { channel: message }).await.unwrap();
            assert_eq!(ours.sent, before + 1);
            let frame = server.framed.next().await.unwrap().unwrap();
            recorded.push(frame.clone());
            // (Handed to the real reader too.)
            let plain = server.envelope.open(&frame, DEFAULT_FRAME_LIMIT).unwrap();
            assert_eq!(&plain[..16], &server.session);
            server.received += 1;
        }
        // Played to a new stream: its challenge is another.
        let (mut fresh, mut raw, stats) = pair(&key).await;
        let mut len = [0u8; 4];
        use tokio::io::AsyncReadExt;
        raw.read_exact(&mut len).await.unwrap();
        let mut challenge = vec![0u8; u32::from_be_bytes(len) as usize];
        raw.read_exact(&mut challenge).await.unwrap();
        raw.write_all(&(recorded[0].len() as u32).to_be_bytes())
            .await
            .unwrap();
        raw.write_all(&recorded[0]).await.unwrap();
        let err = fresh.recv::<Hello>().await.unwrap_err();
        assert!(matches!(err, Error::Rejected(_)), "{err}");
        assert_eq!(stats.snapshot().packets_rejected, 1);
        // Within its own stream, a frame again (out of sequence) is refused too.
        let (mut server, client, stats) = pair(&key).await;
        let mut ours = client_of(client, &key, Arc::new(Stats::default())).await;
        ours.send(&Hello { channel: 1 }).await.unwrap();
        let frame = server.framed.next().await.unwrap().unwrap();
        let plain = server.envelope.open(&frame, DEFAULT_FRAME_LIMIT).unwrap();
        assert_eq!(&plain[16..24], &0u64.to_le_bytes());
        server.received += 1;
        ours.sent = 0;
        ours.send(&Hello { channel: 1 }).await.unwrap();
        assert!(matches!(
            server.recv::<Hello>().await,
            Err(Error::Rejected(_))
        ));
        assert_eq!(stats.snapshot().packets_rejected, 1);
    }
}
