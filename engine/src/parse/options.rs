//! The `WITH (key = 'value', ...)` options of `CREATE SOURCE` and `CREATE SINK`.
//!
//! Each connector declares its options once, as [`OptionSpec`]s (name, type, default, one
//! line of documentation). The typed accessors take the declaration, apply its default,
//! and point errors at the offending key or value; keys that no declaration names are
//! reported as unknown — whether or not the connector got as far as reading them. The same
//! declarations print `weir connectors --options NAME` and are checked against the README.

use std::path::PathBuf;
use std::time::Duration;

use crate::diagnostic::{Location, PipelineError};

/// What an option's value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionType {
    /// Free text.
    Text,
    /// Text that is never echoed (passwords, tokens).
    Secret,
    /// A file or directory.
    Path,
    /// An address such as `mqtt://host:1883`.
    Url,
    /// A duration: `500ms`, `2s`, `1m`, `1h30m`.
    Duration,
    /// A size in bytes: `65536`, `256KiB`, `1MiB`.
    Bytes,
    /// A whole number ≥ 0.
    Integer,
    /// A number.
    Number,
    /// `true` or `false` (also `yes`/`no`, `on`/`off`, `1`/`0`).
    Bool,
    /// One of these words (case-insensitive).
    Choice(&'static [&'static str]),
    /// Comma-separated items.
    List,
}

impl OptionType {
    /// How the type is written in option tables.
    pub fn describe(&self) -> String {
        match self {
            OptionType::Text => "text".into(),
            OptionType::Secret => "secret".into(),
            OptionType::Path => "path".into(),
            OptionType::Url => "url".into(),
            OptionType::Duration => "duration".into(),
            OptionType::Bytes => "size".into(),
            OptionType::Integer => "integer".into(),
            OptionType::Number => "number".into(),
            OptionType::Bool => "boolean".into(),
            OptionType::Choice(c) => c.join("/"),
            OptionType::List => "list".into(),
        }
    }
}

/// What an option is when it is not given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionDefault {
    /// It must be given.
    Required,
    /// Not set.
    Unset,
    /// This value, read as if it had been written.
    Value(&'static str),
    /// Worked out from other options or the columns; the text says how.
    Derived(&'static str),
}

/// One declared option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionSpec {
    /// The key, lower case.
    pub name: &'static str,
    /// What the value is.
    pub ty: OptionType,
    /// What it is when not given.
    pub default: OptionDefault,
    /// One line for option tables.
    pub doc: &'static str,
}

impl OptionSpec {
    /// An optional option of type `ty`, unset by default.
    pub const fn new(name: &'static str, ty: OptionType, doc: &'static str) -> Self {
        Self {
            name,
            ty,
            default: OptionDefault::Unset,
            doc,
        }
    }

    /// The same option with a default value (read as if written).
    pub const fn default(mut self, value: &'static str) -> Self {
        self.default = OptionDefault::Value(value);
        self
    }

    /// The same option, required.
    pub const fn required(mut self) -> Self {
        self.default = OptionDefault::Required;
        self
    }

    /// The same option with a default worked out elsewhere, described by `how`.
    pub const fn derived(mut self, how: &'static str) -> Self {
        self.default = OptionDefault::Derived(how);
        self
    }

    /// The default as option tables show it.
    pub fn default_text(&self) -> String {
        match self.default {
            OptionDefault::Required => "required".into(),
            OptionDefault::Unset => "none".into(),
            OptionDefault::Value(v) => format!("`{v}`"),
            OptionDefault::Derived(how) => how.into(),
        }
    }

    fn is_secret(&self) -> bool {
        self.ty == OptionType::Secret
    }
}

/// The options as a Markdown table (option, type, default, meaning).
pub fn markdown_table<'a>(specs: impl IntoIterator<Item = &'a OptionSpec>) -> String {
    let mut out = String::from("| option | type | default | meaning |\n|---|---|---|---|\n");
    for s in specs {
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            s.name,
            s.ty.describe(),
            s.default_text(),
            s.doc
        ));
    }
    out
}

/// The options as aligned text columns (option, type, default, meaning), for a terminal.
pub fn text_table<'a>(specs: impl IntoIterator<Item = &'a OptionSpec>) -> String {
    let rows: Vec<[String; 4]> = specs
        .into_iter()
        .map(|s| {
            [
                s.name.to_string(),
                s.ty.describe(),
                s.default_text().replace('`', ""),
                s.doc.replace('`', ""),
            ]
        })
        .collect();
    let header = ["option", "type", "default", "meaning"].map(String::from);
    let width = |i: usize| {
        rows.iter()
            .chain(std::iter::once(&header))
            .map(|r| r[i].chars().count())
            .max()
            .unwrap_or(0)
    };
    let (w0, w1, w2) = (width(0), width(1), width(2));
    std::iter::once(&header)
        .chain(&rows)
        .map(|r| format!("{:w0$}  {:w1$}  {:w2$}  {}\n", r[0], r[1], r[2], r[3]))
        .collect()
}

/// A value an option can be read as.
pub trait OptionValue: Sized {
    /// Converts the written value of option `spec`.
    fn from_option(value: &str, spec: &OptionSpec) -> Result<Self, String>;
}

impl OptionValue for String {
    fn from_option(value: &str, spec: &OptionSpec) -> Result<Self, String> {
        match spec.ty {
            OptionType::Choice(choices) => {
                let v = value.trim().to_ascii_lowercase();
                choices
                    .iter()
                    .find(|c| c.eq_ignore_ascii_case(&v))
                    .map(|c| c.to_string())
                    .ok_or_else(|| format!("expected one of {}", choices.join(", ")))
            }
            OptionType::Secret => Ok(value.to_string()),
            _ => Ok(value.trim().to_string()),
        }
    }
}

impl OptionValue for PathBuf {
    fn from_option(value: &str, _: &OptionSpec) -> Result<Self, String> {
        Ok(PathBuf::from(value.trim()))
    }
}

impl OptionValue for Duration {
    fn from_option(value: &str, _: &OptionSpec) -> Result<Self, String> {
        parse_duration(value)
    }
}

impl OptionValue for u64 {
    fn from_option(value: &str, spec: &OptionSpec) -> Result<Self, String> {
        match spec.ty {
            OptionType::Bytes => parse_size(value),
            _ => value
                .trim()
                .replace('_', "")
                .parse::<u64>()
                .map_err(|_| "expected a whole number".to_string()),
        }
    }
}

impl OptionValue for f64 {
    fn from_option(value: &str, _: &OptionSpec) -> Result<Self, String> {
        value
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .ok_or_else(|| "expected a number".to_string())
    }
}

impl OptionValue for bool {
    fn from_option(value: &str, _: &OptionSpec) -> Result<Self, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => Ok(true),
            "false" | "no" | "off" | "0" => Ok(false),
            _ => Err("expected true or false".to_string()),
        }
    }
}

impl OptionValue for Vec<String> {
    fn from_option(value: &str, _: &OptionSpec) -> Result<Self, String> {
        Ok(value
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect())
    }
}

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

/// The options of one statement.
#[derive(Debug)]
pub struct Options {
    file: String,
    statement: Location,
    entries: Vec<OptionEntry>,
    declared: Vec<&'static OptionSpec>,
}

/// Keys whose values are secrets by their name: never echoed in messages.
fn is_secret_name(key: &str) -> bool {
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
            declared: Vec::new(),
        }
    }

    /// Declares the options the statement's connector takes (with those the engine reads
    /// itself): the typed accessors only read declared options, and every other key is
    /// unknown.
    pub fn declare(&mut self, specs: impl IntoIterator<Item = &'static OptionSpec>) {
        self.declared.extend(specs);
    }

    /// Every `key = value`, sorted by key, a line each: what a checkpoint compares to tell a
    /// changed statement (values of secrets take part, but only as a hash).
    pub fn fingerprint_text(&self) -> String {
        let mut lines: Vec<String> = self
            .entries
            .iter()
            .map(|e| format!("{} = {}", e.key, e.value))
            .collect();
        lines.sort();
        lines.join("\n")
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

    fn check_declared(&self, spec: &OptionSpec) {
        debug_assert!(
            self.declared.is_empty() || self.declared.iter().any(|d| d.name == spec.name),
            "option '{}' is read but not declared",
            spec.name
        );
    }

    /// The entry for `spec` as written, if it was given.
    pub fn entry(&self, spec: &OptionSpec) -> Option<&OptionEntry> {
        self.check_declared(spec);
        self.entries.iter().find(|e| e.key == spec.name)
    }

    /// True when `spec` was given.
    pub fn is_given(&self, spec: &OptionSpec) -> bool {
        self.entry(spec).is_some()
    }

    /// The text of `spec`: as written, else its default value.
    pub fn text(&self, spec: &OptionSpec) -> Option<&str> {
        match self.entry(spec) {
            Some(e) => Some(e.value.as_str()),
            None => match spec.default {
                OptionDefault::Value(v) => Some(v),
                _ => None,
            },
        }
    }

    /// The text of a required option, or an error saying it is missing.
    pub fn require(&self, spec: &OptionSpec) -> Result<&OptionEntry, PipelineError> {
        self.entry(spec).ok_or_else(|| self.missing(spec))
    }

    fn missing(&self, spec: &OptionSpec) -> PipelineError {
        self.error(format!(
            "missing required option '{}' ({})",
            spec.name, spec.doc
        ))
    }

    /// An error at the value of `entry`.
    pub fn value_error(&self, entry: &OptionEntry, message: &str) -> PipelineError {
        let secret = is_secret_name(&entry.key)
            || self
                .declared
                .iter()
                .any(|d| d.name == entry.key && d.is_secret());
        let shown = if secret {
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

    /// `spec` converted by `parse`: as written (a failure is an error at the value), else
    /// its default value, else `None`.
    pub fn parse_with<T>(
        &self,
        spec: &OptionSpec,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, PipelineError> {
        match self.entry(spec) {
            Some(e) => parse(&e.value)
                .map(Some)
                .map_err(|m| self.value_error(e, &m)),
            None => match spec.default {
                OptionDefault::Value(v) => parse(v).map(Some).map_err(|m| {
                    self.error(format!(
                        "internal: the default of option '{}' ({v}) does not read: {m}",
                        spec.name
                    ))
                }),
                OptionDefault::Required => Err(self.missing(spec)),
                OptionDefault::Unset | OptionDefault::Derived(_) => Ok(None),
            },
        }
    }

    /// `spec` as a `T`: as written, else its default value, else `None`.
    pub fn optional<T: OptionValue>(&self, spec: &OptionSpec) -> Result<Option<T>, PipelineError> {
        self.parse_with(spec, |v| T::from_option(v, spec))
    }

    /// `spec` as a `T`: as written, else its default value; an error when it has neither.
    pub fn value<T: OptionValue>(&self, spec: &OptionSpec) -> Result<T, PipelineError> {
        self.optional(spec)?.ok_or_else(|| match spec.default {
            OptionDefault::Required => self.missing(spec),
            _ => self.error(format!(
                "internal: option '{}' has no default value",
                spec.name
            )),
        })
    }

    /// Errors for every key no declaration names.
    pub fn unknown(&self, connector: &str) -> Vec<PipelineError> {
        self.unknown_for(&format!("connector '{connector}'"))
    }

    /// Errors for keys no declaration names, for options of `what` (e.g. "a view").
    pub fn unknown_for(&self, what: &str) -> Vec<PipelineError> {
        let known: Vec<&str> = self.declared.iter().map(|d| d.name).collect();
        self.entries
            .iter()
            .filter(|e| !known.contains(&e.key.as_str()))
            .map(|e| {
                PipelineError::new(
                    &self.file,
                    e.key_location,
                    format!(
                        "unknown option '{}' for {what} (known options: {})",
                        e.key,
                        known.join(", ")
                    ),
                )
            })
            .collect()
    }
}

/// Parses a size such as `65536`, `256KiB` or `1MiB` (bytes).
pub fn parse_size(value: &str) -> Result<u64, String> {
    value
        .trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|_| "expected a size such as '65536', '256KiB' or '1MiB'".to_string())
}

/// Parses a duration such as `2s`, `500ms`, `1m`, `1 minute` or `1h30m`.
pub fn parse_duration(v: &str) -> Result<Duration, String> {
    humantime::parse_duration(v.trim())
        .map_err(|e| format!("expected a duration such as '2s', '500ms' or '1m' ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: OptionSpec =
        OptionSpec::new("wait", OptionType::Duration, "how long to wait").default("2s");
    const SIZE: OptionSpec = OptionSpec::new("size", OptionType::Bytes, "how much");
    const MODE: OptionSpec =
        OptionSpec::new("mode", OptionType::Choice(&["fast", "slow"]), "how").required();
    const ALL: [OptionSpec; 3] = [WAIT, SIZE, MODE];

    fn options(entries: &[(&str, &str)]) -> Options {
        let at = Location { line: 1, column: 1 };
        let mut o = Options::new(
            "p.sql",
            at,
            entries
                .iter()
                .map(|(k, v)| OptionEntry {
                    key: k.to_string(),
                    value: v.to_string(),
                    key_location: at,
                    value_location: at,
                })
                .collect(),
        );
        o.declare(ALL.iter());
        o
    }

    #[test]
    fn defaults_values_and_unknown_keys() {
        let o = options(&[("size", "1KiB"), ("mode", "SLOW"), ("colour", "red")]);
        assert_eq!(o.value::<Duration>(&WAIT).unwrap(), Duration::from_secs(2));
        assert_eq!(o.optional::<u64>(&SIZE).unwrap(), Some(1024));
        assert_eq!(o.value::<String>(&MODE).unwrap(), "slow");
        let unknown = o.unknown("c");
        assert_eq!(unknown.len(), 1);
        assert!(unknown[0].message.contains("unknown option 'colour'"));
        assert!(
            unknown[0]
                .message
                .contains("known options: wait, size, mode")
        );
    }

    #[test]
    fn errors_name_the_option() {
        let o = options(&[("wait", "soon"), ("mode", "medium")]);
        let e = o.value::<Duration>(&WAIT).unwrap_err();
        assert!(
            e.message
                .starts_with("option 'wait' = 'soon': expected a duration")
        );
        let e = o.value::<String>(&MODE).unwrap_err();
        assert!(e.message.contains("expected one of fast, slow"), "{e}");
        let none = options(&[]);
        let e = none.value::<String>(&MODE).unwrap_err();
        assert_eq!(e.message, "missing required option 'mode' (how)");
        assert_eq!(none.optional::<u64>(&SIZE).unwrap(), None);
    }

    #[test]
    fn table_lists_every_option() {
        let t = markdown_table(&ALL);
        assert!(t.contains("| `wait` | duration | `2s` | how long to wait |"));
        assert!(t.contains("| `mode` | fast/slow | required | how |"));
    }
}
