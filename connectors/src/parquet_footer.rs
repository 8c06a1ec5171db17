//! A bound on the work of reading a Parquet footer, checked before the `parquet` crate parses
//! it.
//!
//! The footer is Thrift compact protocol. When the `parquet` crate skips a field it does
//! not know, it takes the elements of a list of booleans as zero bytes each, so a footer of a
//! few hundred bytes that declares a list of 2³¹ booleans (nested lists multiply it) keeps
//! it busy for seconds to hours (found by fuzzing the spill-file reader). This walk follows
//! the footer the way that skip does, counting every value it visits, and refuses a footer
//! that would make the reader visit many more values than it has bytes; a real footer
//! visits at most about one value per byte (no Parquet structure holds a list of booleans).

use std::io::{Read, Seek, SeekFrom};

use anyhow::{Context, bail};

/// The trailing magic of an unencrypted Parquet file.
const MAGIC: &[u8; 4] = b"PAR1";
/// How deep structures may nest (the `parquet` crate's own skip limit).
const MAX_DEPTH: u32 = 64;

/// Checks the footer of the Parquet file `data` (the whole file). Files that are not plain
/// Parquet (too short, another magic, such as an encrypted footer) are left to the reader
/// to refuse.
pub fn check(data: &[u8]) -> anyhow::Result<()> {
    let Some(footer) = footer_of(data)? else {
        return Ok(());
    };
    walk(footer)
}

/// Checks the footer of the Parquet file `file`, reading only its end.
pub fn check_file(file: &mut (impl Read + Seek)) -> anyhow::Result<()> {
    let len = file.seek(SeekFrom::End(0))?;
    if len < 8 {
        return Ok(());
    }
    let mut tail = [0u8; 8];
    file.seek(SeekFrom::End(-8))?;
    file.read_exact(&mut tail)?;
    let Some(footer_len) = footer_len(&tail, len)? else {
        return Ok(());
    };
    let mut footer = vec![0u8; footer_len];
    file.seek(SeekFrom::End(-8 - footer_len as i64))?;
    file.read_exact(&mut footer)?;
    file.seek(SeekFrom::Start(0))?;
    walk(&footer)
}

fn footer_of(data: &[u8]) -> anyhow::Result<Option<&[u8]>> {
    let Some(tail) = data.len().checked_sub(8).map(|at| &data[at..]) else {
        return Ok(None);
    };
    Ok(footer_len(tail, data.len() as u64)?.map(|n| &data[data.len() - 8 - n..data.len() - 8]))
}

/// The footer's length from the file's last 8 bytes, for a file of `file_len` bytes.
fn footer_len(tail: &[u8], file_len: u64) -> anyhow::Result<Option<usize>> {
    if &tail[4..8] != MAGIC {
        return Ok(None);
    }
    let n = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
    if u64::from(n) + 8 > file_len {
        bail!("corrupt Parquet footer: it claims {n} bytes, more than the file holds");
    }
    Ok(Some(n as usize))
}

fn walk(footer: &[u8]) -> anyhow::Result<()> {
    let mut w = Walk {
        buf: footer,
        pos: 0,
        visits: 0,
        max_visits: 2 * footer.len() as u64 + 1024,
    };
    w.value(12, MAX_DEPTH)
        .context("corrupt Parquet footer (refused before parsing)")
}

/// A position in the footer and the values visited so far.
struct Walk<'a> {
    buf: &'a [u8],
    pos: usize,
    visits: u64,
    max_visits: u64,
}

impl Walk<'_> {
    fn byte(&mut self) -> anyhow::Result<u8> {
        let b = *self.buf.get(self.pos).context("ends inside a value")?;
        self.pos += 1;
        Ok(b)
    }

    fn skip(&mut self, n: u64) -> anyhow::Result<()> {
        let end = usize::try_from(n)
            .ok()
            .and_then(|n| self.pos.checked_add(n))
            .filter(|&end| end <= self.buf.len())
            .context("a value runs past its end")?;
        self.pos = end;
        Ok(())
    }

    fn varint(&mut self) -> anyhow::Result<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        bail!("a varint longer than 10 bytes")
    }

    /// Visits one value of compact-protocol type `ty`.
    fn value(&mut self, ty: u8, depth: u32) -> anyhow::Result<()> {
        self.visits += 1;
        if self.visits > self.max_visits {
            bail!(
                "more than {} values in {} bytes (a list of booleans declared far larger than the footer)",
                self.max_visits,
                self.buf.len()
            );
        }
        if depth == 0 {
            bail!("nested more than {MAX_DEPTH} levels deep");
        }
        match ty {
            // booleans: in the field header, and no bytes as list elements for the reader
            1 | 2 => Ok(()),
            3 => self.byte().map(drop),
            4..=6 => self.varint().map(drop),
            7 => self.skip(8),
            8 => {
                let n = self.varint()?;
                self.skip(n)
            }
            9 | 10 => {
                let header = self.byte()?;
                let mut size = u64::from(header >> 4);
                if size == 15 {
                    size = self.varint()?;
                }
                for _ in 0..size {
                    self.value(header & 0x0f, depth - 1)?;
                }
                Ok(())
            }
            11 => {
                let size = self.varint()?;
                if size > 0 {
                    let types = self.byte()?;
                    for _ in 0..size {
                        self.value(types >> 4, depth - 1)?;
                        self.value(types & 0x0f, depth - 1)?;
                    }
                }
                Ok(())
            }
            12 => loop {
                let header = self.byte()?;
                if header == 0 {
                    return Ok(());
                }
                if header >> 4 == 0 {
                    self.varint()?; // the field id, when not a delta
                }
                self.value(header & 0x0f, depth - 1)?;
            },
            13 => self.skip(16),
            other => bail!("unknown value type {other}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{BooleanArray, Int64Array, StringArray};
    use arrow::record_batch::RecordBatch;
    use parquet::arrow::ArrowWriter;

    use super::*;

    /// A Parquet file with a few columns of each kind and key-value metadata.
    fn real_file() -> Vec<u8> {
        let batch = RecordBatch::try_from_iter([
            (
                "machine",
                Arc::new(StringArray::from(vec!["M1", "M2"])) as _,
            ),
            ("seq", Arc::new(Int64Array::from(vec![1, 2])) as _),
            ("ok", Arc::new(BooleanArray::from(vec![true, false])) as _),
        ])
        .unwrap();
        let mut out = Vec::new();
        let mut w = ArrowWriter::try_new(&mut out, batch.schema(), None).unwrap();
        w.write(&batch).unwrap();
        w.append_key_value_metadata(parquet::file::metadata::KeyValue::new(
            "k".into(),
            "v".to_string(),
        ));
        w.close().unwrap();
        out
    }

    /// `footer` as the footer of a file.
    fn file_with_footer(footer: &[u8]) -> Vec<u8> {
        let mut f = b"PAR1".to_vec();
        f.extend_from_slice(footer);
        f.extend_from_slice(&(footer.len() as u32).to_le_bytes());
        f.extend_from_slice(b"PAR1");
        f
    }

    #[test]
    fn real_footers_pass() {
        let data = real_file();
        check(&data).unwrap();
        check_file(&mut std::io::Cursor::new(&data)).unwrap();
        // not Parquet at all: left to the reader
        check(b"hello").unwrap();
    }

    #[test]
    fn a_huge_list_of_booleans_is_refused_at_once() {
        // FileMetaData { field 1: list<bool> of 2^31 elements }, as a fuzzer found it: the
        // reader would visit every element without consuming a byte
        let footer = [0x19, 0xf1, 0x80, 0x80, 0x80, 0x80, 0x08, 0x00];
        let start = std::time::Instant::now();
        let e = check(&file_with_footer(&footer)).unwrap_err();
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
        assert!(format!("{e:#}").contains("list of booleans"), "{e:#}");
        // nested lists
        let nested = [
            0x19, 0xf9, 0xff, 0xff, 0xff, 0x0f, 0xf1, 0xff, 0xff, 0xff, 0x0f,
        ];
        assert!(check(&file_with_footer(&nested)).is_err());
    }

    #[test]
    fn the_spill_file_the_fuzzer_found_is_refused_at_once() {
        // 878 bytes that kept the metadata reader busy for 7 s (19 s under load)
        let data = include_bytes!("../../fuzz/corpus/spill_file/slow-bool-list");
        let start = std::time::Instant::now();
        let e = crate::object_store::spill::inspect(&bytes::Bytes::from_static(data));
        assert!(e.is_err());
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn truncated_and_lying_footers_are_refused() {
        let data = real_file();
        let n = data.len();
        // the length claims more than the file
        let mut lying = data.clone();
        lying[n - 8..n - 4].copy_from_slice(&(n as u32).to_le_bytes());
        assert!(check(&lying).is_err());
        // a binary longer than what follows, and a footer cut short
        assert!(check(&file_with_footer(&[0x18, 0xff, 0x01, b'a'])).is_err());
        assert!(check(&file_with_footer(&[0x15])).is_err());
        // deeper than 64 levels
        let deep: Vec<u8> = std::iter::repeat_n(0x1c, 70).collect();
        assert!(format!("{:#}", check(&file_with_footer(&deep)).unwrap_err()).contains("nested"));
    }
}
