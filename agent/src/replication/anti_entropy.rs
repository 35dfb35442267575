//! Anti-entropy over a sealed stream, channel `AntiEntropy`:
//!
//! 0. initiator → peer: `Summary`, one hash of the whole digest; equal
//!    tables end the round here (`InSync`), so an idle cluster's rounds
//!    cost a few dozen bytes; otherwise the peer asks for the digest;
//! 1. initiator → peer: `Digest` (one hash per bucket of keys);
//! 2. peer → initiator: its records of the buckets that differ, in chunks,
//!    the last with `more = false`, naming the buckets;
//! 3. initiator merges, then sends its own records of those buckets the
//!    same way, less those the peer just sent; the peer merges.
//!
//! One round makes both tables equal to their merge (property-tested in
//! the scheduler crate).
//!
//! A push (a bulk write, or records learned by anti-entropy pushed on) is
//! one-way: `Push`, then `Records` chunks; the peer merges them and
//! answers `InSync`.
//!
//! The table task does the table work; this module only moves bytes, so a
//! slow peer never stalls the table.

use std::time::Duration;

use mob_membership::{Error, SealedStream};
use mob_scheduler::node::Source;
use mob_scheduler::{Digest, Records};
use serde::{Deserialize, Serialize};

use super::handle::{Stopped, TableHandle};

impl From<Stopped> for Error {
    fn from(_: Stopped) -> Self {
        Error::Stopped
    }
}

fn unexpected(expected: &str, got: &Message) -> Error {
    Error::Stream(format!(
        "anti-entropy: expected {expected}, got {}",
        name(got)
    ))
}
/// Target size of one chunk of records.
const CHUNK_BYTES: usize = 1024 * 1024;
/// Largest frame of a round: a chunk passes its target by one record at
/// most (a spec is at most 64 KiB).
const FRAME_LIMIT: usize = 2 * CHUNK_BYTES;
/// Most chunks accepted in one round: a round buffers at most
/// `MAX_CHUNKS x FRAME_LIMIT` = 64 MiB from a peer (a table of ~500,000
/// services).
const MAX_CHUNKS: usize = 32;
/// Time allowed for each message of a round.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Serialize, Deserialize)]
enum Message {
    Summary(u64),
    InSync,
    NeedDigest,
    Digest(Digest),
    Records {
        buckets: Vec<u16>,
        records: Records,
        more: bool,
    },
    /// A push: `Records` chunks follow, to merge; pushed on by the peer
    /// if `forward`.
    Push {
        forward: bool,
    },
}

/// The fuzz target's body: any bytes are a message of a round or
/// refused, and what decodes encodes back to bytes that decode to the
/// same encoding.
pub(crate) fn fuzz_frame(bytes: &[u8]) {
    let Ok(message) = postcard::from_bytes::<Message>(bytes) else {
        return;
    };
    let encoded = postcard::to_stdvec(&message).unwrap_or_default();
    let again = postcard::from_bytes::<Message>(&encoded).map(|m| postcard::to_stdvec(&m));
    assert!(
        matches!(again, Ok(Ok(ref bytes)) if *bytes == encoded),
        "{} does not encode back to itself",
        name(&message)
    );
}

/// Runs a round as the initiator.
pub(crate) async fn initiate(
    mut stream: SealedStream,
    table: &TableHandle,
) -> Result<usize, Error> {
    stream.set_frame_limit(FRAME_LIMIT);
    let digest = table.read(|n| n.table().digest()).await?;
    stream.send(&Message::Summary(digest.summary())).await?;
    match stream.recv_within(STEP_TIMEOUT).await? {
        Message::InSync => return Ok(0),
        Message::NeedDigest => {}
        other => return Err(unexpected("InSync or NeedDigest", &other)),
    }
    stream.send(&Message::Digest(digest)).await?;
    let (buckets, theirs) = receive_records(&mut stream).await?;
    let received = theirs.len();
    table.merge(theirs.clone()).await?;
    let wanted = buckets.clone();
    // What the peer just sent, it has: send back only the rest.
    let ours = table
        .read(move |n| n.table().records_in_except(&wanted, &theirs))
        .await?;
    send_records(&mut stream, buckets, ours).await?;
    Ok(received)
}

/// Pushes `records` to the peer; returns once it merged them.
pub(crate) async fn push(
    mut stream: SealedStream,
    records: Records,
    forward: bool,
) -> Result<(), Error> {
    stream.set_frame_limit(FRAME_LIMIT);
    stream.send(&Message::Push { forward }).await?;
    send_records(&mut stream, Vec::new(), records).await?;
    match stream.recv_within(STEP_TIMEOUT).await? {
        Message::InSync => Ok(()),
        other => Err(unexpected("InSync", &other)),
    }
}

/// Serves a round or a push a peer initiated.
pub(crate) async fn serve(mut stream: SealedStream, table: &TableHandle) -> Result<usize, Error> {
    stream.set_frame_limit(FRAME_LIMIT);
    let theirs = match stream.recv_within(STEP_TIMEOUT).await? {
        Message::Summary(theirs) => theirs,
        Message::Push { forward } => {
            let (_, pushed) = receive_records(&mut stream).await?;
            let received = pushed.len();
            table.merge_from(Source::of_push(forward), pushed).await?;
            stream.send(&Message::InSync).await?;
            return Ok(received);
        }
        other => return Err(unexpected("a summary or a push", &other)),
    };
    if theirs == table.read(|n| n.table().summary()).await? {
        stream.send(&Message::InSync).await?;
        return Ok(0);
    }
    stream.send(&Message::NeedDigest).await?;
    let digest = match stream.recv_within(STEP_TIMEOUT).await? {
        Message::Digest(digest) => digest,
        other => return Err(unexpected("a digest", &other)),
    };
    let (buckets, ours) = table
        .read(move |n| {
            let buckets = n.table().differing_buckets(&digest);
            let records = n.table().records_in(&buckets);
            (buckets, records)
        })
        .await?;
    send_records(&mut stream, buckets, ours).await?;
    let (_, theirs) = receive_records(&mut stream).await?;
    let received = theirs.len();
    table.merge(theirs).await?;
    Ok(received)
}

fn name(message: &Message) -> &'static str {
    match message {
        Message::Summary(_) => "Summary",
        Message::InSync => "InSync",
        Message::NeedDigest => "NeedDigest",
        Message::Digest(_) => "Digest",
        Message::Records { .. } => "Records",
        Message::Push { .. } => "Push",
    }
}

async fn send_records(
    stream: &mut SealedStream,
    buckets: Vec<u16>,
    records: Records,
) -> Result<(), Error> {
    let mut chunk = Vec::new();
    let mut size = 0;
    let mut records = records.into_iter().peekable();
    while let Some(record) = records.next() {
        size += postcard::experimental::serialized_size(&record).unwrap_or(0);
        chunk.push(record);
        if size >= CHUNK_BYTES && records.peek().is_some() {
            let message = Message::Records {
                buckets: Vec::new(),
                records: std::mem::take(&mut chunk),
                more: true,
            };
            stream.send(&message).await?;
            size = 0;
        }
    }
    stream
        .send(&Message::Records {
            buckets,
            records: chunk,
            more: false,
        })
        .await?;
    Ok(())
}

async fn receive_records(stream: &mut SealedStream) -> Result<(Vec<u16>, Records), Error> {
    let mut all = Vec::new();
    for _ in 0..MAX_CHUNKS {
        match stream.recv_within(STEP_TIMEOUT).await? {
            Message::Records {
                buckets,
                records,
                more,
            } => {
                all.extend(records);
                if !more {
                    return Ok((buckets, all));
                }
            }
            other => return Err(unexpected("records", &other)),
        }
    }
    Err(Error::Stream(format!(
        "anti-entropy: peer sent more than {MAX_CHUNKS} chunks"
    )))
}
