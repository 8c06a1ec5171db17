//! Uploads finished files; when the store fails, spills them and replays the spill
//! directory oldest first (exponential backoff with jitter) until the store answers again.
//! Runs as its own task so that the pipeline never waits for the network.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, warn};

use weir_engine::backoff::Reconnect;
use weir_engine::observe::telemetry::SinkTelemetry;

use super::spill::{SpillDir, Spilled, checkpoint_of, tag, tag_of};

/// The quarantine keeps at most this fraction (1/N) of the spill budget.
const QUARANTINE_SHARE: u64 = 10;

/// A new file is spilled without trying the store when an upload failed less than this ago.
const DIRECT_RETRY: Duration = Duration::from_secs(1);

/// How long closing keeps trying to upload what is spilled.
const CLOSE_REPLAY: Duration = Duration::from_secs(5);

/// What to do when the spill directory reaches its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Delete the oldest spilled files (counted and logged) to make room.
    DropOldest,
    /// Stop taking new files until uploads make room: the pipeline slows down.
    Block,
}

/// A finished file.
#[derive(Debug)]
pub struct Finished {
    /// Object key.
    pub key: String,
    /// Parquet bytes.
    pub data: Bytes,
    /// Rows in it.
    pub rows: u64,
    /// Set when the file was committed with a checkpoint.
    pub committed: Option<Committed>,
}

/// A file committed with a checkpoint: durable at `pending` until it is uploaded (a
/// tombstone then keeps its key, in case an older checkpoint must be restored) or spilled
/// (it then moves into the spill directory, its name tagged with the checkpoint).
#[derive(Debug)]
pub struct Committed {
    /// Where it is.
    pub pending: PathBuf,
    /// The checkpoint it was committed with.
    pub checkpoint: u64,
}

/// Where a sink with checkpoints keeps pending files and the keys of uploaded ones.
#[derive(Debug, Clone)]
pub struct Outbox {
    /// `SPILL_DIR/SINK/pending`.
    pub dir: PathBuf,
    /// The state directory's lineage.
    pub lineage: String,
}

/// The key of an object committed after the restored checkpoint, to be deleted before
/// anything is uploaded; its tombstone file goes once the object is gone.
#[derive(Debug, Clone)]
pub struct Tombstone {
    /// The tombstone file.
    pub path: PathBuf,
    /// The object key.
    pub key: String,
}

/// The checkpoint number a pending or tombstone file's name starts with.
pub fn outbox_checkpoint(path: &Path) -> Option<u64> {
    path.file_name()?.to_str()?.split('-').next()?.parse().ok()
}

/// Messages to the uploader.
#[derive(Debug)]
pub enum Command {
    /// Upload (or spill) this file.
    File(Finished),
    /// Tombstones of checkpoints older than this one are no longer needed.
    Forget(u64),
    /// Try the backlog once more, then stop; answers when done.
    Close(oneshot::Sender<()>),
}

/// The uploader of one sink.
pub struct Uploader {
    name: String,
    store: Arc<dyn ObjectStore>,
    /// The store's URL, for messages.
    display: String,
    prefix: String,
    spill: SpillDir,
    max_bytes: u64,
    policy: Policy,
    /// When the link went down (None: up).
    down_since: Option<Instant>,
    /// When an upload last failed (None: since the last success).
    last_failure: Option<Instant>,
    /// Delays between replay attempts.
    reconnect: Reconnect,
    /// A `Close` that arrived during a replay, answered once it is done.
    closing: Option<oneshot::Sender<()>>,
    /// Set when the run stops: uploads still going at this instant are abandoned and
    /// their files spilled.
    deadline: watch::Receiver<Option<tokio::time::Instant>>,
    telemetry: Arc<SinkTelemetry>,
    /// With checkpoints: where tombstones go.
    outbox: Option<Outbox>,
    /// Objects to delete before anything is uploaded.
    deletes: Vec<Tombstone>,
    tombstones: u64,
}

/// Where an uploader sends files and keeps the ones it cannot send yet.
pub struct Destination {
    /// The store.
    pub store: Arc<dyn ObjectStore>,
    /// Its URL without credentials, for messages.
    pub display: String,
    /// Key prefix inside the store.
    pub prefix: String,
    /// The spill directory, opened.
    pub spill: SpillDir,
    /// Its budget in bytes.
    pub max_bytes: u64,
    /// What happens at the budget.
    pub policy: Policy,
    /// With checkpoints: where pending files and tombstones are.
    pub outbox: Option<Outbox>,
    /// Objects committed after the restored checkpoint: deleted before any upload.
    pub deletes: Vec<Tombstone>,
}

impl Uploader {
    /// The uploader of sink `name`: uploads to `to`, gives up on uploads still running at
    /// the instant `deadline` is set to, counts into `telemetry`.
    pub fn new(
        name: &str,
        to: Destination,
        deadline: watch::Receiver<Option<tokio::time::Instant>>,
        telemetry: Arc<SinkTelemetry>,
    ) -> Self {
        Self {
            name: name.to_string(),
            store: to.store,
            display: to.display,
            prefix: to.prefix,
            spill: to.spill,
            max_bytes: to.max_bytes,
            policy: to.policy,
            down_since: None,
            last_failure: None,
            reconnect: Reconnect::default(),
            closing: None,
            deadline,
            telemetry,
            outbox: to.outbox,
            deletes: to.deletes,
            tombstones: 0,
        }
    }
}

/// Why the store refused an upload it answered (an HTTP 401/403 or 404), if it did: a hint
/// at what to check; None when it could not be reached at all.
fn refusal(e: &anyhow::Error) -> Option<&'static str> {
    let store_error = e
        .chain()
        .find_map(|c| c.downcast_ref::<object_store::Error>());
    let text = format!("{e:#}");
    match store_error {
        Some(object_store::Error::PermissionDenied { .. })
        | Some(object_store::Error::Unauthenticated { .. }) => {}
        Some(object_store::Error::NotFound { .. }) => {
            return Some("not found: does the bucket exist?");
        }
        _ if text.contains("403 Forbidden") || text.contains("401 Unauthorized") => {}
        _ if text.contains("404 Not Found") => return Some("not found: does the bucket exist?"),
        _ => return None,
    }
    Some("access denied: check the credentials, the bucket policy and the clock")
}

/// Resolves when the instant in `deadline` (once set) has passed.
async fn passed(mut deadline: watch::Receiver<Option<tokio::time::Instant>>) {
    loop {
        let set = *deadline.borrow_and_update();
        if let Some(at) = set {
            return tokio::time::sleep_until(at).await;
        }
        if deadline.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// Runs blocking file work (writes with fsync, reads of spilled files) without holding up
/// the other tasks of a multi-threaded runtime.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// What a replay pass did.
#[derive(Debug, Default, Clone, Copy)]
struct Replayed {
    files: u64,
    rows: u64,
    bytes: u64,
}

impl Uploader {
    fn gauges(&self) {
        let age = self.spill.oldest().map_or(0.0, |o| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            (now - o.spilled_ms).max(0) as f64 / 1000.0
        });
        self.telemetry
            .spill(self.spill.len() as u64, self.spill.bytes(), age);
    }

    /// `f`'s output, or None when the close deadline passes first.
    async fn before_deadline<T>(&self, f: impl Future<Output = T>) -> Option<T> {
        tokio::select! {
            r = f => Some(r),
            () = passed(self.deadline.clone()) => None,
        }
    }

    async fn put(&self, key: &str, data: Bytes) -> anyhow::Result<()> {
        let size = data.len() as u64;
        let path = ObjectPath::from(key);
        let result = match self
            .before_deadline(self.store.put(&path, data.into()))
            .await
        {
            Some(r) => r.map(|_| ()).map_err(anyhow::Error::from),
            None => Err(anyhow::anyhow!(
                "upload abandoned: the shutdown grace period is running out"
            )),
        };
        self.telemetry.uploaded(result.is_ok(), size);
        result
    }

    /// Deletes the objects a restored checkpoint does not cover (before anything is
    /// uploaded: a file made again may have the same key).
    async fn flush_deletes(&mut self) -> anyhow::Result<()> {
        while let Some(t) = self.deletes.first().cloned() {
            let path = ObjectPath::from(t.key.as_str());
            match self.before_deadline(self.store.delete(&path)).await {
                Some(Ok(())) | Some(Err(object_store::Error::NotFound { .. })) => {}
                Some(Err(e)) => return Err(e.into()),
                None => anyhow::bail!("delete abandoned: the shutdown grace period is running out"),
            }
            self.deletes.remove(0);
            let _ = blocking(|| std::fs::remove_file(&t.path));
            info!(sink = %self.name, key = %t.key,
                "deleted an object committed after the restored checkpoint (its rows come again)");
        }
        Ok(())
    }

    /// Records that the object `key`, committed with checkpoint `number`, is in the store
    /// (and removes its pending file, if any).
    fn tombstone(&mut self, number: u64, key: &str, pending: Option<&Path>) {
        let Some(outbox) = &self.outbox else {
            return;
        };
        self.tombstones += 1;
        let path = outbox.dir.join(format!(
            "{number:016}-{}-{}.uploaded",
            std::process::id(),
            self.tombstones
        ));
        let written =
            blocking(|| weir_engine::checkpoint::store::write_durably(&path, key.as_bytes()));
        if let Err(e) = written {
            warn!(sink = %self.name, file = %path.display(), error = %e,
                "cannot record an uploaded object's key: restoring an older checkpoint could not delete it");
        }
        if let Some(p) = pending {
            let _ = blocking(|| std::fs::remove_file(p));
        }
    }

    /// Tombstones of checkpoints before `oldest_kept` can go.
    fn forget(&mut self, oldest_kept: u64) {
        let Some(outbox) = &self.outbox else {
            return;
        };
        let Ok(entries) = std::fs::read_dir(&outbox.dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            let old = path.extension().is_some_and(|x| x == "uploaded")
                && outbox_checkpoint(&path).is_some_and(|k| k < oldest_kept);
            if old {
                let _ = std::fs::remove_file(&path);
            }
        }
    }

    fn link_down(&mut self, e: &anyhow::Error) {
        self.last_failure = Some(Instant::now());
        if self.down_since.is_none() {
            self.down_since = Some(Instant::now());
            match refusal(e) {
                Some(why) => {
                    warn!(sink = %self.name, store = %self.display, error = %format!("{e:#}"),
                    "object store refused the upload ({why}): spilling files to disk until it takes them")
                }
                None => warn!(sink = %self.name, store = %self.display, error = %format!("{e:#}"),
                    "object store unreachable: spilling files to disk until it answers"),
            }
        }
    }

    fn link_up(&mut self, r: Replayed) {
        self.last_failure = None;
        if let Some(since) = self.down_since.take() {
            info!(sink = %self.name, store = %self.display, down_for = ?since.elapsed(),
                replayed_files = r.files, replayed_rows = r.rows, replayed_bytes = r.bytes,
                "object store reachable again");
        }
        self.reconnect.reset();
    }

    /// Uploads spilled files oldest first until one fails or none is left. Files that
    /// arrive on `incoming` meanwhile are spilled behind the backlog, so the pipeline never
    /// waits for a replay.
    async fn replay(&mut self, mut incoming: Option<&mut mpsc::Receiver<Command>>) -> bool {
        let mut done = Replayed::default();
        if let Err(e) = self.flush_deletes().await {
            self.link_down(&e);
            return false;
        }
        while let Some(oldest) = self.spill.oldest().cloned() {
            if let Some(rx) = incoming.as_deref_mut() {
                self.take_waiting(rx);
            }
            let contents = match blocking(|| self.spill.read(&oldest)) {
                Ok(c) => c,
                Err(e) => {
                    self.quarantine(&oldest, &e);
                    continue;
                }
            };
            if let Err(e) = self.put(&contents.key, contents.data).await {
                self.link_down(&e);
                self.gauges();
                return false;
            }
            let committed = match (&self.outbox, tag_of(&oldest.path)) {
                (Some(o), Some(t)) => checkpoint_of(t, &o.lineage),
                _ => None,
            };
            if let Some(k) = committed {
                self.tombstone(k, &contents.key, None);
            }
            if let Err(e) = blocking(|| self.spill.remove(&oldest)) {
                error!(sink = %self.name, error = %format!("{e:#}"), "cannot delete an uploaded spill file");
            }
            done.files += 1;
            done.rows += contents.rows;
            done.bytes += oldest.bytes;
            self.gauges();
        }
        self.link_up(done);
        true
    }

    fn quarantine(&mut self, s: &Spilled, why: &anyhow::Error) {
        self.telemetry.quarantined();
        match self.spill.quarantine(&s.path) {
            Ok(to) => error!(sink = %self.name, file = %to.display(), error = %format!("{why:#}"),
                "corrupt spill file moved to quarantine"),
            Err(e) => {
                error!(sink = %self.name, file = %s.path.display(), error = %format!("{e:#}"),
                    "cannot quarantine a corrupt spill file; deleting it");
                let _ = self.spill.remove(s);
            }
        }
        self.cap_quarantine();
    }

    /// Keeps the quarantine within a tenth of the spill budget, deleting its oldest files.
    fn cap_quarantine(&mut self) {
        let cap = self.max_bytes / QUARANTINE_SHARE;
        while self.spill.quarantine_bytes() > cap {
            let Some((path, bytes)) = self.spill.delete_oldest_quarantined() else {
                break;
            };
            self.telemetry.quarantine_deleted(
                &path,
                bytes,
                "the quarantine keeps at most a tenth of spill_max_bytes",
            );
        }
    }

    /// Bytes the spill budget counts: the backlog and the quarantine.
    fn budget_used(&self) -> u64 {
        self.spill.bytes() + self.spill.quarantine_bytes()
    }

    /// Makes room for `incoming` bytes by deleting quarantined files first (they are only
    /// kept for inspection); true when it fits now.
    fn room_from_quarantine(&mut self, incoming: u64) -> bool {
        while self.budget_used() + incoming > self.max_bytes {
            let Some((path, bytes)) = self.spill.delete_oldest_quarantined() else {
                return false;
            };
            self.telemetry.quarantine_deleted(
                &path,
                bytes,
                "the spill budget (which counts the quarantine) needed the room",
            );
        }
        true
    }

    /// Drop-oldest policy: deletes the oldest spilled files until `incoming` bytes fit;
    /// false when the file does not fit even into an empty directory.
    fn drop_oldest_for(&mut self, incoming: u64) -> bool {
        if self.room_from_quarantine(incoming) {
            return true;
        }
        while self.budget_used() + incoming > self.max_bytes {
            let Some(oldest) = self.spill.oldest().cloned() else {
                return false;
            };
            let rows = blocking(|| self.spill.read(&oldest)).map_or(0, |c| c.rows);
            let _ = blocking(|| self.spill.remove(&oldest));
            self.telemetry.dropped_file(
                rows,
                format_args!(
                    "spill budget reached: dropped the oldest spilled file {}",
                    oldest.path.display()
                ),
            );
        }
        true
    }

    /// Block policy: replays (waiting between attempts) until `incoming` bytes fit; the
    /// pipeline waits meanwhile. False when the file does not fit into an empty directory.
    async fn wait_for_room(&mut self, incoming: u64) -> bool {
        if self.room_from_quarantine(incoming) {
            return true;
        }
        while self.budget_used() + incoming > self.max_bytes {
            if self.spill.is_empty() {
                return false;
            }
            if !self.replay(None).await {
                tokio::time::sleep(self.reconnect.next_delay()).await;
            }
        }
        true
    }

    /// Spills the files waiting in `rx` (during a replay, drop-oldest policy only: with
    /// `block` the pipeline is meant to wait); a `Close` is kept for later.
    fn take_waiting(&mut self, rx: &mut mpsc::Receiver<Command>) {
        while self.closing.is_none() && self.policy == Policy::DropOldest {
            match rx.try_recv() {
                Ok(Command::File(f)) => self.spill_file(f),
                Ok(Command::Forget(k)) => self.forget(k),
                Ok(Command::Close(done)) => self.closing = Some(done),
                Err(_) => return,
            }
        }
    }

    /// Uploads a new file, or spills it when the store does not take it. The store is tried
    /// at once even while a backlog waits for its next replay (object keys, not upload order,
    /// say where a file belongs): a store that is back takes new files straight away instead
    /// of their going to a spill directory that may be full. Returns true when the store
    /// took the file while a backlog waits: the backlog is replayed now.
    async fn accept(&mut self, f: Finished) -> bool {
        let failed_just_now = self
            .last_failure
            .is_some_and(|t| t.elapsed() < DIRECT_RETRY);
        if !failed_just_now {
            let put = match self.flush_deletes().await {
                Ok(()) => self.put(&f.key, f.data.clone()).await,
                Err(e) => Err(e),
            };
            if put.is_ok()
                && let Some(c) = &f.committed
            {
                self.tombstone(c.checkpoint, &f.key, Some(&c.pending));
            }
            match put {
                Ok(()) if self.spill.is_empty() => {
                    self.link_up(Replayed::default());
                    return false;
                }
                Ok(()) => return true,
                Err(e) => self.link_down(&e),
            }
        }
        if self.policy == Policy::Block && !self.wait_for_room(f.data.len() as u64).await {
            self.drop_file(&f);
            return false;
        }
        self.spill_file(f);
        false
    }

    fn drop_file(&self, f: &Finished) {
        if let Some(c) = &f.committed {
            let _ = std::fs::remove_file(&c.pending);
        }
        self.telemetry.dropped_file(
            f.rows,
            format_args!(
                "file {} ({} bytes) larger than the whole spill budget: dropped",
                f.key,
                f.data.len()
            ),
        );
    }

    /// Writes `f` to the spill directory (under the drop-oldest policy, making room first).
    fn spill_file(&mut self, f: Finished) {
        if self.policy == Policy::DropOldest && !self.drop_oldest_for(f.data.len() as u64) {
            return self.drop_file(&f);
        }
        let spilled = match (&f.committed, &self.outbox) {
            (Some(c), Some(o)) => {
                let tag = tag(&o.lineage, c.checkpoint);
                blocking(|| self.spill.adopt(&c.pending, &tag))
            }
            _ => blocking(|| self.spill.write(&f.data)),
        };
        if let Err(e) = spilled {
            self.telemetry.lost_rows(
                f.rows,
                format_args!("cannot spill file {}: its rows are lost: {e:#}", f.key),
            );
        }
        self.gauges();
    }

    /// Lists the key prefix once, to report a wrong bucket or credentials at start-up rather
    /// than at the first upload. Only a warning: credentials may be allowed to write and not
    /// to list.
    async fn check(&self) {
        let prefix = ObjectPath::from(self.prefix.as_str());
        let listed = self.before_deadline(self.store.list_with_delimiter(Some(&prefix)));
        if let Some(Err(e)) = listed.await {
            warn!(sink = %self.name, store = %self.display, error = %e,
                "cannot list the store (check the bucket name and the credentials; uploads may still work if they may only write)");
        }
    }

    /// Answers `Close`: a few quick attempts to upload the backlog (a store that just came
    /// back may still stumble), then stops.
    async fn close(&mut self, done: oneshot::Sender<()>) {
        if let Err(e) = self.flush_deletes().await {
            warn!(sink = %self.name, error = %format!("{e:#}"), pending = self.deletes.len(),
                "objects committed after the restored checkpoint are not deleted yet: tried again at the next start");
        }
        let mut give_up = tokio::time::Instant::now() + CLOSE_REPLAY;
        if let Some(deadline) = *self.deadline.borrow() {
            give_up = give_up.min(deadline);
        }
        let mut pause = Duration::from_millis(100);
        while !self.spill.is_empty()
            && !self.replay(None).await
            && tokio::time::Instant::now() + pause < give_up
        {
            tokio::time::sleep(pause).await;
            pause *= 2;
        }
        if !self.spill.is_empty() {
            warn!(sink = %self.name, files = self.spill.len(), bytes = self.spill.bytes(),
                "stopping with spilled files; they are uploaded at the next start");
        }
        let _ = done.send(());
    }

    /// Runs until `Close` (or until the sink goes away).
    pub async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        self.check().await;
        self.cap_quarantine();
        self.gauges();
        let mut next_try = tokio::time::Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            if let Some(done) = self.closing.take() {
                return self.close(done).await;
            }
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(Command::File(f)) => {
                        if self.accept(f).await {
                            next_try = tokio::time::Instant::now();
                        }
                    }
                    Some(Command::Forget(k)) => self.forget(k),
                    Some(Command::Close(done)) => return self.close(done).await,
                    None => return,
                },
                _ = tokio::time::sleep_until(next_try), if !self.spill.is_empty() || !self.deletes.is_empty() => {
                    if !self.replay(Some(&mut rx)).await {
                        next_try = tokio::time::Instant::now() + self.reconnect.next_delay();
                    }
                }
                _ = tick.tick() => self.gauges(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::spill::tests::{parquet, scratch};
    use super::*;
    use object_store::local::LocalFileSystem;

    fn file(key: &str, rows: i64) -> Finished {
        Finished {
            key: key.to_string(),
            data: Bytes::from(parquet(rows, key)),
            rows: rows as u64,
            committed: None,
        }
    }

    #[tokio::test]
    async fn a_store_that_is_back_takes_new_files_before_the_backlog_replays() {
        let tmp = scratch("direct-upload");
        let root = tmp.join("store");
        std::fs::create_dir(&root).unwrap();
        // keys under `bucket/`: while it is a file, every upload fails
        std::fs::write(root.join("bucket"), "in the way").unwrap();
        let store: Arc<dyn ObjectStore> =
            Arc::new(LocalFileSystem::new_with_prefix(&root).unwrap());
        let (spill, _) = SpillDir::open(&tmp.join("spill")).unwrap();
        let (_deadline_tx, deadline) = watch::channel(None);
        let mut up = Uploader::new(
            "cloud",
            Destination {
                store: Arc::clone(&store),
                display: "file://store".into(),
                prefix: "bucket".into(),
                spill,
                max_bytes: 1 << 20,
                policy: Policy::DropOldest,
                outbox: None,
                deletes: Vec::new(),
            },
            deadline,
            Arc::new(SinkTelemetry::new("cloud")),
        );
        assert!(!up.accept(file("bucket/a.parquet", 3)).await);
        assert_eq!(up.spill.len(), 1, "spilled while the store fails");
        // the store comes back; the replay backoff has not run out
        std::fs::remove_file(root.join("bucket")).unwrap();
        tokio::time::sleep(DIRECT_RETRY + Duration::from_millis(50)).await;
        assert!(
            up.accept(file("bucket/b.parquet", 4)).await,
            "a new file goes to the store at once, and asks for the backlog's replay"
        );
        assert!(root.join("bucket/b.parquet").exists());
        assert_eq!(up.spill.len(), 1, "the backlog is still waiting");
        assert!(up.replay(None).await);
        assert!(root.join("bucket/a.parquet").exists());
        assert!(up.spill.is_empty());
    }
}
