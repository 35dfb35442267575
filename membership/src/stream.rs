//! Sealed TCP streams: length-delimited frames, each one a sealed postcard
//! message. Push-pull, anti-entropy and log fetching all use them; the first
//! frame of a stream is a [`Hello`] naming its channel.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::Error;
use crate::envelope::Envelope;
use crate::stats::Stats;

/// Channel of the membership push-pull; other channels belong to the agent.
pub const PUSH_PULL: u16 = 0;

/// Default cap on one frame, envelope included.
pub const DEFAULT_FRAME_LIMIT: usize = 8 * 1024 * 1024;

/// First frame of every stream.
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
        })
    }

    /// Connects to `addr` and opens `channel`, within `timeout`.
    pub(crate) async fn connect(
        addr: SocketAddr,
        channel: u16,
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
        stream.send(&Hello { channel }).await?;
        Ok(stream)
    }

    /// The remote address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Sends one message. A message larger than the frame limit is an error
    /// and nothing is sent.
    pub async fn send<T: Serialize>(&mut self, message: &T) -> Result<(), Error> {
        let plain = postcard::to_stdvec(message).map_err(|e| Error::Stream(e.to_string()))?;
        let sealed = self.envelope.seal(&plain);
        if sealed.len() > self.limit {
            return Err(Error::Stream(format!(
                "frame of {} bytes exceeds the limit of {}",
                sealed.len(),
                self.limit
            )));
        }
        // Frame plus its 4-byte length prefix.
        self.stats.stream_sent(sealed.len() + 4);
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
            Some(Err(e)) => {
                self.stats.rejected();
                return Err(Error::Stream(format!("from {}: {e}", self.peer)));
            }
        };
        let plain = self.envelope.open(&frame, self.limit).map_err(|e| {
            self.stats.rejected();
            Error::Stream(format!("frame from {}: {e}", self.peer))
        })?;
        postcard::from_bytes(&plain).map(Some).map_err(|e| {
            self.stats.rejected();
            Error::Stream(format!("undecodable frame from {}: {e}", self.peer))
        })
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
    pub channel: u16,
    /// The stream, past its hello.
    pub stream: SealedStream,
}
