//! CSV and NDJSON files read record by record (a record is a line; a CSV record may span
//! lines inside quotes), decoded a batch at a time by arrow's own decoders and, when a batch
//! fails, record by record, so that a bad record costs only itself: it is skipped and
//! reported with its line number, and every other record is kept.

use std::io::BufRead;

use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

use super::settings::InputFormat;
use super::times::{parse_times, text_schema};
use crate::columns::EpochUnit;

/// Consecutive records of a text file in one buffer, as they were read.
#[derive(Debug)]
pub struct Chunk {
    /// The records' bytes one after another, line ends included.
    bytes: Vec<u8>,
    /// Where each record starts in `bytes`.
    starts: Vec<usize>,
    /// 1-based line number of the first record's first line.
    first_line: u64,
}

impl Chunk {
    /// Records one after another in `bytes`, each starting at its offset in `starts`, the
    /// first on line `first_line` (1-based).
    pub fn new(bytes: Vec<u8>, starts: Vec<usize>, first_line: u64) -> Self {
        Self {
            bytes,
            starts,
            first_line,
        }
    }

    /// Its bytes as text, when they are UTF-8.
    pub fn text(&self) -> Option<&str> {
        std::str::from_utf8(&self.bytes).ok()
    }

    /// How many records it holds.
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    /// True when it holds no record (the input ended).
    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// Its records' bytes.
    fn record_bytes(&self) -> impl Iterator<Item = &[u8]> {
        let ends = self.starts.iter().skip(1).copied();
        let ends = ends.chain(std::iter::once(self.bytes.len()));
        self.starts
            .iter()
            .zip(ends)
            .map(|(&a, b)| &self.bytes[a..b])
    }

    /// Its records, each with the line it starts on.
    fn records(&self) -> impl Iterator<Item = (u64, &[u8])> {
        let mut line = self.first_line;
        self.starts.iter().enumerate().map(move |(i, &start)| {
            let end = self.starts.get(i + 1).copied().unwrap_or(self.bytes.len());
            let record = &self.bytes[start..end];
            let first = line;
            line += record.iter().filter(|b| **b == b'\n').count() as u64;
            (first, record)
        })
    }
}

/// A record that did not decode.
#[derive(Debug, Clone)]
pub struct BadRecord {
    /// Its first line.
    pub line: u64,
    /// `malformed`, `wrong_type`, `out_of_range`, `field_count`: a metric label.
    pub reason: &'static str,
    /// The decoder's message.
    pub detail: String,
    /// The record as written.
    pub bytes: Vec<u8>,
}

/// Reads records from a text file: lines, joined while a CSV record's quotes are open.
pub struct Records<R> {
    input: R,
    csv: bool,
    line: u64,
}

impl<R: BufRead> Records<R> {
    /// Records of `input`, in the record syntax of `format`.
    pub fn new(input: R, format: InputFormat) -> Self {
        Self {
            input,
            csv: format == InputFormat::Csv,
            line: 0,
        }
    }

    /// The next `max` records (fewer at the end of the input, none after it), in one buffer.
    pub fn next_chunk(&mut self, max: usize) -> std::io::Result<Chunk> {
        let mut chunk = Chunk {
            bytes: Vec::new(),
            starts: Vec::with_capacity(max.min(1 << 16)),
            first_line: self.line + 1,
        };
        while chunk.starts.len() < max {
            let start = chunk.bytes.len();
            if !self.read_record(&mut chunk.bytes)? {
                break;
            }
            chunk.starts.push(start);
        }
        Ok(chunk)
    }

    /// Reads past the next record; false at the end of the input.
    pub fn skip_record(&mut self) -> std::io::Result<bool> {
        self.read_record(&mut Vec::new())
    }

    /// Appends the next record to `bytes`; false at the end of the input.
    fn read_record(&mut self, bytes: &mut Vec<u8>) -> std::io::Result<bool> {
        let begin = bytes.len();
        let mut quotes = 0usize;
        loop {
            let before = bytes.len();
            let n = self.input.read_until(b'\n', bytes)?;
            if n == 0 {
                break;
            }
            self.line += 1;
            if self.csv {
                quotes += bytes[before..].iter().filter(|b| **b == b'"').count();
                if quotes % 2 == 1 {
                    continue; // a quoted field goes on on the next line
                }
            }
            break;
        }
        Ok(bytes.len() > begin)
    }
}

/// True when a record holds nothing but white space (blank lines are not records).
fn is_blank(record: &[u8]) -> bool {
    record.iter().all(u8::is_ascii_whitespace)
}

/// Why a record failed, from the decoder's message.
pub fn reason(format: InputFormat, e: &ArrowError) -> &'static str {
    let m = e.to_string().to_ascii_lowercase();
    if m.contains("incorrect number of fields") || m.contains("number of fields") {
        "field_count"
    } else if m.contains("overflow") || m.contains("out of range") || m.contains("too large") {
        "out_of_range"
    } else if m.contains("whilst decoding field")
        || m.contains("cannot parse column")
        || m.contains("error while parsing")
        || m.contains("cannot parse")
        || m.contains("parser error")
        || m.contains("cast error")
        || m.contains("expected")
            && (m.contains("got") || m.contains("found"))
            && format == InputFormat::Ndjson
            && !m.contains("json error: expected")
    {
        "wrong_type"
    } else {
        "malformed"
    }
}

/// Decodes `rows` records, one after another in `bytes`, into a batch of `schema` (CSV
/// positionally, as the declared columns); times are RFC 3339 text or epoch numbers of `unit`.
fn decode(
    schema: &SchemaRef,
    format: InputFormat,
    unit: EpochUnit,
    rows: usize,
    bytes: &[u8],
) -> Result<Option<RecordBatch>, ArrowError> {
    let read = text_schema(schema);
    let batch = match format {
        InputFormat::Csv => {
            let mut d = arrow::csv::ReaderBuilder::new(read)
                .with_header(false)
                .with_batch_size(rows.max(1))
                .build_decoder();
            feed(bytes, |b| d.decode(b))?;
            if !bytes.ends_with(b"\n") {
                // a last record without a line end
                feed(b"\n", |b| d.decode(b))?;
            }
            d.flush()?
        }
        _ => {
            // numbers may fill text columns, and the times read as text
            let mut d = arrow::json::ReaderBuilder::new(read)
                .with_batch_size(rows.max(1))
                .with_coerce_primitive(true)
                .build_decoder()?;
            feed(bytes, |b| d.decode(b))?;
            d.flush()?
        }
    };
    batch.map(|b| parse_times(b, schema, unit)).transpose()
}

/// Hands all of `bytes` to a decoder that may take them in parts (a decoder holding a full
/// batch takes nothing more, which is fine for the line end after its last record).
fn feed(
    mut bytes: &[u8],
    mut decode: impl FnMut(&[u8]) -> Result<usize, ArrowError>,
) -> Result<(), ArrowError> {
    while !bytes.is_empty() {
        let n = decode(bytes)?;
        if n == 0 && bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        if n == 0 {
            return Err(ArrowError::ParseError("the decoder took no input".into()));
        }
        bytes = &bytes[n..];
    }
    Ok(())
}

/// The records decoded, those that do not decode set aside: the whole chunk first, then,
/// when it fails, one record at a time.
pub fn decode_isolating(
    schema: &SchemaRef,
    format: InputFormat,
    unit: EpochUnit,
    chunk: Chunk,
) -> (Vec<RecordBatch>, Vec<BadRecord>) {
    let blanks = chunk.record_bytes().filter(|r| is_blank(r)).count();
    let rows = chunk.len() - blanks;
    if rows == 0 {
        return (vec![], vec![]);
    }
    let whole: std::borrow::Cow<[u8]> = if blanks == 0 {
        (&chunk.bytes).into()
    } else {
        let kept = chunk.record_bytes().filter(|r| !is_blank(r));
        kept.flatten().copied().collect::<Vec<u8>>().into()
    };
    if let Ok(b) = decode(schema, format, unit, rows, &whole) {
        return (b.into_iter().collect(), vec![]);
    }
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for (line, record) in chunk.records().filter(|(_, r)| !is_blank(r)) {
        match decode(schema, format, unit, 1, record) {
            Ok(b) => good.extend(b),
            Err(e) => bad.push(BadRecord {
                line,
                reason: reason(format, &e),
                detail: e.to_string(),
                bytes: record.to_vec(),
            }),
        }
    }
    (good, bad)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::AsArray;
    use arrow::datatypes::{DataType, Field, Int64Type, Schema, TimeUnit};

    use super::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
            Field::new("v", DataType::Int64, true),
        ]))
    }

    fn records(text: &str, format: InputFormat) -> Chunk {
        Records::new(text.as_bytes(), format)
            .next_chunk(usize::MAX)
            .unwrap()
    }

    fn values(batches: &[RecordBatch]) -> Vec<i64> {
        batches
            .iter()
            .flat_map(|b| b.column(1).as_primitive::<Int64Type>().values().to_vec())
            .collect()
    }

    #[test]
    fn bad_json_lines_are_set_aside_with_their_line_numbers() {
        let text = "{\"ts\": \"2026-01-01T00:00:00Z\", \"v\": 1}\n\
                    {\"ts\": \"2026-01-01T00:00:01Z\", \"v\": NaN}\n\
                    \n\
                    {\"ts\": \"2026-01-01T00:00:02Z\", \"v\": \"seven\"}\n\
                    {\"ts\": \"3000-01-01T00:00:00Z\", \"v\": 4}\n\
                    {\"ts\": \"2026-01-01T00:00:03Z\", \"v\": 5}";
        let (good, bad) = decode_isolating(
            &schema(),
            InputFormat::Ndjson,
            EpochUnit::Millis,
            records(text, InputFormat::Ndjson),
        );
        assert_eq!(values(&good), vec![1, 5]);
        let lines: Vec<(u64, &str)> = bad.iter().map(|b| (b.line, b.reason)).collect();
        assert_eq!(
            lines.iter().map(|l| l.0).collect::<Vec<_>>(),
            vec![2, 4, 5],
            "{bad:#?}"
        );
        assert_eq!(lines[0].1, "malformed", "{bad:#?}");
        assert_ne!(lines[1].1, "malformed", "{bad:#?}");
    }

    /// A reader that hands out one byte per read.
    struct Trickle<'a>(&'a [u8]);

    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let Some((first, rest)) = self.0.split_first() else {
                return Ok(0);
            };
            out[0] = *first;
            self.0 = rest;
            Ok(1)
        }
    }

    #[test]
    fn records_are_cut_the_same_whatever_the_reads_and_chunk_sizes() {
        let text = "a,1\n\"b\nc\",2\n\n\"q\"\"x\",3\nd,4";
        let whole = records(text, InputFormat::Csv);
        let want: Vec<(u64, &[u8])> = whole.records().collect();
        let lines: Vec<u64> = want.iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, vec![1, 2, 4, 5, 6]);
        assert_eq!(want[1].1, b"\"b\nc\",2\n");
        assert_eq!(want[4].1, b"d,4");
        for max in [1, 2, 3, 10] {
            let mut r = Records::new(
                std::io::BufReader::with_capacity(1, Trickle(text.as_bytes())),
                InputFormat::Csv,
            );
            let mut got = Vec::new();
            loop {
                let chunk = r.next_chunk(max).unwrap();
                if chunk.is_empty() {
                    break;
                }
                assert!(chunk.len() <= max);
                got.extend(chunk.records().map(|(l, b)| (l, b.to_vec())));
            }
            let got: Vec<(u64, &[u8])> = got.iter().map(|(l, b)| (*l, b.as_slice())).collect();
            assert_eq!(got, want, "chunks of {max}");
        }
    }

    #[test]
    fn csv_records_span_quoted_line_ends_and_bad_ones_are_set_aside() {
        let s: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, true),
            Field::new("v", DataType::Int64, true),
        ]));
        let text = "a,1\n\"b\nc\",2\nd,3,extra\ne,x\nf,6\n";
        let recs = records(text, InputFormat::Csv);
        assert_eq!(
            recs.records().map(|(line, _)| line).collect::<Vec<_>>(),
            vec![1, 2, 4, 5, 6]
        );
        let (good, bad) = decode_isolating(&s, InputFormat::Csv, EpochUnit::Millis, recs);
        assert_eq!(values(&good), vec![1, 2, 6]);
        assert_eq!(good.iter().map(|b| b.num_rows()).sum::<usize>(), 3);
        let got: Vec<(u64, &str)> = bad.iter().map(|b| (b.line, b.reason)).collect();
        assert_eq!(got, vec![(4, "field_count"), (5, "wrong_type")], "{bad:#?}");
    }
}
