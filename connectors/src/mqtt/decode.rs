//! Message payloads to rows: JSON objects (or arrays of them) matched to the declared
//! columns, or the raw payload; topic captures, the topic and the arrival time fill columns
//! too. A message decodes whole or not at all.

use std::fmt;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use serde::de::{self, DeserializeSeed, Error as _, MapAccess, SeqAccess, Visitor};

use super::json_fields::{ObjectSeed, Paths, Scalar, Slots};
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
    /// The JSON paths of the `Field` columns.
    paths: Paths,
    columns: Vec<ColumnBuffer>,
    rows: usize,
}

/// What fills a row besides the payload's fields.
struct RowContext<'m> {
    topic: &'m str,
    captured: &'m [Option<&'m str>],
    payload: &'m [u8],
    arrival_ns: i64,
}

fn push_scalar(col: &mut ColumnBuffer, v: &Scalar, unit: EpochUnit) -> Result<(), String> {
    match v {
        Scalar::Null => {
            col.push_null();
            Ok(())
        }
        Scalar::Bool(b) => col.push_bool(*b),
        Scalar::Number(n) => col.push_number(*n, unit),
        Scalar::Str(s) => col.push_text(s, unit),
        Scalar::Nested(v) => col.push_json(v, unit),
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
        let paths = Paths::new(fills.iter().enumerate().filter_map(|(i, f)| match f {
            Fill::Field(path) => Some((i, path.as_slice())),
            _ => None,
        }));
        Decoder {
            schema,
            format,
            unit,
            fills,
            required,
            paths,
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
            Format::Raw => {
                let context = RowContext {
                    topic,
                    captured,
                    payload,
                    arrival_ns,
                };
                self.add_row(&context, None).map(|()| 1)
            }
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
        let context = RowContext {
            topic,
            captured,
            payload,
            arrival_ns,
        };
        let mut found = None;
        let mut rows = 0;
        let mut de = serde_json::Deserializer::from_slice(payload);
        let seed = PayloadSeed {
            decoder: self,
            context: &context,
            skip: &mut found,
            rows: &mut rows,
            item: None,
        };
        match seed.deserialize(&mut de).and_then(|()| de.end()) {
            Ok(()) => Ok(rows),
            Err(e) => Err(found.unwrap_or_else(|| match e.classify() {
                serde_json::error::Category::Data => skip("not_an_object", e.to_string()),
                _ => skip("malformed_json", e.to_string()),
            })),
        }
    }

    fn add_row(&mut self, c: &RowContext, fields: Option<&Slots>) -> Result<(), Skip> {
        let unit = self.unit;
        for (i, col) in self.columns.iter_mut().enumerate() {
            let name = self.schema.field(i).name();
            let at = |e: String| format!("column {name}: {e}");
            if let Some(Some(level)) = c.captured.get(i) {
                col.push_text(level, unit)
                    .map_err(|e| skip("wrong_type", at(format!("topic level {e}"))))?;
                continue;
            }
            match &self.fills[i] {
                Fill::Field(_) => match fields.and_then(|f| f[i].as_ref()) {
                    Some((v, _)) => {
                        push_scalar(col, v, unit).map_err(|e| skip("wrong_type", at(e)))?
                    }
                    None => col.push_null(),
                },
                Fill::Topic => col
                    .push_text(c.topic, unit)
                    .map_err(|e| skip("wrong_type", at(e)))?,
                Fill::Arrival => col.push_time(c.arrival_ns),
                Fill::Payload => col.push_bytes(c.payload, unit).map_err(|e| {
                    let reason = if std::str::from_utf8(c.payload).is_err() {
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

/// Decodes a payload: an object is one row, an array one row per object item.
struct PayloadSeed<'d, 'x> {
    decoder: &'d mut Decoder,
    context: &'x RowContext<'x>,
    /// Why the message is skipped, when a row could not be added.
    skip: &'x mut Option<Skip>,
    rows: &'x mut usize,
    /// Index in the top-level array, for items.
    item: Option<usize>,
}

impl<'de> DeserializeSeed<'de> for PayloadSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for PayloadSeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.item {
            Some(i) => write!(f, "a JSON object as array item {i}"),
            None => f.write_str("a JSON object or an array of objects"),
        }
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let mut slots: Slots<'de> = vec![None; self.decoder.columns.len()];
        ObjectSeed {
            paths: &self.decoder.paths,
            slots: &mut slots,
            exact: true,
        }
        .visit_map(map)?;
        match self.decoder.add_row(self.context, Some(&slots)) {
            Ok(()) => {
                *self.rows += 1;
                Ok(())
            }
            Err(s) => {
                *self.skip = Some(s);
                Err(A::Error::custom("row skipped"))
            }
        }
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.item.is_some() {
            return Err(A::Error::invalid_type(de::Unexpected::Seq, &self));
        }
        let mut i = 0;
        while seq
            .next_element_seed(PayloadSeed {
                decoder: &mut *self.decoder,
                context: self.context,
                skip: &mut *self.skip,
                rows: &mut *self.rows,
                item: Some(i),
            })?
            .is_some()
        {
            i += 1;
        }
        Ok(())
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
