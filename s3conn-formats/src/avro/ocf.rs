//! The framing of Avro object container files: zig-zag varints, the header, block heads.
//!
//! ```text
//!  "Obj" 0x01 | metadata map<string, bytes> (avro.schema, avro.codec, …) | sync (16 bytes)
//!  then blocks: row count (long) | byte size (long) | data (size bytes) | sync (16 bytes)
//! ```

use super::codec::AvroCodec;

/// The first four bytes of every Avro object container file.
pub(crate) const MAGIC: &[u8; 4] = b"Obj\x01";
/// The length of the sync marker.
pub(crate) const SYNC_LEN: usize = 16;

/// Append `v` as an Avro `long` (zig-zag varint).
pub(crate) fn write_long(out: &mut Vec<u8>, v: i64) {
    let mut n = ((v << 1) ^ (v >> 63)) as u64;
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Append `bytes` as Avro `bytes` (length, then the bytes).
pub(crate) fn write_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    write_long(out, bytes.len() as i64);
    out.extend_from_slice(bytes);
}

/// Read an Avro `long` at the start of `buf`: `Ok(None)` when `buf` ends inside it.
pub(crate) fn read_long(buf: &[u8]) -> Result<Option<(i64, usize)>, String> {
    let mut n: u64 = 0;
    for (i, b) in buf.iter().enumerate() {
        let bits = u64::from(b & 0x7f);
        if i == 9 && bits > 1 {
            return Err("a varint overflows 64 bits".into());
        }
        n |= bits << (7 * i);
        if b & 0x80 == 0 {
            let v = ((n >> 1) as i64) ^ -((n & 1) as i64);
            return Ok(Some((v, i + 1)));
        }
        if i == 9 {
            return Err("a varint is longer than 10 bytes".into());
        }
    }
    Ok(None)
}

/// A cursor over a buffer that may end early: every read says "need more" with `Ok(None)`.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn long(&mut self) -> Result<Option<i64>, String> {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        Ok(read_long(rest)?.map(|(v, n)| {
            self.pos += n;
            v
        }))
    }

    fn bytes(&mut self, what: &str) -> Result<Option<&'a [u8]>, String> {
        let start = self.pos;
        let Some(len) = self.long()? else {
            return Ok(None);
        };
        let len = usize::try_from(len).map_err(|_| format!("{what} has a negative length"))?;
        match self
            .pos
            .checked_add(len)
            .and_then(|end| self.buf.get(self.pos..end))
        {
            Some(b) => {
                self.pos += len;
                Ok(Some(b))
            }
            None => {
                self.pos = start;
                Ok(None)
            }
        }
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let out = self.buf.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(out)
    }
}

/// What the header of a file says.
#[derive(Debug, Clone)]
pub(crate) struct Header {
    /// The writer's schema (`avro.schema`).
    pub(crate) schema: String,
    /// The block codec (`avro.codec`, `null` when absent).
    pub(crate) codec: AvroCodec,
    /// The marker that follows every block.
    pub(crate) sync: [u8; SYNC_LEN],
}

/// Parse the header at the start of `buf`: `Ok(None)` when `buf` ends inside it, else the
/// header and its length.
pub(crate) fn parse_header(buf: &[u8]) -> Result<Option<(Header, usize)>, String> {
    let head = buf.get(..MAGIC.len()).unwrap_or(buf);
    if !MAGIC.starts_with(head) {
        return Err(format!(
            "it does not start with the Avro magic `Obj\\x01` (found {head:02x?})"
        ));
    }
    let mut c = Cursor {
        buf,
        pos: MAGIC.len(),
    };
    if buf.len() < MAGIC.len() {
        return Ok(None);
    }
    let mut schema = None;
    let mut codec = None;
    loop {
        let Some(count) = c.long()? else {
            return Ok(None);
        };
        if count == 0 {
            break;
        }
        if count < 0 {
            // A negative count is followed by the block's size in bytes.
            if c.long()?.is_none() {
                return Ok(None);
            }
        }
        for _ in 0..count.unsigned_abs() {
            let Some(key) = c.bytes("a metadata key")? else {
                return Ok(None);
            };
            let Some(value) = c.bytes("a metadata value")? else {
                return Ok(None);
            };
            match key {
                b"avro.schema" => {
                    let text = std::str::from_utf8(value)
                        .map_err(|_| "the schema (avro.schema) is not UTF-8".to_owned())?;
                    schema = Some(text.to_owned());
                }
                b"avro.codec" => {
                    let name = String::from_utf8_lossy(value);
                    codec = Some(name.parse::<AvroCodec>().map_err(|_| {
                        format!(
                            "its blocks use the codec `{name}`, which s3conn cannot read (it reads \
                             null, deflate, snappy, bzip2, xz and zstandard)"
                        )
                    })?);
                }
                _ => {}
            }
        }
    }
    let Some(sync) = c.take(SYNC_LEN) else {
        return Ok(None);
    };
    let sync: [u8; SYNC_LEN] = sync
        .try_into()
        .map_err(|_| "the sync marker is cut short".to_owned())?;
    let schema = schema.ok_or_else(|| "the header has no schema (avro.schema)".to_owned())?;
    Ok(Some((
        Header {
            schema,
            codec: codec.unwrap_or(AvroCodec::Null),
            sync,
        },
        c.pos,
    )))
}

/// The head of a block: its row count and byte size, and the head's own length.
pub(crate) fn parse_block_head(buf: &[u8]) -> Result<Option<(i64, i64, usize)>, String> {
    let mut c = Cursor { buf, pos: 0 };
    let Some(count) = c.long()? else {
        return Ok(None);
    };
    let Some(size) = c.long()? else {
        return Ok(None);
    };
    Ok(Some((count, size, c.pos)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn longs_roundtrip_at_the_edges() {
        for v in [
            0,
            1,
            -1,
            63,
            -64,
            64,
            i64::from(i32::MAX),
            i64::MIN,
            i64::MAX,
        ] {
            let mut out = Vec::new();
            write_long(&mut out, v);
            assert_eq!(read_long(&out).unwrap(), Some((v, out.len())), "{v}");
            assert_eq!(read_long(&out[..out.len() - 1]).unwrap(), None);
        }
        assert!(read_long(&[0xff; 11]).is_err());
        assert!(read_long(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]).is_err());
    }

    #[test]
    fn a_header_parses_only_when_whole() {
        let mut h = MAGIC.to_vec();
        write_long(&mut h, -2);
        write_long(&mut h, 99);
        write_bytes(&mut h, b"avro.schema");
        write_bytes(&mut h, br#""int""#);
        write_bytes(&mut h, b"avro.codec");
        write_bytes(&mut h, b"zstandard");
        write_long(&mut h, 0);
        h.extend_from_slice(&[7; 16]);
        for cut in 0..h.len() {
            assert!(parse_header(&h[..cut]).unwrap().is_none(), "{cut}");
        }
        let (header, len) = parse_header(&h).unwrap().unwrap();
        assert_eq!(len, h.len());
        assert_eq!(header.codec, AvroCodec::Zstandard);
        assert_eq!(header.schema, r#""int""#);
        assert!(parse_header(b"PAR1").is_err());
    }
}
