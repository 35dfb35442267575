//! [`TableHandle`]: how the rest of the agent talks to the table task.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use mob_scheduler::node::{Reply, Request, Source};
use mob_scheduler::{Node, Records};
use tokio::sync::{mpsc, oneshot};

/// Counters of the table task.
#[derive(Debug, Default)]
pub(crate) struct TableStats {
    pub(crate) records: AtomicU64,
    pub(crate) deltas_received: AtomicU64,
    pub(crate) deltas_rejected: AtomicU64,
    pub(crate) records_rejected: AtomicU64,
    pub(crate) anti_entropy_rounds: AtomicU64,
    pub(crate) anti_entropy_failures: AtomicU64,
    pub(crate) forgotten: AtomicU64,
    pub(crate) save_failures: AtomicU64,
    /// Saves of the table file that succeeded.
    pub(crate) saves: AtomicU64,
}

/// A read of the node, run inside the table task.
pub(crate) type Read = Box<dyn FnOnce(&Node) + Send>;

/// What the table task is asked.
pub(crate) enum Cmd {
    /// An operator's write; answered once saved.
    Request(Request, oneshot::Sender<Reply>),
    /// Look at the node (views, digests, owners).
    Read(Read),
    /// Records from an anti-entropy round; answered once merged.
    Merge(Source, Records, oneshot::Sender<()>),
    /// An anti-entropy round with a peer completed.
    Synced(SocketAddr),
    /// An anti-entropy round this node began failed.
    SyncFailed(SocketAddr),
    /// Save the table and stop.
    Shutdown(oneshot::Sender<()>),
}

/// The table task is gone (the agent is stopping).
#[derive(Debug, thiserror::Error)]
#[error("the table task has stopped")]
pub(crate) struct Stopped;

/// Talks to the table task. Cheap to clone.
#[derive(Clone)]
pub(crate) struct TableHandle {
    pub(crate) cmds: mpsc::Sender<Cmd>,
    pub(crate) stats: Arc<TableStats>,
}

impl TableHandle {
    async fn ask<T>(&self, cmd: impl FnOnce(oneshot::Sender<T>) -> Cmd) -> Result<T, Stopped> {
        let (tx, rx) = oneshot::channel();
        self.cmds.send(cmd(tx)).await.map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    /// An operator's write; the answer comes once it is on disk.
    pub(crate) async fn request(&self, request: Request) -> Result<Reply, Stopped> {
        self.ask(|tx| Cmd::Request(request, tx)).await
    }

    /// Reads the node: `read` runs in the table task, between inputs.
    pub(crate) async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Node) -> T + Send + 'static,
    ) -> Result<T, Stopped> {
        self.ask(|tx| {
            Cmd::Read(Box::new(move |node| {
                let _ = tx.send(read(node));
            }))
        })
        .await
    }

    /// Merges records from an anti-entropy round.
    pub(crate) async fn merge(&self, records: Records) -> Result<(), Stopped> {
        self.merge_from(Source::AntiEntropy, records).await
    }

    /// Merges records pushed by a peer, as `source`.
    pub(crate) async fn merge_from(&self, source: Source, records: Records) -> Result<(), Stopped> {
        self.ask(|tx| Cmd::Merge(source, records, tx)).await
    }

    /// Notes that an anti-entropy round with `peer` completed.
    pub(crate) async fn synced(&self, peer: SocketAddr) {
        let _ = self.cmds.send(Cmd::Synced(peer)).await;
    }

    /// Reports that a round this node began with `peer` failed.
    pub(crate) async fn sync_failed(&self, peer: SocketAddr) {
        let _ = self.cmds.send(Cmd::SyncFailed(peer)).await;
    }

    /// Saves the table and stops the task.
    pub(crate) async fn shutdown(&self) -> Result<(), Stopped> {
        self.ask(Cmd::Shutdown).await
    }
}
