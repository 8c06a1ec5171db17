//! The `WITH (key = 'value', ...)` options of `CREATE SOURCE` and `CREATE SINK`, with typed
//! accessors whose errors point at the offending key or value.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::time::Duration;

use crate::diagnostic::{Location, PipelineError};

/// One `key = value` entry.
#[derive(Debug, Clone)]
pub struct OptionEntry {
    /// The key, lower-cased.
    pub key: String,
    /// The value as written (quotes removed, `${ENV}` substituted).
    pub value: String,
    /// Where the key is.
    pub key_location: Location,
    /// Where the value is.
    pub value_location: Location,
}

/// The options of one statement. Every accessor marks its key as used, so that keys no
/// connector asked for can be reported as unknown.
#[derive(Debug)]
pub struct Options {
    file: String,
    statement: Location,
    entries: Vec<OptionEntry>,
    used: RefCell<BTreeSet<String>>,
}

/// Keys whose values are secrets: never echoed in messages.
fn is_secret(key: &str) -> bool {
    ["password", "secret", "token", "key"]
        .iter()
        .any(|s| key.contains(s))
}

impl Options {
    /// Options of the statement at `statement` in `file`.
    pub fn new(file: &str, statement: Location, entries: Vec<OptionEntry>) -> Self {
        Self {
            file: file.to_string(),
            statement,
            entries,
            used: RefCell::new(BTreeSet::new()),
        }
    }

    /// The file these options come from.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// Where the statement starts.
    pub fn statement_location(&self) -> Location {
        self.statement
    }

    /// An error at the statement.
    pub fn error(&self, message: impl Into<String>) -> PipelineError {
        PipelineError::new(&self.file, self.statement, message)
    }

    /// The entry for `key`, marking it used.
    pub fn entry(&self, key: &str) -> Option<&OptionEntry> {
        self.used.borrow_mut().insert(key.to_string());
        self.entries.iter().find(|e| e.key == key)
    }

    /// The raw value for `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entry(key).map(|e| e.value.as_str())
    }

    /// The raw value for `key`, or an error saying it is required.
    pub fn require(&self, key: &str, what: &str) -> Result<&str, PipelineError> {
        self.get(key)
            .ok_or_else(|| self.error(format!("missing required option '{key}' ({what})")))
    }

    /// An error at the value of `entry`.
    pub fn value_error(&self, entry: &OptionEntry, message: &str) -> PipelineError {
        let shown = if is_secret(&entry.key) {
            "<redacted>".to_string()
        } else {
            format!("'{}'", entry.value)
        };
        PipelineError::new(
            &self.file,
            entry.value_location,
            format!("option '{}' = {shown}: {message}", entry.key),
        )
    }

    /// The value for `key` converted by `parse`; a conversion failure is an error at the value.
    pub fn parsed<T>(
        &self,
        key: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, PipelineError> {
        match self.entry(key) {
            None => Ok(None),
            Some(e) => parse(&e.value)
                .map(Some)
                .map_err(|m| self.value_error(e, &m)),
        }
    }

    /// A duration such as `2s`, `500ms` or `1 minute`.
    pub fn duration(&self, key: &str) -> Result<Option<Duration>, PipelineError> {
        self.parsed(key, parse_duration)
    }

    /// A non-negative integer.
    pub fn u64(&self, key: &str) -> Result<Option<u64>, PipelineError> {
        self.parsed(key, |v| {
            v.trim()
                .replace('_', "")
                .parse::<u64>()
                .map_err(|_| "expected a whole number".to_string())
        })
    }

    /// A size in bytes: a whole number, or with a unit such as `256KiB`, `1 MiB` or `2MB`.
    pub fn bytes(&self, key: &str) -> Result<Option<u64>, PipelineError> {
        self.parsed(key, |v| {
            v.trim()
                .parse::<bytesize::ByteSize>()
                .map(|b| b.as_u64())
                .map_err(|_| "expected a size such as '65536', '256KiB' or '1MiB'".to_string())
        })
    }

    /// A floating-point number.
    pub fn f64(&self, key: &str) -> Result<Option<f64>, PipelineError> {
        self.parsed(key, |v| {
            v.trim()
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| "expected a number".to_string())
        })
    }

    /// `true`/`false` (also `yes`/`no`, `on`/`off`, `1`/`0`).
    pub fn bool(&self, key: &str) -> Result<Option<bool>, PipelineError> {
        self.parsed(key, |v| match v.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => Ok(true),
            "false" | "no" | "off" | "0" => Ok(false),
            _ => Err("expected true or false".to_string()),
        })
    }

    /// One of `choices` (case-insensitive), returned lower-cased.
    pub fn choice(&self, key: &str, choices: &[&str]) -> Result<Option<String>, PipelineError> {
        self.parsed(key, |v| {
            let v = v.trim().to_ascii_lowercase();
            if choices.contains(&v.as_str()) {
                Ok(v)
            } else {
                Err(format!("expected one of {}", choices.join(", ")))
            }
        })
    }

    /// Errors for every key no accessor asked for.
    pub fn unknown(&self, connector: &str) -> Vec<PipelineError> {
        let used = self.used.borrow();
        let known: Vec<&str> = used.iter().map(String::as_str).collect();
        self.entries
            .iter()
            .filter(|e| !used.contains(&e.key))
            .map(|e| {
                PipelineError::new(
                    &self.file,
                    e.key_location,
                    format!(
                        "unknown option '{}' for connector '{connector}' (known options: {})",
                        e.key,
                        known.join(", ")
                    ),
                )
            })
            .collect()
    }
}

/// Parses a duration such as `2s`, `500ms`, `1m`, `1 minute` or `1h30m`.
pub fn parse_duration(v: &str) -> Result<Duration, String> {
    humantime::parse_duration(v.trim())
        .map_err(|e| format!("expected a duration such as '2s', '500ms' or '1m' ({e})"))
}
