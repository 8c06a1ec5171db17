//! Message payloads to rows: JSON objects (or arrays of them) matched to the declared
//! columns, or the raw payload; topic captures, the topic and the arrival time fill columns
//! too. A message decodes whole or not at all.

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use serde_json::{Map, Value};

use crate::columns::{ColumnBuffer, EpochUnit};

/// Payload format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object, or an array of objects, per message.
    Json,
    /// The payload itself, into one text or binary column.
    Raw,
}

/// Where a column's values come from (a topic capture, when the message's topic pattern
/// has one for the column, comes first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fill {
    /// A JSON field, by path (`["data", "temp"]` for `data.temp`).
    Field(Vec<String>),
    /// The message's topic.
    Topic,
    /// The time the message arrived.
    Arrival,
    /// The raw payload.
    Payload,
    /// Nothing: always null (raw format, column not otherwise filled).
    Nothing,
}

/// Why a message was skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    /// Metric label: `malformed_json`, `not_an_object`, `missing_field`, `wrong_type`,
    /// `not_utf8`.
    pub reason: &'static str,
    /// What exactly, for the log and the dead-letter file.
    pub detail: String,
}

fn skip(reason: &'static str, detail: impl Into<String>) -> Skip {
    Skip {
        reason,
        detail: detail.into(),
    }
}

/// Turns messages into rows of `schema`, batch by batch.
#[derive(Debug)]
pub struct Decoder {
    schema: SchemaRef,
    format: Format,
    unit: EpochUnit,
    fills: Vec<Fill>,
    required: Vec<bool>,
    columns: Vec<ColumnBuffer>,
    rows: usize,
}

/// `obj[path]`, matching each key exactly or else ignoring case.
fn lookup<'v>(obj: &'v Map<String, Value>, path: &[String]) -> Option<&'v Value> {
    let (first, rest) = path.split_first()?;
    let v = obj.get(first).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(first))
            .map(|(_, v)| v)
    })?;
    if rest.is_empty() {
        Some(v)
    } else {
        lookup(v.as_object()?, rest)
    }
}

impl Decoder {
    /// A decoder for `schema` whose columns come from `fills`; `required[i]` makes a message
    /// without a value for column `i` a skipped message. Every column type must be
    /// [`crate::columns::supported`].
    pub fn new(
        schema: SchemaRef,
        format: Format,
        unit: EpochUnit,
        fills: Vec<Fill>,
        required: Vec<bool>,
    ) -> Decoder {
        let columns = schema
            .fields()
            .iter()
            .map(|f| ColumnBuffer::new(f.data_type()).expect("checked column type"))
            .collect();
        Decoder {
            schema,
            format,
            unit,
            fills,
            required,
            columns,
            rows: 0,
        }
    }

    /// Rows decoded and not yet taken.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Decodes one message; `captured[i]` is the topic's value for column `i`, if its pattern
    /// captures one. Returns the number of rows added.
    pub fn decode(
        &mut self,
        topic: &str,
        captured: &[Option<&str>],
        payload: &[u8],
        arrival_ns: i64,
    ) -> Result<usize, Skip> {
        let before = self.rows;
        let result = match self.format {
            Format::Raw => self
                .add_row(topic, captured, None, payload, arrival_ns)
                .map(|()| 1),
            Format::Json => self.decode_json(topic, captured, payload, arrival_ns),
        };
        if result.is_err() {
            for c in &mut self.columns {
                c.truncate(before);
            }
            self.rows = before;
        }
        result
    }

    fn decode_json(
        &mut self,
        topic: &str,
        captured: &[Option<&str>],
        payload: &[u8],
        arrival_ns: i64,
    ) -> Result<usize, Skip> {
        let v: Value =
            serde_json::from_slice(payload).map_err(|e| skip("malformed_json", e.to_string()))?;
        match &v {
            Value::Object(obj) => {
                self.add_row(topic, captured, Some(obj), payload, arrival_ns)?;
                Ok(1)
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let obj = item.as_object().ok_or_else(|| {
                        skip(
                            "not_an_object",
                            format!("array item {i} is not a JSON object"),
                        )
                    })?;
                    self.add_row(topic, captured, Some(obj), payload, arrival_ns)?;
                }
                Ok(items.len())
            }
            _ => Err(skip(
                "not_an_object",
                "expected a JSON object or an array of objects",
            )),
        }
    }

    fn add_row(
        &mut self,
        topic: &str,
        captured: &[Option<&str>],
        obj: Option<&Map<String, Value>>,
        payload: &[u8],
        arrival_ns: i64,
    ) -> Result<(), Skip> {
        let unit = self.unit;
        for (i, col) in self.columns.iter_mut().enumerate() {
            let name = self.schema.field(i).name();
            let at = |e: String| format!("column {name}: {e}");
            if let Some(Some(level)) = captured.get(i) {
                col.push_text(level, unit)
                    .map_err(|e| skip("wrong_type", at(format!("topic level {e}"))))?;
                continue;
            }
            match &self.fills[i] {
                Fill::Field(path) => match obj.and_then(|o| lookup(o, path)) {
                    Some(v) => col
                        .push_json(v, unit)
                        .map_err(|e| skip("wrong_type", at(e)))?,
                    None => col.push_null(),
                },
                Fill::Topic => col
                    .push_text(topic, unit)
                    .map_err(|e| skip("wrong_type", at(e)))?,
                Fill::Arrival => col.push_time(arrival_ns),
                Fill::Payload => col.push_bytes(payload, unit).map_err(|e| {
                    let reason = if std::str::from_utf8(payload).is_err() {
                        "not_utf8"
                    } else {
                        "wrong_type"
                    };
                    skip(reason, at(e))
                })?,
                Fill::Nothing => col.push_null(),
            }
            if self.required[i] && col.last_is_null() {
                let what = match &self.fills[i] {
                    Fill::Field(path) => {
                        format!("no value for required field '{}'", path.join("."))
                    }
                    _ => format!("no value for required column {name}"),
                };
                return Err(skip("missing_field", what));
            }
        }
        self.rows += 1;
        Ok(())
    }

    /// The decoded rows as a batch; the decoder is empty afterwards.
    pub fn finish(&mut self) -> arrow::error::Result<RecordBatch> {
        let columns = self
            .columns
            .iter_mut()
            .map(ColumnBuffer::finish)
            .collect::<arrow::error::Result<Vec<_>>>()?;
        self.rows = 0;
        RecordBatch::try_new(self.schema.clone(), columns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{DataType, Field, Float64Type, Schema, TimeUnit};
    use std::sync::Arc;

    fn decoder(format: Format) -> Decoder {
        let schema = Arc::new(Schema::new(vec![
            Field::new("machine", DataType::Utf8, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
            Field::new("temp", DataType::Float64, true),
        ]));
        let fills = match format {
            Format::Json => vec![
                Fill::Field(vec!["machine".into()]),
                Fill::Field(vec!["ts".into()]),
                Fill::Field(vec!["data".into(), "temp".into()]),
            ],
            Format::Raw => vec![Fill::Topic, Fill::Arrival, Fill::Payload],
        };
        Decoder::new(
            schema,
            format,
            EpochUnit::Millis,
            fills,
            vec![false, true, false],
        )
    }

    #[test]
    fn objects_arrays_paths_and_captures() {
        let mut d = decoder(Format::Json);
        let no = [None, None, None];
        assert_eq!(
            d.decode(
                "t",
                &no,
                br#"{"machine":"M1","ts":1000,"data":{"temp":20.5}}"#,
                0
            ),
            Ok(1)
        );
        assert_eq!(
            d.decode(
                "t",
                &[Some("M9"), None, None],
                br#"[{"TS":2000,"data":{"temp":"21"}},{"ts":3000}]"#,
                0
            ),
            Ok(2)
        );
        let b = d.finish().unwrap();
        assert_eq!(b.num_rows(), 3);
        let m = b.column(0).as_string::<i32>();
        assert_eq!((m.value(0), m.value(1), m.value(2)), ("M1", "M9", "M9"));
        let t = b.column(2).as_primitive::<Float64Type>();
        assert_eq!((t.value(0), t.value(1)), (20.5, 21.0));
        assert!(t.is_null(2));
    }

    #[test]
    fn bad_messages_are_skipped_whole() {
        let mut d = decoder(Format::Json);
        let no = [None, None, None];
        d.decode("t", &no, br#"{"ts":1}"#, 0).unwrap();
        let cases: [(&[u8], &str); 5] = [
            (b"{not json", "malformed_json"),
            (b"42", "not_an_object"),
            (br#"[{"ts":5},{"machine":"M2"}]"#, "missing_field"),
            (
                br#"[{"ts":5},{"ts":6,"data":{"temp":"hot"}}]"#,
                "wrong_type",
            ),
            (br#"{"ts":null}"#, "missing_field"),
        ];
        for (payload, reason) in cases {
            let e = d.decode("t", &no, payload, 0).unwrap_err();
            assert_eq!(
                e.reason,
                reason,
                "{}: {}",
                String::from_utf8_lossy(payload),
                e.detail
            );
            assert_eq!(d.rows(), 1, "nothing of a skipped message is kept");
        }
        assert_eq!(d.finish().unwrap().num_rows(), 1);
    }

    #[test]
    fn raw_payloads_need_utf8_for_text() {
        let mut d = decoder(Format::Raw);
        let no = [None, None, None];
        let e = d.decode("a/b", &no, b"12.5", 1_000_000).unwrap();
        assert_eq!(e, 1);
        assert_eq!(
            d.decode("a/b", &no, &[0xff, 0xfe], 0).unwrap_err().reason,
            "not_utf8"
        );
        let b = d.finish().unwrap();
        assert_eq!(b.column(0).as_string::<i32>().value(0), "a/b");
        assert_eq!(b.column(2).as_primitive::<Float64Type>().value(0), 12.5);
    }
}
