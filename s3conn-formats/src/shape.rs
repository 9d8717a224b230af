//! Record shaping: how records are laid out in the columns of the files a destination
//! writes, for every format.
//!
//! - [`RecordShape::AsIs`] (the default): one column per field of the records.
//! - [`RecordShape::Flattened`]: a record id and an emitted-at time, then one column per
//!   root-level field.
//! - [`RecordShape::Envelope`]: a record id, an emitted-at time, and the whole record as one
//!   JSON column.
//!
//! The record id is a random UUID per record; the emitted-at time is the moment the batch
//! was shaped, in milliseconds, UTC. Column names default to `_s3conn_id`,
//! `_s3conn_emitted_at` and `_s3conn_data`; a host that must match an existing layout names
//! its own with [`EnvelopeColumns`].
//!
//! ```
//! use std::sync::Arc;
//! use arrow_array::{Int64Array, RecordBatch};
//! use s3conn_formats::shape::{EnvelopeColumns, RecordShape, Shaper};
//!
//! let batch = RecordBatch::try_from_iter([("user_id", Arc::new(Int64Array::from(vec![123])) as _)]).unwrap();
//! let shaper = Shaper::new(RecordShape::Envelope(EnvelopeColumns::default()), batch.schema())?;
//! let shaped = shaper.shape(&batch, 1_622_135_805_000)?;
//! let names: Vec<_> = shaped.schema().fields().iter().map(|f| f.name().clone()).collect();
//! assert_eq!(names, ["_s3conn_id", "_s3conn_emitted_at", "_s3conn_data"]);
//! # Ok::<(), s3conn_formats::Error>(())
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arrow_array::{ArrayRef, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow_schema::{DataType, Field, FieldRef, Schema, SchemaRef, TimeUnit};
use bytes::Bytes;

use crate::error::{Error, Result};
use crate::plugin::{EncodeOptions, Encoder, FormatPlugin};

/// The time zone the emitted-at column is written in.
const UTC: &str = "+00:00";

/// How records are laid out in a file's columns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordShape {
    /// One column per field, as the records come.
    #[default]
    AsIs,
    /// A record id and an emitted-at time, then one column per root-level field.
    Flattened(EnvelopeColumns),
    /// A record id, an emitted-at time and the record as one JSON column.
    Envelope(EnvelopeColumns),
}

impl std::str::FromStr for RecordShape {
    type Err = Error;

    /// `as_is`, `flattened` or `envelope`, with the default column names.
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().replace('-', "_").as_str() {
            "as_is" | "asis" | "none" => Ok(Self::AsIs),
            "flattened" | "flat" | "root_level" => Ok(Self::Flattened(EnvelopeColumns::default())),
            "envelope" | "no_flattening" => Ok(Self::Envelope(EnvelopeColumns::default())),
            other => Err(Error::InvalidOption {
                option: "record shape",
                reason: format!("`{other}`: use as_is, flattened or envelope"),
            }),
        }
    }
}

/// The names of the columns an envelope adds.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EnvelopeColumns {
    /// The record id column (a UUID string).
    pub id: String,
    /// The emitted-at column (a millisecond timestamp, UTC).
    pub emitted_at: String,
    /// The record column of [`RecordShape::Envelope`] (a JSON string).
    pub data: String,
}

impl Default for EnvelopeColumns {
    fn default() -> Self {
        Self::with_prefix("_s3conn_")
    }
}

impl EnvelopeColumns {
    /// Columns `<prefix>id`, `<prefix>emitted_at` and `<prefix>data`.
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            id: format!("{prefix}id"),
            emitted_at: format!("{prefix}emitted_at"),
            data: format!("{prefix}data"),
        }
    }

    /// Name the record id column.
    pub fn with_id(mut self, name: impl Into<String>) -> Self {
        self.id = name.into();
        self
    }

    /// Name the emitted-at column.
    pub fn with_emitted_at(mut self, name: impl Into<String>) -> Self {
        self.emitted_at = name.into();
        self
    }

    /// Name the record column.
    pub fn with_data(mut self, name: impl Into<String>) -> Self {
        self.data = name.into();
        self
    }
}

/// Shapes the batches of one schema; see the module documentation.
#[derive(Debug, Clone)]
pub struct Shaper {
    shape: RecordShape,
    input: SchemaRef,
    output: SchemaRef,
}

impl Shaper {
    /// A shaper of batches of `input`. Fails when a column the shape adds is already a
    /// field of the records.
    pub fn new(shape: RecordShape, input: SchemaRef) -> Result<Self> {
        let envelope_fields = |columns: &EnvelopeColumns| -> Result<Vec<FieldRef>> {
            for name in [&columns.id, &columns.emitted_at] {
                if input.column_with_name(name).is_some() {
                    return Err(Error::InvalidOption {
                        option: "record shape",
                        reason: format!(
                            "the records already have a field `{name}`, which the shape adds; name the shape's columns otherwise"
                        ),
                    });
                }
            }
            Ok(vec![
                Arc::new(Field::new(&columns.id, DataType::Utf8, false)),
                Arc::new(Field::new(
                    &columns.emitted_at,
                    DataType::Timestamp(TimeUnit::Millisecond, Some(UTC.into())),
                    false,
                )),
            ])
        };
        let output = match &shape {
            RecordShape::AsIs => Arc::clone(&input),
            RecordShape::Flattened(columns) => {
                let mut fields = envelope_fields(columns)?;
                fields.extend(input.fields().iter().cloned());
                Arc::new(Schema::new_with_metadata(fields, input.metadata().clone()))
            }
            RecordShape::Envelope(columns) => {
                if !cfg!(feature = "json") {
                    return Err(Error::Unsupported {
                        what: "the envelope shape without the `json` feature".into(),
                    });
                }
                let mut fields = envelope_fields(columns)?;
                fields.push(Arc::new(Field::new(&columns.data, DataType::Utf8, false)));
                Arc::new(Schema::new(fields))
            }
        };
        Ok(Self {
            shape,
            input,
            output,
        })
    }

    /// The schema of shaped batches.
    pub fn schema(&self) -> &SchemaRef {
        &self.output
    }

    /// Shape `batch` (of the input schema), stamping it as emitted at `emitted_at_ms`.
    pub fn shape(&self, batch: &RecordBatch, emitted_at_ms: i64) -> Result<RecordBatch> {
        let envelope = |n: usize| -> Vec<ArrayRef> {
            let ids: StringArray = (0..n)
                .map(|_| Some(uuid::Uuid::new_v4().to_string()))
                .collect();
            let at = TimestampMillisecondArray::from(vec![emitted_at_ms; n]).with_timezone(UTC);
            vec![Arc::new(ids), Arc::new(at)]
        };
        let columns = match &self.shape {
            RecordShape::AsIs => return Ok(batch.clone()),
            RecordShape::Flattened(_) => {
                let mut columns = envelope(batch.num_rows());
                columns.extend(batch.columns().iter().cloned());
                columns
            }
            RecordShape::Envelope(_) => {
                let mut columns = envelope(batch.num_rows());
                columns.push(Arc::new(json_rows(batch)?));
                columns
            }
        };
        RecordBatch::try_new(Arc::clone(&self.output), columns).map_err(|e| Error::Encode {
            format: "shape",
            message: format!("cannot shape a batch of {}: {e}", self.input),
        })
    }
}

/// Each row of `batch` as a JSON object, nulls included.
#[cfg(feature = "json")]
fn json_rows(batch: &RecordBatch) -> Result<StringArray> {
    let mut buf = Vec::with_capacity(batch.get_array_memory_size());
    {
        let mut writer = arrow_json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, arrow_json::writer::LineDelimited>(&mut buf);
        writer.write(batch).map_err(|e| Error::Encode {
            format: "shape",
            message: e.to_string(),
        })?;
        writer.finish().map_err(|e| Error::Encode {
            format: "shape",
            message: e.to_string(),
        })?;
    }
    let text = String::from_utf8(buf).map_err(|e| Error::Encode {
        format: "shape",
        message: e.to_string(),
    })?;
    Ok(text.lines().map(Some).collect())
}

#[cfg(not(feature = "json"))]
fn json_rows(_batch: &RecordBatch) -> Result<StringArray> {
    Err(Error::Unsupported {
        what: "the envelope shape without the `json` feature".into(),
    })
}

/// An encoder for records of `schema`, shaped as `options.shape` says: the plugin's encoder
/// for the shaped schema, behind a shaper. This is how hosts and sinks open a file.
pub fn encoder(
    plugin: &dyn FormatPlugin,
    schema: SchemaRef,
    options: &EncodeOptions,
) -> Result<Box<dyn Encoder>> {
    if options.shape == RecordShape::AsIs {
        return plugin.encoder(schema, options);
    }
    let shaper = Shaper::new(options.shape.clone(), schema)?;
    let inner = plugin.encoder(Arc::clone(shaper.schema()), options)?;
    Ok(Box::new(ShapedEncoder { shaper, inner }))
}

struct ShapedEncoder {
    shaper: Shaper,
    inner: Box<dyn Encoder>,
}

impl fmt::Debug for ShapedEncoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShapedEncoder")
            .field("shape", &self.shaper.shape)
            .field("inner", &self.inner)
            .finish()
    }
}

impl Encoder for ShapedEncoder {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let shaped = self.shaper.shape(batch, now)?;
        self.inner.write(&shaped)
    }

    fn flush(&mut self) -> Result<()> {
        self.inner.flush()
    }

    fn take_output(&mut self) -> Bytes {
        self.inner.take_output()
    }

    fn finish(&mut self) -> Result<Bytes> {
        self.inner.finish()
    }

    fn bytes_written(&self) -> u64 {
        self.inner.bytes_written()
    }

    fn buffered_bytes(&self) -> usize {
        self.inner.buffered_bytes()
    }
}

#[cfg(all(test, feature = "json"))]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use arrow_array::{Array, Int64Array, StructArray};

    fn batch() -> RecordBatch {
        let first: ArrayRef = Arc::new(StringArray::from(vec![Some("John"), None]));
        let name = StructArray::from(vec![(
            Arc::new(Field::new("first", DataType::Utf8, true)),
            first,
        )]);
        RecordBatch::try_from_iter([
            (
                "user_id",
                Arc::new(Int64Array::from(vec![123, 456])) as ArrayRef,
            ),
            ("name", Arc::new(name) as ArrayRef),
        ])
        .unwrap()
    }

    #[test]
    fn envelope_keeps_the_record_as_json() {
        let b = batch();
        let shaper = Shaper::new("envelope".parse().unwrap(), b.schema()).unwrap();
        let out = shaper.shape(&b, 1_622_135_805_000).unwrap();
        let data = out
            .column(2)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(data.value(0), r#"{"user_id":123,"name":{"first":"John"}}"#);
        assert_eq!(data.value(1), r#"{"user_id":456,"name":{"first":null}}"#);
        let ids = out
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_ne!(ids.value(0), ids.value(1));
        assert_eq!(
            uuid::Uuid::parse_str(ids.value(0))
                .unwrap()
                .get_version_num(),
            4
        );
        let at = out
            .column(1)
            .as_any()
            .downcast_ref::<TimestampMillisecondArray>()
            .unwrap();
        assert_eq!(at.value(1), 1_622_135_805_000);
    }

    #[test]
    fn flattened_adds_id_and_time_before_the_fields() {
        let b = batch();
        let columns = EnvelopeColumns::with_prefix("_airbyte_").with_id("_airbyte_ab_id");
        let shaper = Shaper::new(RecordShape::Flattened(columns), b.schema()).unwrap();
        let out = shaper.shape(&b, 0).unwrap();
        let names: Vec<_> = out
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(
            names,
            ["_airbyte_ab_id", "_airbyte_emitted_at", "user_id", "name"]
        );
        assert_eq!(out.column(3).len(), 2);
    }

    #[test]
    fn a_clash_with_a_field_is_refused() {
        let b = batch();
        let columns = EnvelopeColumns::default().with_id("user_id");
        let err = Shaper::new(RecordShape::Flattened(columns), b.schema()).unwrap_err();
        assert!(err.to_string().contains("`user_id`"), "{err}");
        assert!("sideways".parse::<RecordShape>().is_err());
    }
}
