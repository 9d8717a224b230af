//! Avro block codecs: names, levels, compression of a block and bounded decompression.

use std::fmt;
use std::io::{Read, Write};
use std::str::FromStr;

use crate::error::{Error, Result};

/// The codecs an Avro file's blocks can be compressed with (the header's `avro.codec`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum AvroCodec {
    /// No compression (`null`; also accepted as `none` and `uncompressed`).
    Null,
    /// Raw deflate (RFC 1951), levels 0–9 (default 6). Every Avro reader must support it.
    #[default]
    Deflate,
    /// Snappy, each block followed by the big-endian CRC-32 of its uncompressed bytes.
    Snappy,
    /// bzip2, levels 1–9 (default 9).
    Bzip2,
    /// xz, levels 0–9 (default 6).
    Xz,
    /// Zstandard (`zstandard`; also accepted as `zstd`), levels -7–22 (default 3).
    Zstandard,
}

/// The names [`AvroCodec::from_str`] accepts, for error messages.
const VALID: &str = "null, deflate, snappy, bzip2, xz or zstandard";

impl AvroCodec {
    /// Every codec, for listings and tests.
    pub const ALL: [AvroCodec; 6] = [
        Self::Null,
        Self::Deflate,
        Self::Snappy,
        Self::Bzip2,
        Self::Xz,
        Self::Zstandard,
    ];

    /// The codec's name in the file header (`avro.codec`).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Deflate => "deflate",
            Self::Snappy => "snappy",
            Self::Bzip2 => "bzip2",
            Self::Xz => "xz",
            Self::Zstandard => "zstandard",
        }
    }

    /// The levels the codec accepts, if it has levels.
    pub fn levels(&self) -> Option<std::ops::RangeInclusive<i32>> {
        match self {
            Self::Null | Self::Snappy => None,
            Self::Deflate | Self::Xz => Some(0..=9),
            Self::Bzip2 => Some(1..=9),
            Self::Zstandard => Some(-7..=22),
        }
    }

    /// The level used when none is given.
    pub fn default_level(&self) -> Option<i32> {
        match self {
            Self::Null | Self::Snappy => None,
            Self::Deflate | Self::Xz => Some(6),
            Self::Bzip2 => Some(9),
            Self::Zstandard => Some(3),
        }
    }

    /// Check `level` against the codec: `None` is the codec's default; a level for a codec
    /// without levels, or outside its range, is refused.
    pub fn check_level(&self, level: Option<i32>) -> Result<Option<i32>> {
        match (self.levels(), level) {
            (_, None) => Ok(self.default_level()),
            (None, Some(l)) => Err(Error::InvalidOption {
                option: "compression level",
                reason: format!(
                    "the Avro codec {} has no levels (got {l}); leave the level unset",
                    self.name()
                ),
            }),
            (Some(range), Some(l)) if range.contains(&l) => Ok(Some(l)),
            (Some(range), Some(l)) => Err(Error::InvalidOption {
                option: "compression level",
                reason: format!(
                    "{l} is outside the Avro {} levels {}..={}",
                    self.name(),
                    range.start(),
                    range.end()
                ),
            }),
        }
    }
}

impl fmt::Display for AvroCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for AvroCodec {
    type Err = Error;

    /// A codec by name, any case. `gzip` and other names that are not Avro codecs are
    /// refused with the list of valid ones.
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "null" | "none" | "uncompressed" => Self::Null,
            "deflate" => Self::Deflate,
            "snappy" => Self::Snappy,
            "bzip2" => Self::Bzip2,
            "xz" => Self::Xz,
            "zstandard" | "zstd" => Self::Zstandard,
            "gzip" | "gz" => {
                return Err(Error::InvalidOption {
                    option: "codec",
                    reason: format!(
                        "`{s}` is not an Avro codec (Avro files compress their blocks, never the \
                         whole file): use {VALID}; deflate is gzip's algorithm"
                    ),
                });
            }
            _ => {
                return Err(Error::InvalidOption {
                    option: "codec",
                    reason: format!("`{s}` is not an Avro codec: use {VALID}"),
                });
            }
        })
    }
}

/// Compresses blocks with one codec and level, reusing its state across blocks where the
/// codec allows it.
pub(crate) struct BlockCompressor {
    codec: AvroCodec,
    level: Option<i32>,
    zstd: Option<zstd::bulk::Compressor<'static>>,
    snappy: Option<snap::raw::Encoder>,
}

impl fmt::Debug for BlockCompressor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockCompressor")
            .field("codec", &self.codec)
            .field("level", &self.level)
            .finish()
    }
}

impl BlockCompressor {
    pub(crate) fn new(codec: AvroCodec, level: Option<i32>, zstd_checksum: bool) -> Result<Self> {
        let level = codec.check_level(level)?;
        let zstd = match codec {
            AvroCodec::Zstandard => {
                let mut c = zstd::bulk::Compressor::new(level.unwrap_or(3))?;
                c.include_checksum(zstd_checksum)?;
                Some(c)
            }
            _ => None,
        };
        let snappy = (codec == AvroCodec::Snappy).then(snap::raw::Encoder::new);
        Ok(Self {
            codec,
            level,
            zstd,
            snappy,
        })
    }

    pub(crate) fn codec(&self) -> AvroCodec {
        self.codec
    }

    /// Append the compressed form of `data` to `out`.
    pub(crate) fn compress(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let level = self.level.unwrap_or(0).clamp(0, 9).unsigned_abs();
        match self.codec {
            AvroCodec::Null => out.extend_from_slice(data),
            AvroCodec::Deflate => {
                let mut w =
                    flate2::write::DeflateEncoder::new(out, flate2::Compression::new(level));
                w.write_all(data)?;
                w.try_finish()?;
            }
            AvroCodec::Bzip2 => {
                let mut w =
                    bzip2::write::BzEncoder::new(out, bzip2::Compression::new(level.max(1)));
                w.write_all(data)?;
                w.try_finish()?;
            }
            AvroCodec::Xz => {
                let mut w = liblzma::write::XzEncoder::new(out, level);
                w.write_all(data)?;
                w.try_finish()?;
            }
            AvroCodec::Zstandard => {
                if let Some(c) = self.zstd.as_mut() {
                    out.extend_from_slice(&c.compress(data)?);
                }
            }
            AvroCodec::Snappy => {
                if let Some(e) = self.snappy.as_mut() {
                    let start = out.len();
                    out.resize(start + snap::raw::max_compress_len(data.len()), 0);
                    let written = e
                        .compress(data, out.get_mut(start..).unwrap_or_default())
                        .map_err(|e| Error::Encode {
                            format: super::FORMAT,
                            message: format!("snappy: {e}"),
                        })?;
                    out.truncate(start + written);
                    out.extend_from_slice(&crc32fast::hash(data).to_be_bytes());
                }
            }
        }
        Ok(())
    }
}

/// Why a block could not be decompressed (the caller says which block).
#[derive(Debug)]
pub(crate) enum DecompressError {
    /// It expands past the limit.
    TooLarge(String),
    /// The compressed data is corrupt.
    Corrupt(String),
}

impl fmt::Display for DecompressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge(m) | Self::Corrupt(m) => f.write_str(m),
        }
    }
}

/// Decompress one block of `codec` into a new buffer of at most `max` bytes. A block that
/// would expand past `max` is refused without allocating more than about `max` bytes.
pub(crate) fn decompress(
    codec: AvroCodec,
    data: &[u8],
    max: u64,
) -> std::result::Result<Vec<u8>, DecompressError> {
    use DecompressError::Corrupt;
    let too_big = || {
        DecompressError::TooLarge(format!(
            "it expands to more than {max} bytes (the limit for a decompressed block; raise it \
             with AvroFormat::with_max_decompressed_block_bytes if the file is trusted)"
        ))
    };
    let bounded = |reader: &mut dyn Read| -> std::result::Result<Vec<u8>, DecompressError> {
        let guess = (data.len() as u64).saturating_mul(4).min(max).min(16 << 20);
        let mut out = Vec::with_capacity(usize::try_from(guess).unwrap_or(0));
        reader
            .take(max.saturating_add(1))
            .read_to_end(&mut out)
            .map_err(|e| Corrupt(format!("{} data is corrupt: {e}", codec.name())))?;
        if out.len() as u64 > max {
            return Err(too_big());
        }
        Ok(out)
    };
    match codec {
        AvroCodec::Null => {
            if data.len() as u64 > max {
                return Err(too_big());
            }
            Ok(data.to_vec())
        }
        AvroCodec::Deflate => bounded(&mut flate2::read::DeflateDecoder::new(data)),
        AvroCodec::Bzip2 => bounded(&mut bzip2::read::MultiBzDecoder::new(data)),
        AvroCodec::Xz => bounded(&mut liblzma::read::XzDecoder::new_multi_decoder(data)),
        AvroCodec::Zstandard => {
            let mut d = zstd::stream::read::Decoder::with_buffer(data)
                .map_err(|e| Corrupt(format!("zstandard: {e}")))?;
            bounded(&mut d)
        }
        AvroCodec::Snappy => {
            let Some(split) = data.len().checked_sub(4) else {
                return Err(Corrupt(
                    "a snappy block is shorter than its 4-byte checksum".into(),
                ));
            };
            let (compressed, crc) = data.split_at(split);
            let declared = snap::raw::decompress_len(compressed)
                .map_err(|e| Corrupt(format!("snappy data is corrupt: {e}")))?;
            if declared as u64 > max {
                return Err(too_big());
            }
            let out = snap::raw::Decoder::new()
                .decompress_vec(compressed)
                .map_err(|e| Corrupt(format!("snappy data is corrupt: {e}")))?;
            let expected = crc.try_into().map(u32::from_be_bytes).map_err(|_| {
                Corrupt("a snappy block is shorter than its 4-byte checksum".into())
            })?;
            let actual = crc32fast::hash(&out);
            if actual != expected {
                return Err(Corrupt(format!(
                    "the snappy block's CRC-32 is {expected:08x} but its data hashes to {actual:08x}"
                )));
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_codec_roundtrips_a_block() {
        let data = "héllo avro block ".repeat(5000).into_bytes();
        for codec in AvroCodec::ALL {
            let mut c = BlockCompressor::new(codec, None, true).unwrap();
            let mut out = Vec::new();
            c.compress(&data, &mut out).unwrap();
            assert_eq!(decompress(codec, &out, 1 << 20).unwrap(), data, "{codec}");
            let err = decompress(codec, &out, 1000).unwrap_err().to_string();
            assert!(err.contains("more than 1000 bytes"), "{codec}: {err}");
        }
    }

    #[test]
    fn names_aliases_and_levels() {
        for codec in AvroCodec::ALL {
            assert_eq!(codec.name().parse::<AvroCodec>().unwrap(), codec);
        }
        assert_eq!("ZSTD".parse::<AvroCodec>().unwrap(), AvroCodec::Zstandard);
        assert_eq!("none".parse::<AvroCodec>().unwrap(), AvroCodec::Null);
        assert_eq!(
            "uncompressed".parse::<AvroCodec>().unwrap(),
            AvroCodec::Null
        );
        let err = "gzip".parse::<AvroCodec>().unwrap_err().to_string();
        assert!(
            err.contains("not an Avro codec") && err.contains("zstandard"),
            "{err}"
        );
        let err = "lzo".parse::<AvroCodec>().unwrap_err().to_string();
        assert!(err.contains("deflate, snappy"), "{err}");
        assert!(AvroCodec::Deflate.check_level(Some(10)).is_err());
        assert!(AvroCodec::Snappy.check_level(Some(1)).is_err());
        assert!(AvroCodec::Bzip2.check_level(Some(0)).is_err());
        assert_eq!(
            AvroCodec::Zstandard.check_level(Some(19)).unwrap(),
            Some(19)
        );
        assert_eq!(AvroCodec::Xz.check_level(None).unwrap(), Some(6));
    }

    #[test]
    fn a_bad_snappy_checksum_is_refused() {
        let mut c = BlockCompressor::new(AvroCodec::Snappy, None, false).unwrap();
        let mut out = Vec::new();
        c.compress(b"some data", &mut out).unwrap();
        let last = out.len() - 1;
        out[last] ^= 1;
        let err = decompress(AvroCodec::Snappy, &out, 1 << 20)
            .unwrap_err()
            .to_string();
        assert!(err.contains("CRC-32"), "{err}");
    }
}
