//! Dead-letter file: inputs a source skipped, one JSON object per line, so that nothing a
//! device sent is lost even when it cannot be processed. Bounded: each input keeps its
//! first bytes only, and the file is rotated once it reaches its size.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::json;

use crate::diagnostic::PipelineError;
use crate::observe::telemetry::LogLimit;
use crate::parse::Options;
use crate::parse::options::{OptionSpec, OptionType};

/// `dead_letter_max_bytes`, taken by every connector with a `dead_letter` option.
pub const MAX_BYTES: OptionSpec = OptionSpec::new(
    "dead_letter_max_bytes",
    OptionType::Bytes,
    "size at which the dead-letter file is rotated: it becomes `FILE.1` (replacing the one before) and a new file starts, so at most twice this is on disk",
)
.default("16MiB");
/// `dead_letter_payload_bytes`.
pub const PAYLOAD_BYTES: OptionSpec = OptionSpec::new(
    "dead_letter_payload_bytes",
    OptionType::Bytes,
    "bytes of each skipped input kept in the dead-letter file; a longer one is cut there (its entry says `\"truncated\": true` and its full size in `payload_bytes`)",
)
.default("4KiB");
/// The limit options, for a connector's option list.
pub const LIMIT_OPTIONS: [OptionSpec; 2] = [MAX_BYTES, PAYLOAD_BYTES];

/// How large a dead-letter file and its entries may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadLetterLimits {
    /// The file is rotated once it would grow past this.
    pub max_bytes: u64,
    /// Bytes of an input kept.
    pub payload_bytes: usize,
}

impl Default for DeadLetterLimits {
    fn default() -> Self {
        Self {
            max_bytes: 16 << 20,
            payload_bytes: 4 << 10,
        }
    }
}

impl DeadLetterLimits {
    /// The limits a statement's options give ([`LIMIT_OPTIONS`], declared by its connector).
    pub fn from_options(o: &Options) -> Result<Self, PipelineError> {
        let max_bytes: u64 = o.value(&MAX_BYTES)?;
        if max_bytes < 1024
            && let Some(e) = o.entry(&MAX_BYTES)
        {
            return Err(o.value_error(e, "at least 1KiB"));
        }
        let payload_bytes: u64 = o.value(&PAYLOAD_BYTES)?;
        Ok(Self {
            max_bytes,
            payload_bytes: usize::try_from(payload_bytes).unwrap_or(usize::MAX),
        })
    }
}

/// A connector's dead-letter file as its options declare it: the path and its limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterFile {
    /// The file.
    pub path: PathBuf,
    /// How large it and its entries may grow.
    pub limits: DeadLetterLimits,
}

impl DeadLetterFile {
    /// The file named by option `path` (the connector's own `dead_letter`, declared with
    /// [`LIMIT_OPTIONS`]), or None when it is not given.
    pub fn from_options(o: &Options, path: &OptionSpec) -> Result<Option<Self>, PipelineError> {
        let Some(file) = o.optional::<PathBuf>(path)? else {
            return Ok(None);
        };
        Ok(Some(Self {
            path: file,
            limits: DeadLetterLimits::from_options(o)?,
        }))
    }

    /// Opens it for appending.
    pub fn open(&self) -> anyhow::Result<DeadLetters> {
        DeadLetters::open(&self.path, self.limits)
    }
}

/// An NDJSON file of skipped inputs, appended to and rotated at its size.
#[derive(Debug)]
pub struct DeadLetters {
    path: PathBuf,
    limits: DeadLetterLimits,
    out: Option<BufWriter<File>>,
    /// Bytes in the current file.
    size: u64,
    error_log: LogLimit,
}

impl DeadLetters {
    /// Opens (or creates) `path` for appending, creating its directory.
    pub fn open(path: &Path, limits: DeadLetterLimits) -> anyhow::Result<DeadLetters> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create directory {}", dir.display()))?;
        }
        let (out, size) = append(path)
            .with_context(|| format!("cannot open dead-letter file {}", path.display()))?;
        Ok(DeadLetters {
            path: path.to_path_buf(),
            limits,
            out: Some(out),
            size,
            error_log: LogLimit::default(),
        })
    }

    /// Records one skipped input: where it came from, why, and its first bytes (as text when
    /// they are UTF-8, else as hex). `size` is the input's full size (more than
    /// `payload.len()` when only its first bytes were kept before).
    pub fn write(
        &mut self,
        source: &str,
        context: &str,
        reason: &str,
        detail: &str,
        payload: &[u8],
        size: usize,
    ) {
        let mut entry = json!({
            "time": now_rfc3339(),
            "source": source,
            "context": context,
            "reason": reason,
            "error": detail,
        });
        let kept = &payload[..payload.len().min(self.limits.payload_bytes)];
        let kept = match std::str::from_utf8(kept) {
            Ok(s) => {
                entry["payload"] = json!(s);
                s.len()
            }
            // cut inside a character: keep the whole characters before it
            Err(e) if e.error_len().is_none() && std::str::from_utf8(payload).is_ok() => {
                let s = std::str::from_utf8(&kept[..e.valid_up_to()]).unwrap_or_default();
                entry["payload"] = json!(s);
                s.len()
            }
            Err(_) => {
                let hex: String = kept.iter().map(|b| format!("{b:02x}")).collect();
                entry["payload_hex"] = json!(hex);
                kept.len()
            }
        };
        let size = size.max(payload.len());
        if kept < size {
            entry["truncated"] = json!(true);
            entry["payload_bytes"] = json!(size);
        }
        let line = format!("{entry}\n");
        self.append_line(line.as_bytes());
    }

    fn append_line(&mut self, line: &[u8]) {
        if self.size > 0 && self.size + line.len() as u64 > self.limits.max_bytes {
            self.rotate();
        }
        let Some(out) = &mut self.out else {
            return;
        };
        match out.write_all(line) {
            Ok(()) => self.size += line.len() as u64,
            Err(e) => self.failed("cannot write dead letter", &e),
        }
    }

    /// The current file becomes `FILE.1` and a new one starts. Should that fail, entries are
    /// dropped (and the failure logged) until a later rotation works: the bound holds.
    fn rotate(&mut self) {
        if let Some(mut out) = self.out.take()
            && let Err(e) = out.flush()
        {
            self.failed("cannot write dead letters", &e);
        }
        let rotated = rotated_path(&self.path);
        let result = std::fs::rename(&self.path, &rotated).and_then(|()| append(&self.path));
        match result {
            Ok((out, size)) => {
                tracing::info!(file = %self.path.display(), rotated = %rotated.display(),
                    max_bytes = self.limits.max_bytes, "dead-letter file rotated");
                self.out = Some(out);
                self.size = size;
            }
            Err(e) => self.failed("cannot rotate dead-letter file; entries dropped", &e),
        }
    }

    fn failed(&self, what: &str, e: &std::io::Error) {
        if let Some(unlogged) = self.error_log.admit() {
            tracing::error!(file = %self.path.display(), error = %e, not_logged_since_last = unlogged, "{what}");
        }
    }

    /// Writes buffered entries to the file.
    pub fn flush(&mut self) {
        if let Some(out) = &mut self.out
            && let Err(e) = out.flush()
        {
            self.failed("cannot write dead letters", &e);
        }
    }
}

/// `FILE.1` beside `FILE`.
pub fn rotated_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(".1");
    PathBuf::from(name)
}

fn append(path: &Path) -> std::io::Result<(BufWriter<File>, u64)> {
    let f = OpenOptions::new().create(true).append(true).open(path)?;
    let size = f.metadata()?.len();
    Ok((BufWriter::new(f), size))
}

/// Now as RFC 3339 (UTC, milliseconds).
fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let ms = now.as_millis() as i64;
    arrow::temporal_conversions::timestamp_ms_to_datetime(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory of this test's own.
    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Self {
            let d = std::env::temp_dir().join(format!("weir-dl-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            Self(d)
        }

        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn lines(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn entries_are_json_lines_with_text_or_hex_payloads() {
        let dir = Dir::new("entries");
        let path = dir.path().join("dead.ndjson");
        let mut d = DeadLetters::open(&path, DeadLetterLimits::default()).unwrap();
        d.write("s", "a/b", "malformed_json", "eof", b"{x", 2);
        d.write("s", "a/c", "not_utf8", "bad", &[0xff], 1);
        d.flush();
        let lines = lines(&path);
        assert_eq!(lines[0]["payload"], "{x");
        assert_eq!(lines[0]["context"], "a/b");
        assert!(lines[0].get("truncated").is_none());
        assert_eq!(lines[1]["payload_hex"], "ff");
        assert!(lines[1]["time"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn payloads_are_cut_to_their_prefix() {
        let dir = Dir::new("cut");
        let path = dir.path().join("dead.ndjson");
        let limits = DeadLetterLimits {
            max_bytes: 1 << 20,
            payload_bytes: 5,
        };
        let mut d = DeadLetters::open(&path, limits).unwrap();
        d.write("s", "t", "oversized", "big", b"0123456789", 10);
        // "aé": the cut at 5 bytes falls inside the second é, which is left out whole
        d.write("s", "t", "bad", "x", "aébé".as_bytes(), 7);
        d.write("s", "t", "bad", "x", &[0xff; 8], 8);
        // the guard kept 3 bytes of a 100-byte message
        d.write("s", "t", "oversized", "x", b"abc", 100);
        d.flush();
        let l = lines(&path);
        assert_eq!(
            (&l[0]["payload"], &l[0]["truncated"], &l[0]["payload_bytes"]),
            (&json!("01234"), &json!(true), &json!(10))
        );
        assert_eq!(l[1]["payload"], "aéb");
        assert_eq!(l[1]["payload_bytes"], 7);
        assert_eq!(l[2]["payload_hex"], "ffffffffff");
        assert_eq!(l[3]["payload"], "abc");
        assert_eq!(l[3]["payload_bytes"], 100);
    }

    #[test]
    fn the_file_is_rotated_at_its_size() {
        let dir = Dir::new("rotated");
        let path = dir.path().join("dead.ndjson");
        let limits = DeadLetterLimits {
            max_bytes: 4096,
            payload_bytes: 100,
        };
        let mut d = DeadLetters::open(&path, limits).unwrap();
        for i in 0..1_000 {
            d.write("s", &format!("t/{i}"), "bad", "x", &[b'p'; 500], 500);
        }
        d.flush();
        let (current, rotated) = (lines(&path), lines(&rotated_path(&path)));
        let size = |p: &Path| std::fs::metadata(p).unwrap().len();
        assert!(size(&path) <= 4096 && size(&rotated_path(&path)) <= 4096);
        // the newest entries are kept, oldest first, none torn
        assert_eq!(current.last().unwrap()["context"], "t/999");
        let first_current = current[0]["context"].as_str().unwrap();
        let last_rotated = rotated.last().unwrap()["context"].as_str().unwrap();
        let n = |s: &str| s[2..].parse::<u32>().unwrap();
        assert_eq!(n(last_rotated) + 1, n(first_current));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
        // reopened, the file goes on at its size
        drop(d);
        let mut d = DeadLetters::open(&path, limits).unwrap();
        for i in 0..20 {
            d.write("s", &format!("u/{i}"), "bad", "x", b"p", 1);
        }
        d.flush();
        assert!(size(&path) <= 4096);
    }
}
