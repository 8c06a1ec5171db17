//! `CREATE TABLE ... WITH (connector = 'file', path, format)`: a reference table read whole
//! from a CSV (with a header line naming the declared columns), NDJSON, JSON (an array of
//! objects, or one object per line) or Parquet file. A record that does not decode fails the
//! load with its `file:line`: a table is used whole or not at all.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use weir_engine::connector::{TableLoader, TableSpec};

use super::records::{BadRecord, Chunk, Records, decode_isolating};
use super::settings::InputFormat;
use crate::columns::EpochUnit;
use crate::conform::conform;

/// Records decoded at a time.
const CHUNK: usize = 8192;

/// How the table's file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableFormat {
    /// Parquet.
    Parquet,
    /// CSV with a header line.
    Csv,
    /// One JSON object per line.
    Ndjson,
    /// A JSON array of objects (or one object per line).
    Json,
}

impl TableFormat {
    /// The format called `name`.
    pub fn named(name: &str) -> Option<Self> {
        match name {
            "parquet" => Some(Self::Parquet),
            "csv" => Some(Self::Csv),
            "ndjson" | "jsonl" => Some(Self::Ndjson),
            "json" => Some(Self::Json),
            _ => None,
        }
    }

    /// The format a file's extension names.
    pub fn from_extension(p: &Path) -> Option<Self> {
        Self::named(&p.extension()?.to_str()?.to_ascii_lowercase())
    }
}

/// Reads one file as a reference table.
#[derive(Debug)]
pub struct FileTable {
    path: PathBuf,
    format: TableFormat,
    schema: SchemaRef,
    unit: EpochUnit,
    max_bytes: u64,
}

impl FileTable {
    /// The table `spec` read from `path` (relative: to the pipeline file's directory).
    pub fn new(spec: &TableSpec, path: &Path, format: TableFormat, unit: EpochUnit) -> Self {
        let path = if path.is_relative() {
            spec.base_dir.join(path)
        } else {
            path.to_path_buf()
        };
        Self {
            path,
            format,
            schema: spec.schema.clone(),
            unit,
            max_bytes: spec.max_bytes,
        }
    }

    /// Refuses what is not a regular file, or a file larger than `max_bytes`.
    fn check_file(&self) -> anyhow::Result<()> {
        let m = std::fs::metadata(&self.path)
            .with_context(|| format!("cannot read {}", self.where_()))?;
        if !m.is_file() {
            bail!("{}: not a regular file", self.where_());
        }
        if m.len() > self.max_bytes {
            bail!(
                "{}: the file is {} bytes, more than max_bytes = {} (raise max_bytes or trim the file)",
                self.where_(),
                m.len(),
                self.max_bytes
            );
        }
        Ok(())
    }

    /// Adds a decoded batch, refusing to hold more than `max_bytes`.
    fn collect(
        &self,
        out: &mut Vec<RecordBatch>,
        held: &mut u64,
        b: RecordBatch,
    ) -> anyhow::Result<()> {
        *held += b.get_array_memory_size() as u64;
        if *held > self.max_bytes {
            bail!(
                "{}: more than max_bytes = {} once decoded (raise max_bytes or trim the file)",
                self.where_(),
                self.max_bytes
            );
        }
        out.push(b);
        Ok(())
    }

    fn where_(&self) -> String {
        self.path.display().to_string()
    }

    fn parquet(&self) -> anyhow::Result<Vec<RecordBatch>> {
        let file =
            File::open(&self.path).with_context(|| format!("cannot open {}", self.where_()))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)
            .with_context(|| format!("{}: not a Parquet file", self.where_()))?;
        let file_schema = builder.schema().clone();
        let mut columns = Vec::new();
        for f in self.schema.fields() {
            match file_schema
                .fields()
                .iter()
                .position(|g| g.name().eq_ignore_ascii_case(f.name()))
            {
                Some(i) => columns.push(i),
                None => bail!(
                    "{}: the file has no column '{}' (it has: {})",
                    self.where_(),
                    f.name(),
                    file_schema
                        .fields()
                        .iter()
                        .map(|g| g.name().as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        }
        let mask = parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), columns.clone());
        let reader = builder.with_projection(mask).build()?;
        let mut out = Vec::new();
        let mut held = 0;
        let mut row = 0usize;
        for b in reader {
            let b = b.with_context(|| format!("reading {}", self.where_()))?;
            // the projection keeps the file's column order: put them in the declared order
            let mut sorted: Vec<usize> = columns.clone();
            sorted.sort_unstable();
            let order: Vec<usize> = columns
                .iter()
                .map(|c| sorted.iter().position(|s| s == c).expect("projected"))
                .collect();
            let b = b.project(&order)?;
            let b = conform(&b, &self.schema).map_err(|e| {
                anyhow!(
                    "{}: rows {}..{}: {e}",
                    self.where_(),
                    row + 1,
                    row + b.num_rows()
                )
            })?;
            row += b.num_rows();
            self.collect(&mut out, &mut held, b)?;
        }
        Ok(out)
    }

    /// CSV or NDJSON, record by record.
    fn text(&self, format: InputFormat) -> anyhow::Result<Vec<RecordBatch>> {
        let file =
            File::open(&self.path).with_context(|| format!("cannot open {}", self.where_()))?;
        let mut records = Records::new(BufReader::new(file), format);
        let read = |e| anyhow!("reading {}: {e}", self.where_());
        if format == InputFormat::Csv {
            let header = records.next_chunk(1).map_err(read)?;
            self.check_header(&header)?;
        }
        let mut out = Vec::new();
        let mut held = 0;
        loop {
            let chunk = records.next_chunk(CHUNK).map_err(read)?;
            if chunk.is_empty() {
                return Ok(out);
            }
            let (good, bad) = decode_isolating(&self.schema, format, self.unit, chunk);
            self.refuse(&bad)?;
            for b in good {
                self.collect(&mut out, &mut held, conform(&b, &self.schema)?)?;
            }
        }
    }

    /// A JSON array of objects (or, when the file does not start with `[`, NDJSON).
    fn json(&self) -> anyhow::Result<Vec<RecordBatch>> {
        let mut text = Vec::new();
        File::open(&self.path)
            .and_then(|mut f| f.read_to_end(&mut text))
            .with_context(|| format!("cannot read {}", self.where_()))?;
        let Some(chunk) = array_records(&mut text)
            .map_err(|(line, m)| anyhow!("{}:{line}: {m}", self.where_()))?
        else {
            return self.text(InputFormat::Ndjson);
        };
        let (good, bad) = decode_isolating(&self.schema, InputFormat::Ndjson, self.unit, chunk);
        self.refuse(&bad)?;
        good.iter()
            .map(|b| conform(b, &self.schema).map_err(Into::into))
            .collect()
    }

    /// The CSV header must name the declared columns, in order (case aside).
    fn check_header(&self, header: &Chunk) -> anyhow::Result<()> {
        let line = header.text().unwrap_or_default();
        let names: Vec<String> = line
            .trim_end_matches(['\r', '\n'])
            .split(',')
            .map(|n| n.trim().trim_matches('"').to_string())
            .collect();
        let declared: Vec<&str> = self
            .schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        let same = names.len() == declared.len()
            && names
                .iter()
                .zip(&declared)
                .all(|(a, b)| a.eq_ignore_ascii_case(b));
        if !same {
            bail!(
                "{}:1: the header names the columns ({}), the table declares ({}): CSV columns are read in order, so they must match",
                self.where_(),
                names.join(", "),
                declared.join(", ")
            );
        }
        Ok(())
    }

    /// Fails on the first bad record, naming its line.
    fn refuse(&self, bad: &[BadRecord]) -> anyhow::Result<()> {
        if let Some(b) = bad.first() {
            let more = match bad.len() {
                1 => String::new(),
                n => format!(" ({} more bad records in the same chunk)", n - 1),
            };
            bail!(
                "{}:{}: record does not decode ({}): {}{more}",
                self.where_(),
                b.line,
                b.reason,
                b.detail
            );
        }
        Ok(())
    }
}

/// The elements of a JSON array as records, each starting on its own line number; `None`
/// when the text is not an array. Separating commas and the closing bracket become spaces.
fn array_records(text: &mut [u8]) -> Result<Option<Chunk>, (u64, String)> {
    let Some(open) = text.iter().position(|b| !b.is_ascii_whitespace()) else {
        return Ok(None);
    };
    if text[open] != b'[' {
        return Ok(None);
    }
    let line_at =
        |text: &[u8], i: usize| 1 + text[..i].iter().filter(|b| **b == b'\n').count() as u64;
    let mut starts = Vec::new();
    let (mut depth, mut in_string, mut escaped, mut expect) = (0usize, false, false, true);
    let mut end = None;
    for (i, byte) in text.iter_mut().enumerate().skip(open + 1) {
        let c = *byte;
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        if c.is_ascii_whitespace() {
            continue;
        }
        if depth == 0 {
            match c {
                b',' => {
                    *byte = b' ';
                    expect = true;
                    continue;
                }
                b']' => {
                    *byte = b' ';
                    end = Some(i);
                    break;
                }
                _ if expect => {
                    starts.push(i);
                    expect = false;
                }
                _ => {}
            }
        }
        match c {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    let Some(end) = end else {
        return Err((
            line_at(text, text.len()),
            "the JSON array is not closed".into(),
        ));
    };
    if let Some(extra) = text[end..].iter().position(|b| !b.is_ascii_whitespace()) {
        return Err((
            line_at(text, end + extra),
            "text after the JSON array".into(),
        ));
    }
    let Some(&first) = starts.first() else {
        return Ok(Some(Chunk::new(Vec::new(), Vec::new(), 1)));
    };
    let first_line = line_at(text, first);
    let bytes = text[first..end].to_vec();
    let starts = starts.iter().map(|s| s - first).collect();
    Ok(Some(Chunk::new(bytes, starts, first_line)))
}

impl TableLoader for FileTable {
    fn stamp(&self) -> std::io::Result<String> {
        use std::os::unix::fs::MetadataExt;
        // through symbolic links: a ConfigMap swap changes the file they lead to
        let m = std::fs::metadata(&self.path)?;
        Ok(format!(
            "{}:{}:{}:{}",
            m.dev(),
            m.ino(),
            m.len(),
            m.mtime_nsec() as i128 + m.mtime() as i128 * 1_000_000_000
        ))
    }

    fn load(&self) -> anyhow::Result<Vec<RecordBatch>> {
        self.check_file()?;
        match self.format {
            TableFormat::Parquet => self.parquet(),
            TableFormat::Csv => self.text(InputFormat::Csv),
            TableFormat::Ndjson => self.text(InputFormat::Ndjson),
            TableFormat::Json => self.json(),
        }
    }

    fn location(&self) -> String {
        self.where_()
    }
}
