//! Dead-letter file: inputs a source skipped, one JSON object per line, so that nothing a
//! device sent is lost even when it cannot be processed.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::json;

/// An NDJSON file of skipped inputs, appended to.
#[derive(Debug)]
pub struct DeadLetters {
    path: PathBuf,
    out: BufWriter<File>,
}

impl DeadLetters {
    /// Opens (or creates) `path` for appending, creating its directory.
    pub fn open(path: &Path) -> anyhow::Result<DeadLetters> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create directory {}", dir.display()))?;
        }
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open dead-letter file {}", path.display()))?;
        Ok(DeadLetters {
            path: path.to_path_buf(),
            out: BufWriter::new(f),
        })
    }

    /// Records one skipped input: where it came from, why, and its bytes (as text when they
    /// are UTF-8, else as hex).
    pub fn write(
        &mut self,
        source: &str,
        context: &str,
        reason: &str,
        detail: &str,
        payload: &[u8],
    ) {
        let mut entry = json!({
            "time": now_rfc3339(),
            "source": source,
            "context": context,
            "reason": reason,
            "error": detail,
        });
        match std::str::from_utf8(payload) {
            Ok(s) => entry["payload"] = json!(s),
            Err(_) => {
                let hex: String = payload.iter().map(|b| format!("{b:02x}")).collect();
                entry["payload_hex"] = json!(hex);
            }
        }
        let line = entry.to_string();
        if let Err(e) = writeln!(self.out, "{line}") {
            tracing::error!(file = %self.path.display(), error = %e, "cannot write dead letter");
        }
    }

    /// Writes buffered entries to the file.
    pub fn flush(&mut self) {
        if let Err(e) = self.out.flush() {
            tracing::error!(file = %self.path.display(), error = %e, "cannot write dead letters");
        }
    }
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

    #[test]
    fn entries_are_json_lines_with_text_or_hex_payloads() {
        let dir = std::env::temp_dir().join(format!("weir-dl-{}", std::process::id()));
        let path = dir.join("dead.ndjson");
        let mut d = DeadLetters::open(&path).unwrap();
        d.write("s", "a/b", "malformed_json", "eof", b"{x");
        d.write("s", "a/c", "not_utf8", "bad", &[0xff]);
        d.flush();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["payload"], "{x");
        assert_eq!(lines[0]["context"], "a/b");
        assert_eq!(lines[1]["payload_hex"], "ff");
        assert!(lines[1]["time"].as_str().unwrap().ends_with('Z'));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
