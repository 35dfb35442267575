//! Instance logs: stdout and stderr of each instance, one file per
//! instance (`<dir>/<service>.<slot>.log`), each line prefixed with the time
//! and the stream, rotated by size (`.log.1`, `.log.2`, ...).
//!
//! The child is never blocked by a slow disk: lines go through a queue
//! bounded in lines and in bytes to a writer task; when it is full they are
//! dropped, and a marker line says how many. Output is read as bytes: a line
//! that is not UTF-8 is kept with its bad bytes replaced (U+FFFD), never a
//! reason to stop reading the pipe.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use tokio::io::AsyncRead;
use tokio::sync::mpsc;
use tokio_util::codec::{AnyDelimiterCodec, AnyDelimiterCodecError, FramedRead};

/// Default size of one log file before rotation.
pub const DEFAULT_MAX_BYTES: u64 = 10 * 1024 * 1024;
/// Default number of files kept (the current one included).
pub const DEFAULT_FILES: usize = 3;
/// Longest line kept; longer ones are cut.
pub const MAX_LINE: usize = 64 * 1024;
/// Lines queued between the pipes and the writer.
const QUEUE: usize = 4096;
/// Bytes queued between the pipes and the writer.
const QUEUE_BYTES: usize = 4 * 1024 * 1024;

/// Where and how big.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Directory of the log files.
    pub dir: PathBuf,
    /// Size of one file before rotation.
    pub max_bytes: u64,
    /// Files kept, the current one included.
    pub files: usize,
}

impl LogConfig {
    /// Defaults (10 MiB x 3) under `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            max_bytes: DEFAULT_MAX_BYTES,
            files: DEFAULT_FILES,
        }
    }

    /// The current log file of an instance.
    pub fn path(&self, service: &str, slot: u32) -> PathBuf {
        self.dir.join(format!("{service}.{slot}.log"))
    }
}

/// Which pipe a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// stdout.
    Stdout,
    /// stderr.
    Stderr,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

/// The sending side of one instance's log: cheap to clone, never blocks.
#[derive(Clone)]
pub struct LogSink {
    lines: mpsc::Sender<(Stream, String)>,
    dropped: Arc<AtomicU64>,
    queued: Arc<AtomicUsize>,
}

impl LogSink {
    /// Opens (appending) the log of `service.slot` and starts its writer.
    pub fn open(config: &LogConfig, service: &str, slot: u32) -> std::io::Result<Self> {
        std::fs::create_dir_all(&config.dir)?;
        let writer = Writer::open(config.path(service, slot), config.max_bytes, config.files)?;
        let (lines, rx) = mpsc::channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let queued = Arc::new(AtomicUsize::new(0));
        tokio::spawn(writer.run(rx, dropped.clone(), queued.clone()));
        Ok(Self {
            lines,
            dropped,
            queued,
        })
    }

    /// Queues a line; drops it (counted) if the writer is behind.
    pub fn line(&self, stream: Stream, line: String) {
        let len = line.len();
        let full = self.queued.fetch_add(len, Ordering::Relaxed) + len > QUEUE_BYTES;
        if full || self.lines.try_send((stream, line)).is_err() {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Reads lines from `pipe` until it closes.
    pub async fn pump(self, stream: Stream, pipe: impl AsyncRead + Unpin) {
        let codec = AnyDelimiterCodec::new_with_max_length(b"\n".to_vec(), Vec::new(), MAX_LINE);
        let mut lines = FramedRead::new(pipe, codec);
        while let Some(line) = lines.next().await {
            match line {
                Ok(bytes) => {
                    let bytes = bytes.strip_suffix(b"\r").unwrap_or(&bytes);
                    self.line(stream, String::from_utf8_lossy(bytes).into_owned());
                }
                Err(AnyDelimiterCodecError::MaxChunkLengthExceeded) => {
                    self.line(
                        stream,
                        format!("[mob: line longer than {MAX_LINE} bytes cut]"),
                    );
                }
                Err(AnyDelimiterCodecError::Io(_)) => break,
            }
        }
    }
}

/// Appends lines to a file, rotating it by size.
struct Writer {
    path: PathBuf,
    file: std::fs::File,
    size: u64,
    max_bytes: u64,
    files: usize,
}

impl Writer {
    fn open(path: PathBuf, max_bytes: u64, files: usize) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path,
            file,
            size,
            max_bytes,
            files: files.max(1),
        })
    }

    async fn run(
        mut self,
        mut rx: mpsc::Receiver<(Stream, String)>,
        dropped: Arc<AtomicU64>,
        queued: Arc<AtomicUsize>,
    ) {
        let mut lines = Vec::new();
        while let Some(first) = rx.recv().await {
            // Batch what is queued into one blocking write.
            let now = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
            lines.clear();
            let lost = dropped.swap(0, Ordering::Relaxed);
            if lost > 0 {
                lines.push(format!(
                    "{now} mob [mob: {lost} lines dropped, the log writer fell behind]\n"
                ));
            }
            let mut next = Some(first);
            while let Some((stream, line)) = next.take() {
                queued.fetch_sub(line.len(), Ordering::Relaxed);
                lines.push(format!("{now} {} {line}\n", stream.as_str()));
                if lines.len() < 512 {
                    next = rx.try_recv().ok();
                }
            }
            // Not block_in_place: that retires the current worker thread, and
            // instances forked from it would get their parent-death signal
            // when it exits.
            let batch = std::mem::take(&mut lines);
            let job = tokio::task::spawn_blocking(move || {
                let result = self.write(&batch);
                (self, batch, result)
            });
            let Ok((writer, batch, result)) = job.await else {
                return;
            };
            self = writer;
            lines = batch;
            if let Err(e) = result {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot write instance log");
            }
        }
    }

    fn write(&mut self, lines: &[String]) -> std::io::Result<()> {
        let mut buf = Vec::new();
        for line in lines {
            let pending = self.size + buf.len() as u64;
            if pending > 0 && pending + line.len() as u64 > self.max_bytes {
                self.file.write_all(&buf)?;
                buf.clear();
                self.rotate()?;
            }
            buf.extend_from_slice(line.as_bytes());
        }
        self.file.write_all(&buf)?;
        self.size += buf.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        for i in (1..self.files).rev() {
            let from = if i == 1 {
                self.path.clone()
            } else {
                rotated(&self.path, i - 1)
            };
            if from.exists() {
                std::fs::rename(&from, rotated(&self.path, i))?;
            }
        }
        if self.files == 1 {
            std::fs::remove_file(&self.path)?;
        }
        self.file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

fn rotated(path: &Path, i: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{i}"));
    PathBuf::from(name)
}

/// The last `n` lines of an instance's log, oldest first, reading rotated
/// files as far back as needed.
pub fn tail(
    config: &LogConfig,
    service: &str,
    slot: u32,
    n: usize,
) -> std::io::Result<Vec<String>> {
    let current = config.path(service, slot);
    let mut paths = vec![current.clone()];
    paths.extend((1..config.files).map(|i| rotated(&current, i)));
    let mut lines: Vec<String> = Vec::new();
    for path in paths {
        if lines.len() >= n {
            break;
        }
        let text = match std::fs::read(&path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let mut older: Vec<String> = text.lines().map(str::to_owned).collect();
        older.append(&mut lines);
        lines = older;
    }
    let skip = lines.len().saturating_sub(n);
    Ok(lines.split_off(skip))
}

/// Follows an instance's log: every complete line appended after `from`
/// (a byte offset into the current file; a rotation restarts at 0) is sent
/// on `out`, until `out` is closed.
pub async fn follow(path: PathBuf, mut from: u64, out: mpsc::Sender<String>) {
    let mut partial = String::new();
    loop {
        let len = tokio::fs::metadata(&path).await.map_or(0, |m| m.len());
        if len < from {
            from = 0; // rotated
        }
        if len > from {
            if let Ok(bytes) = read_range(&path, from, len).await {
                from = len;
                partial.push_str(&String::from_utf8_lossy(&bytes));
                while let Some(end) = partial.find('\n') {
                    let line: String = partial.drain(..=end).collect();
                    if out
                        .send(line.trim_end_matches('\n').to_owned())
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        } else if out.is_closed() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn read_range(path: &Path, from: u64, to: u64) -> std::io::Result<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut file = tokio::fs::File::open(path).await?;
    file.seek(std::io::SeekFrom::Start(from)).await?;
    let mut buf = vec![
        0;
        usize::try_from(to - from)
            .unwrap_or(0)
            .min(16 * 1024 * 1024)
    ];
    file.read_exact(&mut buf).await?;
    Ok(buf)
}

/// Current size of an instance's log file (where following starts).
pub fn current_len(config: &LogConfig, service: &str, slot: u32) -> u64 {
    std::fs::metadata(config.path(service, slot)).map_or(0, |m| m.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn both_streams_land_prefixed_and_rotate_at_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            dir: dir.path().to_owned(),
            max_bytes: 2_000,
            files: 3,
        };
        let sink = LogSink::open(&config, "svc", 0).unwrap();
        let (out_w, out_r) = tokio::io::duplex(64 * 1024);
        let (err_w, err_r) = tokio::io::duplex(64 * 1024);
        let pumps = tokio::spawn({
            let sink = sink.clone();
            async move {
                tokio::join!(
                    sink.clone().pump(Stream::Stdout, out_r),
                    sink.pump(Stream::Stderr, err_r)
                );
            }
        });
        {
            use tokio::io::AsyncWriteExt;
            let (mut out_w, mut err_w) = (out_w, err_w);
            for i in 0..100 {
                out_w
                    .write_all(format!("out line {i:03}\n").as_bytes())
                    .await
                    .unwrap();
            }
            // Not UTF-8: kept, and the lines after it still come.
            err_w.write_all(b"bad \xff byte\r\n").await.unwrap();
            err_w.write_all(b"an error\n").await.unwrap();
        }
        pumps.await.unwrap();
        drop(sink);
        let path = config.path("svc", 0);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let all = tail(&config, "svc", 0, 1000).unwrap();
            if all.iter().any(|l| l.contains("out line 099"))
                && all.iter().any(|l| l.contains("an error"))
            {
                assert!(
                    all.iter().any(|l| l.ends_with("stderr bad \u{FFFD} byte")),
                    "{all:?}"
                );
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "lines never arrived: {all:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let last = tail(&config, "svc", 0, 1).unwrap();
        assert_eq!(last.len(), 1);
        let err_line = tail(&config, "svc", 0, 1000)
            .unwrap()
            .into_iter()
            .find(|l| l.contains("an error"))
            .unwrap();
        assert!(err_line.contains(" stderr an error"), "{err_line}");
        // 100 lines of ~45 bytes = 4.5 kB at 2 kB per file: rotated, 3 files
        // at most, none much over the limit.
        assert!(rotated(&path, 1).exists());
        assert!(!rotated(&path, 3).exists());
        for p in [path.clone(), rotated(&path, 1)] {
            assert!(
                std::fs::metadata(&p).unwrap().len() <= 2_000 + 1_000,
                "{}",
                p.display()
            );
        }
        let line = &tail(&config, "svc", 0, 1000).unwrap()[0];
        let stamp = line.split(' ').next().unwrap();
        assert!(humantime::parse_rfc3339(stamp).is_ok(), "{line}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_drops_lines_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig::new(dir.path().to_owned());
        let (lines, rx) = mpsc::channel(4);
        let sink = LogSink {
            lines,
            dropped: Arc::new(AtomicU64::new(0)),
            queued: Arc::new(AtomicUsize::new(0)),
        };
        for i in 0..10 {
            sink.line(Stream::Stdout, format!("l{i}"));
        }
        assert_eq!(sink.dropped.load(Ordering::Relaxed), 6);
        // The byte budget holds too: one line bigger than it is dropped.
        let (lines, _rx) = mpsc::channel(4);
        let big = LogSink {
            lines,
            dropped: Arc::new(AtomicU64::new(0)),
            queued: Arc::new(AtomicUsize::new(0)),
        };
        big.line(Stream::Stdout, "x".repeat(QUEUE_BYTES + 1));
        big.line(Stream::Stdout, "small".into());
        assert_eq!(big.dropped.load(Ordering::Relaxed), 1);
        assert_eq!(big.queued.load(Ordering::Relaxed), 5);
        let writer = Writer::open(config.path("x", 0), DEFAULT_MAX_BYTES, 3).unwrap();
        let (dropped, queued) = (sink.dropped.clone(), sink.queued.clone());
        drop(sink);
        writer.run(rx, dropped, queued.clone()).await;
        assert_eq!(
            queued.load(Ordering::Relaxed),
            0,
            "the writer gave the bytes back"
        );
        let text = std::fs::read_to_string(config.path("x", 0)).unwrap();
        assert!(text.contains("[mob: 6 lines dropped"), "{text}");
        assert!(
            text.contains("stdout l3") && !text.contains("stdout l4"),
            "{text}"
        );
    }
}
