//! Helpers shared by the unit tests of the plugins.

#![allow(clippy::panic)]

use arrow_array::RecordBatch;

use crate::error::Result;
use crate::plugin::{DecodeInput, DecodeOptions, Decoder, FormatPlugin, StreamDecoder};

/// The stream decoder of `plugin`.
pub(crate) fn stream_decoder(
    plugin: &dyn FormatPlugin,
    options: &DecodeOptions,
) -> Box<dyn StreamDecoder> {
    match plugin.decoder(&DecodeInput::default(), options) {
        Ok(Decoder::Stream(d)) => d,
        Ok(Decoder::Ranged(_)) => panic!("{} is not a stream format", plugin.name()),
        Err(e) => panic!("no decoder: {e}"),
    }
}

/// Decode `data` fed in chunks of `chunk` bytes: the batches, and the rows skipped.
pub(crate) fn decode_chunked(
    plugin: &dyn FormatPlugin,
    options: &DecodeOptions,
    data: &[u8],
    chunk: usize,
) -> Result<(Vec<RecordBatch>, u64)> {
    let mut d = stream_decoder(plugin, options);
    let mut out = Vec::new();
    for piece in data.chunks(chunk.max(1)) {
        d.decode(piece)?;
        while let Some(b) = d.next_batch() {
            out.push(b);
        }
    }
    d.finish()?;
    while let Some(b) = d.next_batch() {
        out.push(b);
    }
    Ok((out, d.skipped_rows()))
}
