//! Whole-file compression: detection, streaming decompression and compressing output.
//!
//! Detection trusts the content first: the magic bytes of gzip, zstd, bzip2 and xz decide.
//! Parquet (`PAR1`) and Avro (`Obj\x01`) files are never decompressed. A zip archive is
//! refused with a clear error. When the content has no known magic, `Content-Encoding` and
//! then the file extension are used only for codecs without a reliable magic (zlib/deflate);
//! a `.gz` file whose bytes are not gzip is read as it is.
//!
//! ```
//! use s3conn_formats::compression::{detect, Compression};
//! assert_eq!(detect(b"\x1f\x8b\x08\x00", None, Some("a.json"))?, Compression::Gzip);
//! assert_eq!(detect(b"{\"a\":1}", None, Some("a.jsonl.gz"))?, Compression::None);
//! assert_eq!(detect(b"PAR1\x15\x04", None, Some("a.parquet.gz"))?, Compression::None);
//! assert!(detect(b"PK\x03\x04", None, Some("a.zip")).is_err());
//! # Ok::<(), s3conn_formats::Error>(())
//! ```

use std::fmt;
use std::io::Write;
use std::pin::Pin;
use std::str::FromStr;

use bytes::Bytes;
use tokio::io::{AsyncBufRead, AsyncRead};

use crate::error::{Error, Result};

/// How many leading bytes [`detect`] looks at.
pub const MAGIC_LEN: usize = 8;

/// A whole-file compression codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Compression {
    /// Not compressed.
    #[default]
    None,
    /// gzip (RFC 1952), including multi-member files.
    Gzip,
    /// Zstandard, including multi-frame files.
    Zstd,
    /// bzip2, including multi-stream files.
    Bzip2,
    /// xz.
    Xz,
    /// zlib-wrapped deflate (RFC 1950).
    Deflate,
}

impl Compression {
    /// Every codec, for listings and tests.
    pub const ALL: [Compression; 6] = [
        Self::None,
        Self::Gzip,
        Self::Zstd,
        Self::Bzip2,
        Self::Xz,
        Self::Deflate,
    ];

    /// The codec's name in configuration.
    pub fn name(&self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Zstd => "zstd",
            Self::Bzip2 => "bzip2",
            Self::Xz => "xz",
            Self::Deflate => "deflate",
        }
    }

    /// The file extension (without dot) files compressed with this codec get.
    pub fn extension(&self) -> Option<&'static str> {
        match self {
            Self::None => None,
            Self::Gzip => Some("gz"),
            Self::Zstd => Some("zst"),
            Self::Bzip2 => Some("bz2"),
            Self::Xz => Some("xz"),
            Self::Deflate => Some("zz"),
        }
    }

    /// The codec a file extension (without dot, any case) names.
    pub fn from_extension(ext: &str) -> Option<Self> {
        match ext.to_ascii_lowercase().as_str() {
            "gz" | "gzip" => Some(Self::Gzip),
            "zst" | "zstd" => Some(Self::Zstd),
            "bz2" | "bzip2" => Some(Self::Bzip2),
            "xz" => Some(Self::Xz),
            "zz" | "zlib" | "deflate" => Some(Self::Deflate),
            _ => None,
        }
    }

    /// The codec an HTTP `Content-Encoding` names.
    pub fn from_content_encoding(value: &str) -> Option<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "gzip" | "x-gzip" => Some(Self::Gzip),
            "zstd" => Some(Self::Zstd),
            "bzip2" | "x-bzip2" => Some(Self::Bzip2),
            "xz" | "x-xz" => Some(Self::Xz),
            "deflate" => Some(Self::Deflate),
            "identity" | "" => Some(Self::None),
            _ => None,
        }
    }

    /// The codec whose magic bytes start `head`, if any.
    pub fn from_magic(head: &[u8]) -> Option<Self> {
        if head.starts_with(&[0x1f, 0x8b]) {
            Some(Self::Gzip)
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Some(Self::Zstd)
        } else if head.len() >= 4
            && head.starts_with(b"BZh")
            && head.get(3).is_some_and(|d| (b'1'..=b'9').contains(d))
        {
            Some(Self::Bzip2)
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Some(Self::Xz)
        } else {
            None
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Compression {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "none" | "uncompressed" | "" => Ok(Self::None),
            other => Self::from_extension(other).ok_or_else(|| Error::Unsupported {
                what: format!("compression `{s}`: use one of none, gzip, zstd, bzip2, xz, deflate"),
            }),
        }
    }
}

/// Decide how a file is compressed from its first bytes, its `Content-Encoding` and its key.
///
/// Pass at least [`MAGIC_LEN`] bytes of `head` when the file has them.
pub fn detect(
    head: &[u8],
    content_encoding: Option<&str>,
    key: Option<&str>,
) -> Result<Compression> {
    if let Some(c) = Compression::from_magic(head) {
        return Ok(c);
    }
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        return Err(Error::Unsupported {
            what: "zip archives: unpack the archive, or store its files gzip- or zstd-compressed"
                .into(),
        });
    }
    if head.starts_with(b"PAR1") || head.starts_with(b"Obj\x01") {
        return Ok(Compression::None);
    }
    let declared = content_encoding
        .and_then(Compression::from_content_encoding)
        .or_else(|| {
            key.and_then(|k| k.rsplit_once('.'))
                .and_then(|(_, ext)| Compression::from_extension(ext))
        });
    // Codecs with a magic have been ruled out by the content; only trust a declaration of
    // a codec without one, and only when the header fits it.
    match declared {
        Some(Compression::Deflate) if looks_like_zlib(head) => Ok(Compression::Deflate),
        _ => Ok(Compression::None),
    }
}

fn looks_like_zlib(head: &[u8]) -> bool {
    match head {
        [cmf, flg, ..] => cmf & 0x0f == 8 && (u16::from(*cmf) * 256 + u16::from(*flg)) % 31 == 0,
        _ => false,
    }
}

/// A reader that decompresses `reader` with `compression`, streaming: memory stays bounded by
/// the codec's window whatever the file size. Multi-member gzip, multi-frame zstd and
/// multi-stream bzip2 files are read to their end.
pub fn decompress<R>(compression: Compression, reader: R) -> Pin<Box<dyn AsyncRead + Send>>
where
    R: AsyncBufRead + Send + 'static,
{
    use async_compression::tokio::bufread as codec;
    match compression {
        Compression::None => Box::pin(reader),
        Compression::Gzip => {
            let mut d = codec::GzipDecoder::new(reader);
            d.multiple_members(true);
            Box::pin(d)
        }
        Compression::Zstd => {
            let mut d = codec::ZstdDecoder::new(reader);
            d.multiple_members(true);
            Box::pin(d)
        }
        Compression::Bzip2 => {
            let mut d = codec::BzDecoder::new(reader);
            d.multiple_members(true);
            Box::pin(d)
        }
        Compression::Xz => {
            let mut d = codec::XzDecoder::new(reader);
            d.multiple_members(true);
            Box::pin(d)
        }
        Compression::Deflate => Box::pin(codec::ZlibDecoder::new(reader)),
    }
}

/// An in-memory output that encoders write into and callers drain.
#[derive(Debug, Default)]
#[cfg_attr(not(any(feature = "json", feature = "parquet")), allow(dead_code))]
pub(crate) struct OutputBuffer {
    buf: Vec<u8>,
    total: u64,
}

#[cfg_attr(not(any(feature = "json", feature = "parquet")), allow(dead_code))]
impl OutputBuffer {
    pub(crate) fn take(&mut self) -> Bytes {
        Bytes::from(std::mem::take(&mut self.buf))
    }

    pub(crate) fn total(&self) -> u64 {
        self.total
    }
}

impl Write for OutputBuffer {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        self.total += data.len() as u64;
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A writer that compresses into an [`OutputBuffer`] (used by the row formats).
#[cfg_attr(not(feature = "json"), allow(dead_code))]
pub(crate) enum CompressingWriter {
    Plain(OutputBuffer),
    Gzip(flate2::write::GzEncoder<OutputBuffer>),
    Deflate(flate2::write::ZlibEncoder<OutputBuffer>),
    Zstd(zstd::stream::write::Encoder<'static, OutputBuffer>),
    Bzip2(bzip2::write::BzEncoder<OutputBuffer>),
    Xz(liblzma::write::XzEncoder<OutputBuffer>),
}

impl fmt::Debug for CompressingWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::Plain(_) => "none",
            Self::Gzip(_) => "gzip",
            Self::Deflate(_) => "deflate",
            Self::Zstd(_) => "zstd",
            Self::Bzip2(_) => "bzip2",
            Self::Xz(_) => "xz",
        };
        f.debug_tuple("CompressingWriter").field(&name).finish()
    }
}

#[cfg_attr(not(feature = "json"), allow(dead_code))]
impl CompressingWriter {
    pub(crate) fn new(compression: Compression, level: Option<i32>) -> Result<Self> {
        let out = OutputBuffer::default();
        let level_0_9 = |default: u32| level.map_or(default, |l| l.clamp(0, 9).unsigned_abs());
        let flate_level = |default: u32| flate2::Compression::new(level_0_9(default));
        Ok(match compression {
            Compression::None => Self::Plain(out),
            Compression::Gzip => Self::Gzip(flate2::write::GzEncoder::new(out, flate_level(6))),
            Compression::Deflate => {
                Self::Deflate(flate2::write::ZlibEncoder::new(out, flate_level(6)))
            }
            Compression::Zstd => Self::Zstd(
                zstd::stream::write::Encoder::new(out, level.unwrap_or(3).clamp(-7, 22))
                    .map_err(Error::from)?,
            ),
            Compression::Bzip2 => Self::Bzip2(bzip2::write::BzEncoder::new(
                out,
                bzip2::Compression::new(level_0_9(9).max(1)),
            )),
            Compression::Xz => Self::Xz(liblzma::write::XzEncoder::new(out, level_0_9(6))),
        })
    }

    pub(crate) fn output(&mut self) -> &mut OutputBuffer {
        match self {
            Self::Plain(o) => o,
            Self::Gzip(w) => w.get_mut(),
            Self::Deflate(w) => w.get_mut(),
            Self::Zstd(w) => w.get_mut(),
            Self::Bzip2(w) => w.get_mut(),
            Self::Xz(w) => w.get_mut(),
        }
    }

    pub(crate) fn output_ref(&self) -> &OutputBuffer {
        match self {
            Self::Plain(o) => o,
            Self::Gzip(w) => w.get_ref(),
            Self::Deflate(w) => w.get_ref(),
            Self::Zstd(w) => w.get_ref(),
            Self::Bzip2(w) => w.get_ref(),
            Self::Xz(w) => w.get_ref(),
        }
    }

    /// Write the codec's trailer; the output then holds the whole file.
    pub(crate) fn finish(&mut self) -> Result<()> {
        match self {
            Self::Plain(_) => {}
            Self::Gzip(w) => {
                w.try_finish()?;
            }
            Self::Deflate(w) => {
                w.try_finish()?;
            }
            Self::Zstd(w) => {
                w.do_finish()?;
            }
            Self::Bzip2(w) => {
                w.try_finish()?;
            }
            Self::Xz(w) => {
                w.try_finish()?;
            }
        }
        Ok(())
    }
}

impl Write for CompressingWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::Plain(w) => w.write(data),
            Self::Gzip(w) => w.write(data),
            Self::Deflate(w) => w.write(data),
            Self::Zstd(w) => w.write(data),
            Self::Bzip2(w) => w.write(data),
            Self::Xz(w) => w.write(data),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        // Flushing a compressor ends a block early and costs ratio; output is drained
        // explicitly, so a flush here is a no-op.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use tokio::io::AsyncReadExt;

    fn compress(c: Compression, data: &[u8]) -> Vec<u8> {
        let mut w = CompressingWriter::new(c, None).unwrap();
        w.write_all(data).unwrap();
        w.finish().unwrap();
        w.output().take().to_vec()
    }

    async fn roundtrip(c: Compression, data: &[u8]) -> Vec<u8> {
        let compressed = compress(c, data);
        let detected = detect(&compressed, None, None).unwrap();
        let detected = if c == Compression::Deflate {
            detect(&compressed, Some("deflate"), None).unwrap()
        } else {
            detected
        };
        assert_eq!(detected, c);
        let mut out = Vec::new();
        decompress(detected, std::io::Cursor::new(compressed))
            .read_to_end(&mut out)
            .await
            .unwrap();
        out
    }

    #[tokio::test]
    async fn writable_codecs_roundtrip_and_are_detected() {
        let data = "line\n".repeat(10_000);
        for c in Compression::ALL {
            assert_eq!(roundtrip(c, data.as_bytes()).await, data.as_bytes(), "{c}");
        }
    }

    #[tokio::test]
    async fn multi_member_gzip_reads_to_the_end() {
        let mut joined = compress(Compression::Gzip, b"first\n");
        joined.extend(compress(Compression::Gzip, b"second\n"));
        let mut out = String::new();
        decompress(Compression::Gzip, std::io::Cursor::new(joined))
            .read_to_string(&mut out)
            .await
            .unwrap();
        assert_eq!(out, "first\nsecond\n");
    }

    #[test]
    fn magic_wins_over_declarations() {
        assert_eq!(
            detect(b"BZh91AY&SY", None, None).unwrap(),
            Compression::Bzip2
        );
        assert_eq!(
            detect(&[0xfd, b'7', b'z', b'X', b'Z', 0, 0], None, None).unwrap(),
            Compression::Xz
        );
        assert_eq!(
            detect(b"a,b\n1,2\n", Some("gzip"), Some("x.csv.gz")).unwrap(),
            Compression::None,
            "a .gz that is not gzip reads as it is"
        );
        assert_eq!(
            detect(b"Obj\x01\x04\x14", None, Some("x.avro.gz")).unwrap(),
            Compression::None
        );
        let err = detect(b"PK\x03\x04....", None, Some("x.zip")).unwrap_err();
        assert!(err.to_string().contains("zip"), "{err}");
        assert_eq!(detect(b"", None, None).unwrap(), Compression::None);
        assert_eq!(
            detect(b"x\x9c", None, Some("a.json")).unwrap(),
            Compression::None,
            "a zlib-looking header is not trusted without a declaration"
        );
    }

    #[test]
    fn names_and_extensions() {
        for c in Compression::ALL {
            assert_eq!(c.name().parse::<Compression>().unwrap(), c);
            if let Some(ext) = c.extension() {
                assert_eq!(Compression::from_extension(ext), Some(c));
            }
        }
        assert!("lzo".parse::<Compression>().is_err());
    }
}
