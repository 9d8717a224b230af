//! Splitting batches by the values a key template reads from each record: column values
//! (`${country}`) and the record's time (`${DATE@record}`).
//!
//! Records whose column values agree, and whose times agree to the template's finest
//! record-clock field, share a key, so they go to the same file. A template that reads
//! nothing per record leaves batches whole (no copy).

use std::collections::HashMap;

use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMillisecondType;
use arrow_array::{Array, ArrayRef, RecordBatch, UInt32Array};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_cast::{CastOptions, cast_with_options};
use arrow_schema::{DataType, TimeUnit};
use chrono::{DateTime, Utc};
use s3conn_layout::template::{Granularity, Template, Zone};

use crate::error::{Error, Result};
use crate::record::StreamId;

/// How Hive writes a null partition value.
pub(crate) const NULL_PARTITION: &str = s3conn_layout::template::HIVE_NULL;

/// The per-record values of one group of rows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(crate) struct PartitionKey {
    /// Column values, in the template's order.
    pub(crate) values: Vec<(String, String)>,
    /// The record time, truncated to the template's record granularity.
    pub(crate) record_time: Option<DateTime<Utc>>,
}

/// What a template reads per record.
#[derive(Debug, Clone)]
pub(crate) struct Partitioner {
    columns: Vec<String>,
    time_column: Option<String>,
    granularity: Option<Granularity>,
    zone: Zone,
}

/// Epoch milliseconds of a time column, whatever its type: timestamps of any unit and
/// zone, dates, integers (milliseconds) and strings (RFC 3339 and the formats arrow parses).
pub(crate) fn epoch_millis(
    array: &ArrayRef,
    stream: &StreamId,
    column: &str,
) -> Result<arrow_array::PrimitiveArray<TimestampMillisecondType>> {
    let options = CastOptions {
        safe: false,
        ..CastOptions::default()
    };
    let target = DataType::Timestamp(TimeUnit::Millisecond, None);
    let cast = cast_with_options(array, &target, &options).map_err(|e| Error::Stream {
        stream: stream.clone(),
        reason: format!("the time column `{column}` cannot be read as times: {e}"),
    })?;
    Ok(cast.as_primitive::<TimestampMillisecondType>().clone())
}

impl Partitioner {
    pub(crate) fn new(template: &Template) -> Self {
        Self {
            columns: template.columns().into_iter().map(str::to_owned).collect(),
            time_column: template.time_column().map(str::to_owned),
            granularity: template.record_granularity(),
            zone: template.options().zone(),
        }
    }

    /// Whether batches must be split at all.
    pub(crate) fn is_trivial(&self) -> bool {
        self.columns.is_empty() && self.granularity.is_none()
    }

    /// Split `batch` into groups of rows that share a key, in order of first appearance.
    pub(crate) fn split(
        &self,
        batch: &RecordBatch,
        stream: &StreamId,
        origin: &str,
    ) -> Result<Vec<(PartitionKey, RecordBatch)>> {
        if self.is_trivial() {
            return Ok(vec![(PartitionKey::default(), batch.clone())]);
        }
        let missing = |column: &str| Error::Stream {
            stream: stream.clone(),
            reason: format!(
                "the key template reads the column `{column}`, which the records from {origin} do not have"
            ),
        };
        let options = FormatOptions::new().with_null(NULL_PARTITION);
        let mut formatters = Vec::with_capacity(self.columns.len());
        for name in &self.columns {
            let column = batch.column_by_name(name).ok_or_else(|| missing(name))?;
            let formatter =
                ArrayFormatter::try_new(column.as_ref(), &options).map_err(|e| Error::Stream {
                    stream: stream.clone(),
                    reason: format!("the column `{name}` cannot be written into a key: {e}"),
                })?;
            formatters.push(formatter);
        }
        let times = match (&self.granularity, &self.time_column) {
            (Some(_), Some(name)) => {
                let column = batch.column_by_name(name).ok_or_else(|| missing(name))?;
                Some((name.as_str(), epoch_millis(column, stream, name)?))
            }
            _ => None,
        };

        let mut order: Vec<PartitionKey> = Vec::new();
        let mut rows: HashMap<PartitionKey, Vec<u32>> = HashMap::new();
        for row in 0..batch.num_rows() {
            let values = self
                .columns
                .iter()
                .zip(&formatters)
                .map(|(name, f)| (name.clone(), f.value(row).to_string()))
                .collect();
            let record_time = match (&times, self.granularity) {
                (Some((name, ms)), Some(g)) => {
                    if ms.is_null(row) {
                        return Err(Error::Stream {
                            stream: stream.clone(),
                            reason: format!(
                                "the time column `{name}` is null in row {} of a batch from {origin}; the key template needs a time for every record",
                                row + 1
                            ),
                        });
                    }
                    let t = DateTime::from_timestamp_millis(ms.value(row)).ok_or_else(|| {
                        Error::Stream {
                            stream: stream.clone(),
                            reason: format!(
                                "the time in row {} of a batch from {origin} is out of range",
                                row + 1
                            ),
                        }
                    })?;
                    Some(g.truncate(t, self.zone))
                }
                _ => None,
            };
            let key = PartitionKey {
                values,
                record_time,
            };
            let index = u32::try_from(row).map_err(|_| Error::Stream {
                stream: stream.clone(),
                reason: "a batch has more than 2^32 rows".into(),
            })?;
            match rows.get_mut(&key) {
                Some(list) => list.push(index),
                None => {
                    order.push(key.clone());
                    rows.insert(key, vec![index]);
                }
            }
        }
        if order.len() == 1 {
            let key = order.remove(0);
            return Ok(vec![(key, batch.clone())]);
        }
        order
            .into_iter()
            .map(|key| {
                let indices = UInt32Array::from(rows.remove(&key).unwrap_or_default());
                let part = arrow_select::take::take_record_batch(batch, &indices).map_err(|e| {
                    Error::Stream {
                        stream: stream.clone(),
                        reason: format!("cannot split a batch by its key values: {e}"),
                    }
                })?;
                Ok((key, part))
            })
            .collect()
    }
}

/// The earliest and latest time (epoch ms) in `column` of `batch`, ignoring nulls.
pub(crate) fn time_range(
    batch: &RecordBatch,
    column: &str,
    stream: &StreamId,
) -> Result<Option<(i64, i64)>> {
    let Some(array) = batch.column_by_name(column) else {
        return Ok(None);
    };
    let ms = epoch_millis(array, stream, column)?;
    let mut range: Option<(i64, i64)> = None;
    for v in ms.iter().flatten() {
        range = Some(match range {
            None => (v, v),
            Some((lo, hi)) => (lo.min(v), hi.max(v)),
        });
    }
    Ok(range)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int64Array, StringArray};
    use s3conn_layout::template::TemplateOptions;
    use std::sync::Arc;

    fn batch() -> RecordBatch {
        let id: ArrayRef = Arc::new(Int64Array::from(vec![1, 2, 3, 4, 5]));
        let country: ArrayRef = Arc::new(StringArray::from(vec![
            Some("FR"),
            Some("DE"),
            Some("FR"),
            None,
            Some("DE"),
        ]));
        let ts: ArrayRef = Arc::new(StringArray::from(vec![
            "2024-11-01T23:59:59Z",
            "2024-11-01T10:00:00Z",
            "2024-11-02T00:00:00Z",
            "2024-11-01T01:00:00+00:00",
            "2024-11-01T12:00:00Z",
        ]));
        RecordBatch::try_from_iter([("id", id), ("country", country), ("ts", ts)]).unwrap()
    }

    fn ids(b: &RecordBatch) -> Vec<i64> {
        b.column(0)
            .as_primitive::<arrow_array::types::Int64Type>()
            .values()
            .to_vec()
    }

    #[test]
    fn rows_split_by_column_and_record_day() {
        let options = TemplateOptions::default()
            .with_column("country")
            .with_time_column("ts");
        let t = Template::parse_with("${country}/${DATE@record}/{part_number}", &options).unwrap();
        let groups = Partitioner::new(&t)
            .split(&batch(), &StreamId::new("s"), "test")
            .unwrap();
        let summary: Vec<(String, String, Vec<i64>)> = groups
            .iter()
            .map(|(k, b)| {
                (
                    k.values[0].1.clone(),
                    k.record_time.unwrap().format("%F").to_string(),
                    ids(b),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("FR".into(), "2024-11-01".into(), vec![1]),
                ("DE".into(), "2024-11-01".into(), vec![2, 5]),
                ("FR".into(), "2024-11-02".into(), vec![3]),
                (NULL_PARTITION.into(), "2024-11-01".into(), vec![4]),
            ]
        );
    }

    #[test]
    fn a_trivial_template_leaves_batches_whole() {
        let t = Template::parse("${STREAM_NAME}/{part_number}").unwrap();
        let p = Partitioner::new(&t);
        assert!(p.is_trivial());
        let groups = p.split(&batch(), &StreamId::new("s"), "test").unwrap();
        assert_eq!(groups.len(), 1);
        assert_eq!(ids(&groups[0].1), [1, 2, 3, 4, 5]);
    }

    #[test]
    fn missing_columns_and_bad_times_are_named() {
        let t = Template::parse_with(
            "${region}/{part_number}",
            &TemplateOptions::default().with_column("region"),
        )
        .unwrap();
        let err = Partitioner::new(&t)
            .split(&batch(), &StreamId::new("s"), "s3://b/k")
            .unwrap_err();
        assert!(
            err.to_string().contains("`region`") && err.to_string().contains("s3://b/k"),
            "{err}"
        );
        let t = Template::parse_with(
            "${DAY@record}/{part_number}",
            &TemplateOptions::default().with_time_column("country"),
        )
        .unwrap();
        let err = Partitioner::new(&t)
            .split(&batch(), &StreamId::new("s"), "x")
            .unwrap_err();
        assert!(err.to_string().contains("cannot be read as times"), "{err}");
    }

    #[test]
    fn time_ranges_cover_every_row() {
        let range = time_range(&batch(), "ts", &StreamId::new("s"))
            .unwrap()
            .unwrap();
        assert_eq!(range.0, 1_730_422_800_000);
        assert_eq!(range.1, 1_730_505_600_000);
        assert_eq!(
            time_range(&batch(), "nope", &StreamId::new("s")).unwrap(),
            None
        );
    }
}
