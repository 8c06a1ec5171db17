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

/// One record of a text file and where it starts.
#[derive(Debug, Clone)]
pub struct Record {
    /// 1-based line number of its first line.
    pub line: u64,
    /// Its bytes, line ends included.
    pub bytes: Vec<u8>,
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

    /// The next record; `None` at the end of the input.
    pub fn next_record(&mut self) -> std::io::Result<Option<Record>> {
        let mut bytes = Vec::new();
        let first = self.line + 1;
        let mut quotes = 0usize;
        loop {
            let before = bytes.len();
            let n = self.input.read_until(b'\n', &mut bytes)?;
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
        Ok((!bytes.is_empty()).then_some(Record { line: first, bytes }))
    }
}

/// True when a record holds nothing but white space (blank lines are not records).
pub fn is_blank(r: &Record) -> bool {
    r.bytes.iter().all(u8::is_ascii_whitespace)
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

/// Decodes records into a batch of `schema` (CSV positionally, as the declared columns);
/// times are RFC 3339 text or epoch numbers of `unit`.
fn decode(
    schema: &SchemaRef,
    format: InputFormat,
    unit: EpochUnit,
    records: &[Record],
) -> Result<Option<RecordBatch>, ArrowError> {
    let rows = records.len().max(1);
    let read = text_schema(schema);
    let batch = match format {
        InputFormat::Csv => {
            let mut d = arrow::csv::ReaderBuilder::new(read)
                .with_header(false)
                .with_batch_size(rows)
                .build_decoder();
            for r in records {
                feed(&r.bytes, |b| d.decode(b))?;
            }
            if records.last().is_some_and(|r| !r.bytes.ends_with(b"\n")) {
                // a last record without a line end
                feed(b"\n", |b| d.decode(b))?;
            }
            d.flush()?
        }
        _ => {
            // numbers may fill text columns, and the times read as text
            let mut d = arrow::json::ReaderBuilder::new(read)
                .with_batch_size(rows)
                .with_coerce_primitive(true)
                .build_decoder()?;
            for r in records {
                feed(&r.bytes, |b| d.decode(b))?;
            }
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

/// The records decoded, those that do not decode set aside: the whole group first, then,
/// when it fails, one record at a time.
pub fn decode_isolating(
    schema: &SchemaRef,
    format: InputFormat,
    unit: EpochUnit,
    records: Vec<Record>,
) -> (Vec<RecordBatch>, Vec<BadRecord>) {
    let records: Vec<Record> = records.into_iter().filter(|r| !is_blank(r)).collect();
    if records.is_empty() {
        return (vec![], vec![]);
    }
    if let Ok(b) = decode(schema, format, unit, &records) {
        return (b.into_iter().collect(), vec![]);
    }
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for r in records {
        match decode(schema, format, unit, std::slice::from_ref(&r)) {
            Ok(b) => good.extend(b),
            Err(e) => bad.push(BadRecord {
                line: r.line,
                reason: reason(format, &e),
                detail: e.to_string(),
                bytes: r.bytes,
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

    fn records(text: &str, format: InputFormat) -> Vec<Record> {
        let mut r = Records::new(text.as_bytes(), format);
        std::iter::from_fn(|| r.next_record().unwrap()).collect()
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

    #[test]
    fn csv_records_span_quoted_line_ends_and_bad_ones_are_set_aside() {
        let s: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, true),
            Field::new("v", DataType::Int64, true),
        ]));
        let text = "a,1\n\"b\nc\",2\nd,3,extra\ne,x\nf,6\n";
        let recs = records(text, InputFormat::Csv);
        assert_eq!(
            recs.iter().map(|r| r.line).collect::<Vec<_>>(),
            vec![1, 2, 4, 5, 6]
        );
        let (good, bad) = decode_isolating(&s, InputFormat::Csv, EpochUnit::Millis, recs);
        assert_eq!(values(&good), vec![1, 2, 6]);
        assert_eq!(good.iter().map(|b| b.num_rows()).sum::<usize>(), 3);
        let got: Vec<(u64, &str)> = bad.iter().map(|b| (b.line, b.reason)).collect();
        assert_eq!(got, vec![(4, "field_count"), (5, "wrong_type")], "{bad:#?}");
    }
}
