//! Page-header checks that keep a corrupt Parquet file's memory use in proportion to its
//! size.
//!
//! A page header declares sizes that the parquet crate allocates before it checks them: an
//! `uncompressed_page_size` (the decompression buffer) and a dictionary page's `num_values`
//! (the dictionary, zero-filled). A few kilobytes of file can declare gigabytes (found by
//! the `parquet_decode` fuzz target; see also apache/arrow-rs#10734). Page headers are
//! Thrift structures the parquet crate parses privately, so this module reads them itself
//! with a small Thrift compact-protocol reader and checks every page of a column chunk
//! before the chunk's bytes reach the decoder.

use std::ops::Range;

use parquet::basic::Type as PhysicalType;
use parquet::file::metadata::ParquetMetaData;

/// How deep Thrift structures may nest before the header is refused.
const MAX_DEPTH: usize = 16;

/// Limits on what a page may declare.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// No page decompresses to more than this.
    pub(super) max_page_bytes: u64,
    /// A page may decompress to this much whatever its compressed size.
    pub(super) free_page_bytes: u64,
    /// Beyond `free_page_bytes`, the most a page may expand when decompressed.
    pub(super) max_expansion: u64,
}

/// What the checks need to know about a column chunk, from the footer.
#[derive(Debug, Clone)]
pub(super) struct Chunk {
    pub(super) range: Range<u64>,
    pub(super) name: String,
    /// The smallest number of bytes one dictionary value takes.
    min_value_bytes: u64,
    pub(super) checked: bool,
}

/// The column chunks of a file, with checked ranges, or the reason the footer is unusable.
pub(super) fn chunks(metadata: &ParquetMetaData, size: u64) -> Result<Vec<Chunk>, String> {
    let mut out = Vec::new();
    for (g, group) in metadata.row_groups().iter().enumerate() {
        for column in group.columns() {
            let name = format!("row group {g}, column {}", column.column_path());
            let start = column
                .dictionary_page_offset()
                .unwrap_or_else(|| column.data_page_offset());
            let len = column.compressed_size();
            let (Ok(start), Ok(len)) = (u64::try_from(start), u64::try_from(len)) else {
                return Err(format!("{name} has a negative offset or length"));
            };
            let end = start
                .checked_add(len)
                .filter(|e| *e <= size)
                .ok_or_else(|| format!("{name} runs past the end of the {size}-byte file"))?;
            let min_value_bytes = match column.column_type() {
                PhysicalType::BOOLEAN => 0,
                PhysicalType::INT32 | PhysicalType::FLOAT => 4,
                PhysicalType::INT64 | PhysicalType::DOUBLE => 8,
                PhysicalType::INT96 => 12,
                PhysicalType::BYTE_ARRAY => 4,
                PhysicalType::FIXED_LEN_BYTE_ARRAY => {
                    u64::try_from(column.column_descr().type_length()).unwrap_or(0)
                }
            };
            out.push(Chunk {
                range: start..end,
                name,
                min_value_bytes,
                checked: false,
            });
        }
    }
    Ok(out)
}

/// Check every page header of a column chunk (`data` is the whole chunk).
pub(super) fn check_chunk(chunk: &Chunk, data: &[u8], limits: &Limits) -> Result<(), String> {
    let mut pos = 0usize;
    let mut page = 0usize;
    while pos < data.len() {
        let rest = data.get(pos..).unwrap_or_default();
        let (header, header_len) = read_page_header(rest)
            .map_err(|e| format!("{}, page {page}: unreadable page header: {e}", chunk.name))?;
        let at = |what: String| format!("{}, page {page}: {what}", chunk.name);
        let (Ok(compressed), Ok(uncompressed)) = (
            u64::try_from(header.compressed_size),
            u64::try_from(header.uncompressed_size),
        ) else {
            return Err(at("negative page size".into()));
        };
        let body_room = (rest.len() - header_len) as u64;
        if compressed > body_room {
            return Err(at(format!(
                "declares {compressed} bytes but {body_room} remain in the column chunk"
            )));
        }
        let allowed = limits.max_page_bytes.min(
            limits
                .free_page_bytes
                .max(compressed.saturating_mul(limits.max_expansion)),
        );
        if uncompressed > allowed {
            return Err(at(format!(
                "declares {uncompressed} bytes once decompressed from {compressed} (at most {allowed} accepted)"
            )));
        }
        if let Some(values) = header.dictionary_values {
            let Ok(values) = u64::try_from(values) else {
                return Err(at("negative dictionary size".into()));
            };
            let fits = if chunk.min_value_bytes == 0 {
                values <= uncompressed.saturating_mul(8).max(2)
            } else {
                values.saturating_mul(chunk.min_value_bytes) <= uncompressed
            };
            if !fits {
                return Err(at(format!(
                    "a dictionary of {values} values cannot fit in {uncompressed} bytes"
                )));
            }
        }
        pos += header_len + compressed as usize;
        page += 1;
    }
    Ok(())
}

/// What a page header declares.
#[derive(Debug, Default, PartialEq)]
pub(super) struct PageHeader {
    pub(super) uncompressed_size: i64,
    pub(super) compressed_size: i64,
    pub(super) dictionary_values: Option<i64>,
}

/// Read a Thrift compact-protocol `PageHeader`; returns it and its length in bytes.
pub(super) fn read_page_header(buf: &[u8]) -> Result<(PageHeader, usize), String> {
    let mut r = Reader { buf, pos: 0 };
    let mut header = PageHeader::default();
    let mut seen = (false, false);
    let mut last = 0i16;
    while let Some((id, kind)) = r.field_header(&mut last)? {
        match (id, kind) {
            (2, I32) => {
                header.uncompressed_size = r.varint_i64()?;
                seen.0 = true;
            }
            (3, I32) => {
                header.compressed_size = r.varint_i64()?;
                seen.1 = true;
            }
            (7, STRUCT) => {
                let mut inner_last = 0i16;
                while let Some((inner_id, inner_kind)) = r.field_header(&mut inner_last)? {
                    if (inner_id, inner_kind) == (1, I32) {
                        header.dictionary_values = Some(r.varint_i64()?);
                    } else {
                        r.skip(inner_kind, 1)?;
                    }
                }
            }
            (_, kind) => r.skip(kind, 0)?,
        }
    }
    if !(seen.0 && seen.1) {
        return Err("a required page size is missing".into());
    }
    Ok((header, r.pos))
}

const BOOL_TRUE: u8 = 1;
const BOOL_FALSE: u8 = 2;
const BYTE: u8 = 3;
const I16: u8 = 4;
const I32: u8 = 5;
const I64: u8 = 6;
const DOUBLE: u8 = 7;
const BINARY: u8 = 8;
const LIST: u8 = 9;
const SET: u8 = 10;
const MAP: u8 = 11;
const STRUCT: u8 = 12;

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, String> {
        let b = *self.buf.get(self.pos).ok_or("the header is cut short")?;
        self.pos += 1;
        Ok(b)
    }

    fn advance(&mut self, n: u64) -> Result<(), String> {
        let end = (self.pos as u64)
            .checked_add(n)
            .filter(|e| *e <= self.buf.len() as u64)
            .ok_or("the header is cut short")?;
        self.pos = end as usize;
        Ok(())
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..70).step_by(7) {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f).checked_shl(shift).unwrap_or(0);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("a varint is too long".into())
    }

    fn varint_i64(&mut self) -> Result<i64, String> {
        let v = self.varint()?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    /// The next field's id and type, or `None` at the end of the struct.
    fn field_header(&mut self, last: &mut i16) -> Result<Option<(i16, u8)>, String> {
        let b = self.byte()?;
        if b == 0 {
            return Ok(None);
        }
        let kind = b & 0x0f;
        let delta = i16::from(b >> 4);
        let id = if delta == 0 {
            i16::try_from(self.varint_i64()?).map_err(|_| "a field id is out of range")?
        } else {
            last.checked_add(delta)
                .ok_or("a field id is out of range")?
        };
        *last = id;
        Ok(Some((id, kind)))
    }

    /// Every element of a collection takes at least one byte: a collection that claims more
    /// elements than bytes remain is cut short (and would otherwise take long to walk).
    fn check_count(&self, count: u64) -> Result<(), String> {
        if count > (self.buf.len() - self.pos) as u64 {
            return Err(format!(
                "a collection claims {count} elements; the header is cut short"
            ));
        }
        Ok(())
    }

    /// Skip one element of a list, set or map: a boolean there takes one byte.
    fn skip_element(&mut self, kind: u8, depth: usize) -> Result<(), String> {
        if kind == BOOL_TRUE || kind == BOOL_FALSE {
            self.advance(1)
        } else {
            self.skip(kind, depth)
        }
    }

    /// Skip a value of type `kind`.
    fn skip(&mut self, kind: u8, depth: usize) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err("structures nest too deeply".into());
        }
        match kind {
            BOOL_TRUE | BOOL_FALSE => Ok(()),
            BYTE => self.advance(1),
            I16 | I32 | I64 => self.varint().map(|_| ()),
            DOUBLE => self.advance(8),
            BINARY => {
                let len = self.varint()?;
                self.advance(len)
            }
            LIST | SET => {
                let b = self.byte()?;
                let elem = b & 0x0f;
                let count = match b >> 4 {
                    15 => self.varint()?,
                    n => u64::from(n),
                };
                self.check_count(count)?;
                for _ in 0..count {
                    self.skip_element(elem, depth + 1)?;
                }
                Ok(())
            }
            MAP => {
                let count = self.varint()?;
                if count == 0 {
                    return Ok(());
                }
                let kinds = self.byte()?;
                self.check_count(count)?;
                for _ in 0..count {
                    self.skip_element(kinds >> 4, depth + 1)?;
                    self.skip_element(kinds & 0x0f, depth + 1)?;
                }
                Ok(())
            }
            STRUCT => {
                let mut last = 0i16;
                while let Some((_, k)) = self.field_header(&mut last)? {
                    self.skip(k, depth + 1)?;
                }
                Ok(())
            }
            other => Err(format!("unknown Thrift type {other}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_truncated_or_nested_header_is_refused_not_overrun() {
        assert!(read_page_header(&[]).is_err());
        assert!(read_page_header(&[0x15]).is_err());
        // A struct field nesting structs 100 deep.
        let mut deep = vec![0x1c_u8; 100];
        deep.extend(std::iter::repeat_n(0u8, 100));
        let err = read_page_header(&deep).unwrap_err();
        assert!(err.contains("nest"), "{err}");
        // A list that claims 2^60 elements.
        let huge = [
            0x19, 0xf5, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10,
        ];
        assert!(read_page_header(&huge).is_err());
    }
}
