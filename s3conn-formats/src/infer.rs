//! Schemas: inferring column types from text values, merging the schemas of several files,
//! and conforming batches to a schema.
//!
//! Text formats (CSV, and the strings of JSON) carry no types, so a decoder looks at a
//! bounded sample of values and picks, per column, the narrowest type every value fits:
//! boolean, int64, float64, date, timestamp without zone, timestamp with zone (held in UTC),
//! or string. A column with no value at all is a string.
//!
//! | values | type |
//! |---|---|
//! | `true`, `False` | `Boolean` |
//! | `42`, `-7` | `Int64` (a number with a leading zero, like a ZIP code `02139`, stays a string) |
//! | `3.5`, `1e-3`, and integers mixed with them | `Float64` |
//! | `2024-11-27` | `Date32` |
//! | `2024-11-27T10:00:00`, `2024-11-27 10:00:00.250`, dates mixed with them | `Timestamp(µs)` |
//! | `2024-11-27T10:00:00Z`, `…+02:00` | `Timestamp(µs, "+00:00")` |
//! | anything else, or a mix | `Utf8` |
//!
//! [`merge_schemas`] widens the schemas of several files into one: a field missing from a
//! file becomes nullable, int64 and float64 meet at float64, a date and a timestamp at the
//! timestamp, structs merge field by field, and any other conflict widens to a string.
//! [`conform`] casts a batch to such a schema.
//!
//! ```
//! use arrow_schema::{DataType, Field, Schema};
//! use s3conn_formats::infer::{merge_schemas, ColumnInference};
//!
//! let mut column = ColumnInference::default();
//! for value in ["1", "2", "2.5"] {
//!     column.observe(value);
//! }
//! assert_eq!(column.data_type(), DataType::Float64);
//!
//! let a = Schema::new(vec![Field::new("n", DataType::Int64, false)]);
//! let b = Schema::new(vec![Field::new("n", DataType::Float64, false), Field::new("s", DataType::Utf8, true)]);
//! let merged = merge_schemas(&a, &b);
//! assert_eq!(merged.field(0).data_type(), &DataType::Float64);
//! assert!(merged.field(1).is_nullable());
//! ```

use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, new_null_array};
use arrow_schema::{DataType, Field, FieldRef, Fields, Schema, SchemaRef, TimeUnit};

use crate::error::{Error, Result};

/// The time zone inferred zoned timestamps are held in.
pub const UTC: &str = "+00:00";

/// What one text value looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Int,
    Float,
    Date,
    Timestamp,
    TimestampTz,
    Text,
}

impl Kind {
    const fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// The words read as booleans (compared without regard to ASCII case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoolWords {
    /// Words that mean true.
    pub true_words: Vec<String>,
    /// Words that mean false.
    pub false_words: Vec<String>,
}

impl Default for BoolWords {
    fn default() -> Self {
        Self {
            true_words: vec!["true".into()],
            false_words: vec!["false".into()],
        }
    }
}

impl BoolWords {
    /// The boolean `value` names, if it names one.
    pub fn parse(&self, value: &str) -> Option<bool> {
        if self
            .true_words
            .iter()
            .any(|w| w.eq_ignore_ascii_case(value))
        {
            Some(true)
        } else if self
            .false_words
            .iter()
            .any(|w| w.eq_ignore_ascii_case(value))
        {
            Some(false)
        } else {
            None
        }
    }
}

/// The inference of one column's type from its text values.
#[derive(Debug, Clone, Default)]
pub struct ColumnInference {
    /// The kinds seen, one bit each.
    seen: u8,
    bools: BoolWords,
}

impl ColumnInference {
    /// An inference that reads booleans with `bools`.
    pub fn with_bools(bools: BoolWords) -> Self {
        Self { seen: 0, bools }
    }

    /// Take one non-null value into account.
    pub fn observe(&mut self, value: &str) {
        self.seen |= classify(value, &self.bools).bit();
    }

    /// Whether any value was observed.
    pub fn is_empty(&self) -> bool {
        self.seen == 0
    }

    /// The narrowest type every observed value fits (a string when none was seen).
    pub fn data_type(&self) -> DataType {
        fn only(kinds: &[Kind]) -> u8 {
            kinds.iter().fold(0, |bits, k| bits | k.bit())
        }
        let seen = self.seen;
        let within = |allowed: u8| seen != 0 && seen & !allowed == 0;
        if within(only(&[Kind::Bool])) {
            DataType::Boolean
        } else if within(only(&[Kind::Int])) {
            DataType::Int64
        } else if within(only(&[Kind::Int, Kind::Float])) {
            DataType::Float64
        } else if within(only(&[Kind::Date])) {
            DataType::Date32
        } else if within(only(&[Kind::Date, Kind::Timestamp])) {
            DataType::Timestamp(TimeUnit::Microsecond, None)
        } else if within(only(&[Kind::TimestampTz])) {
            DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into()))
        } else {
            DataType::Utf8
        }
    }
}

fn all_digits(b: &[u8]) -> bool {
    !b.is_empty() && b.iter().all(u8::is_ascii_digit)
}

/// What `value` looks like.
fn classify(value: &str, bools: &BoolWords) -> Kind {
    let b = value.as_bytes();
    match b.first() {
        None => return Kind::Text,
        Some(c) if c.is_ascii_digit() || *c == b'-' || *c == b'+' || *c == b'.' => {}
        Some(_) => {
            return if bools.parse(value).is_some() {
                Kind::Bool
            } else {
                Kind::Text
            };
        }
    }
    if bools.parse(value).is_some() {
        return Kind::Bool;
    }
    if let Some(kind) = classify_number(b) {
        return kind;
    }
    classify_temporal(b)
}

fn classify_number(b: &[u8]) -> Option<Kind> {
    let unsigned = match b.first() {
        Some(b'-' | b'+') => b.get(1..)?,
        _ => b,
    };
    if all_digits(unsigned) {
        // A leading zero (`007`, a ZIP code) is an identifier, not a number.
        if unsigned.len() > 1 && unsigned.first() == Some(&b'0') {
            return Some(Kind::Text);
        }
        let text = std::str::from_utf8(b).ok()?;
        return Some(if text.parse::<i64>().is_ok() {
            Kind::Int
        } else {
            Kind::Float
        });
    }
    // mantissa [e exponent], with digits on at least one side of the point.
    let (mantissa, exponent) = match unsigned.iter().position(|c| *c == b'e' || *c == b'E') {
        Some(i) => (unsigned.get(..i)?, Some(unsigned.get(i + 1..)?)),
        None => (unsigned, None),
    };
    let mantissa_ok = match mantissa.iter().position(|c| *c == b'.') {
        Some(i) => {
            let (int, frac) = (mantissa.get(..i)?, mantissa.get(i + 1..)?);
            (int.is_empty() || all_digits(int))
                && (frac.is_empty() || all_digits(frac))
                && !(int.is_empty() && frac.is_empty())
        }
        None => all_digits(mantissa),
    };
    let exponent_ok = exponent.is_none_or(|e| {
        let e = match e.first() {
            Some(b'-' | b'+') => e.get(1..).unwrap_or_default(),
            _ => e,
        };
        all_digits(e)
    });
    (mantissa_ok && exponent_ok).then_some(Kind::Float)
}

/// `YYYY-MM-DD`, then `[T ]HH:MM[:SS[.fff]]`, then `Z` or `±HH[:MM]`.
fn classify_temporal(b: &[u8]) -> Kind {
    let digits_at = |range: std::ops::Range<usize>| b.get(range).is_some_and(all_digits);
    let date = b.len() >= 10
        && digits_at(0..4)
        && b.get(4) == Some(&b'-')
        && digits_at(5..7)
        && b.get(7) == Some(&b'-')
        && digits_at(8..10);
    if !date || !valid_date(b) {
        return Kind::Text;
    }
    if b.len() == 10 {
        return Kind::Date;
    }
    if !matches!(b.get(10), Some(b'T' | b't' | b' ')) {
        return Kind::Text;
    }
    if !(digits_at(11..13) && b.get(13) == Some(&b':') && digits_at(14..16)) {
        return Kind::Text;
    }
    let mut i = 16;
    if b.get(i) == Some(&b':') {
        if !digits_at(i + 1..i + 3) {
            return Kind::Text;
        }
        i += 3;
        if b.get(i) == Some(&b'.') {
            i += 1;
            let start = i;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            if i == start || i - start > 9 {
                return Kind::Text;
            }
        }
    }
    match b.get(i..).unwrap_or_default() {
        [] => Kind::Timestamp,
        [b'Z' | b'z'] => Kind::TimestampTz,
        [b'+' | b'-', rest @ ..] => {
            let ok = match rest {
                [h1, h2] => h1.is_ascii_digit() && h2.is_ascii_digit(),
                [h1, h2, b':', m1, m2] | [h1, h2, m1, m2] => {
                    [h1, h2, m1, m2].iter().all(|d| d.is_ascii_digit())
                }
                _ => false,
            };
            if ok { Kind::TimestampTz } else { Kind::Text }
        }
        _ => Kind::Text,
    }
}

/// Whether the `YYYY-MM-DD` at the start of `b` is a real date.
fn valid_date(b: &[u8]) -> bool {
    let num = |r: std::ops::Range<usize>| {
        b.get(r)
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|s| s.parse::<u32>().ok())
    };
    match (num(0..4), num(5..7), num(8..10)) {
        (Some(y), Some(m), Some(d)) => i32::try_from(y)
            .ok()
            .and_then(|y| chrono::NaiveDate::from_ymd_opt(y, m, d))
            .is_some(),
        _ => false,
    }
}

/// The type two files' types of one field meet at.
pub fn merge_types(a: &DataType, b: &DataType) -> DataType {
    use DataType as T;
    if a == b {
        return a.clone();
    }
    match (a, b) {
        (T::Null, other) | (other, T::Null) => other.clone(),
        (T::Int8 | T::Int16 | T::Int32 | T::Int64, T::Int8 | T::Int16 | T::Int32 | T::Int64)
        | (
            T::UInt8 | T::UInt16 | T::UInt32,
            T::Int8 | T::Int16 | T::Int32 | T::Int64 | T::UInt8 | T::UInt16 | T::UInt32,
        )
        | (T::Int8 | T::Int16 | T::Int32 | T::Int64, T::UInt8 | T::UInt16 | T::UInt32) => T::Int64,
        (a, b) if is_number(a) && is_number(b) => T::Float64,
        (T::Date32 | T::Date64, T::Timestamp(unit, tz))
        | (T::Timestamp(unit, tz), T::Date32 | T::Date64) => T::Timestamp(*unit, tz.clone()),
        (T::Timestamp(ua, za), T::Timestamp(ub, zb)) if za.is_some() == zb.is_some() => {
            let unit = if unit_rank(*ua) >= unit_rank(*ub) {
                *ua
            } else {
                *ub
            };
            T::Timestamp(unit, za.as_ref().map(|_| UTC.into()))
        }
        (T::Utf8 | T::LargeUtf8 | T::Utf8View, T::Utf8 | T::LargeUtf8 | T::Utf8View) => T::Utf8,
        (T::Struct(fa), T::Struct(fb)) => T::Struct(merge_fields(fa, fb)),
        (T::List(fa), T::List(fb)) => T::List(Arc::new(merge_field(fa, fb))),
        (T::LargeList(fa), T::LargeList(fb)) => T::LargeList(Arc::new(merge_field(fa, fb))),
        _ => T::Utf8,
    }
}

fn is_number(t: &DataType) -> bool {
    t.is_numeric()
}

fn unit_rank(u: TimeUnit) -> u8 {
    match u {
        TimeUnit::Second => 0,
        TimeUnit::Millisecond => 1,
        TimeUnit::Microsecond => 2,
        TimeUnit::Nanosecond => 3,
    }
}

fn merge_field(a: &Field, b: &Field) -> Field {
    Field::new(
        a.name(),
        merge_types(a.data_type(), b.data_type()),
        a.is_nullable() || b.is_nullable(),
    )
    .with_metadata(a.metadata().clone())
}

/// Fields of both, in first-seen order; a field only one side has becomes nullable.
fn merge_fields(a: &Fields, b: &Fields) -> Fields {
    let mut out: Vec<FieldRef> = Vec::with_capacity(a.len().max(b.len()));
    for fa in a.iter() {
        match b.iter().find(|fb| fb.name() == fa.name()) {
            Some(fb) => out.push(Arc::new(merge_field(fa, fb))),
            None => out.push(Arc::new(fa.as_ref().clone().with_nullable(true))),
        }
    }
    for fb in b.iter() {
        if !a.iter().any(|fa| fa.name() == fb.name()) {
            out.push(Arc::new(fb.as_ref().clone().with_nullable(true)));
        }
    }
    out.into()
}

/// One schema that holds the records of both: see the module documentation.
pub fn merge_schemas(a: &Schema, b: &Schema) -> Schema {
    Schema::new_with_metadata(merge_fields(a.fields(), b.fields()), a.metadata().clone())
}

/// `batch` as a batch of `schema`: columns found by name and cast (a value that does not
/// cast is an error, so nothing is silently lost), columns it lacks filled with nulls.
pub fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if batch.schema().as_ref() == schema.as_ref() {
        return Ok(batch.clone());
    }
    let options = arrow_cast::CastOptions {
        safe: false,
        ..Default::default()
    };
    let columns = schema
        .fields()
        .iter()
        .map(|field| -> Result<ArrayRef> {
            match batch.column_by_name(field.name()) {
                Some(column) if column.data_type() == field.data_type() => Ok(Arc::clone(column)),
                Some(column) => arrow_cast::cast_with_options(column, field.data_type(), &options)
                    .map_err(|e| Error::Schema {
                        format: "schema",
                        message: format!(
                            "column `{}` ({}) does not fit {}: {e}",
                            field.name(),
                            column.data_type(),
                            field.data_type()
                        ),
                    }),
                None if field.is_nullable() => {
                    Ok(new_null_array(field.data_type(), batch.num_rows()))
                }
                None => Err(Error::Schema {
                    format: "schema",
                    message: format!(
                        "the records have no column `{}`, which may not be null",
                        field.name()
                    ),
                }),
            }
        })
        .collect::<Result<Vec<_>>>()?;
    RecordBatch::try_new(Arc::clone(schema), columns).map_err(|e| Error::Schema {
        format: "schema",
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn infer(values: &[&str]) -> DataType {
        let mut c = ColumnInference::default();
        for v in values {
            c.observe(v);
        }
        c.data_type()
    }

    #[test]
    fn each_kind_and_their_mixes() {
        let ts = |tz: Option<&str>| DataType::Timestamp(TimeUnit::Microsecond, tz.map(Into::into));
        assert_eq!(infer(&["true", "FALSE"]), DataType::Boolean);
        assert_eq!(infer(&["1", "-2", "+3"]), DataType::Int64);
        assert_eq!(
            infer(&["1", "2.5", "1e3", ".5", "-3.", "2E-2"]),
            DataType::Float64
        );
        assert_eq!(infer(&["99999999999999999999"]), DataType::Float64);
        assert_eq!(
            infer(&["007", "1"]),
            DataType::Utf8,
            "leading zeros are kept"
        );
        assert_eq!(infer(&["0", "10"]), DataType::Int64);
        assert_eq!(infer(&["2024-02-29", "1999-12-31"]), DataType::Date32);
        assert_eq!(infer(&["2023-02-29"]), DataType::Utf8, "not a date");
        assert_eq!(
            infer(&[
                "2024-01-01",
                "2024-01-01T10:00",
                "2024-01-01 10:00:00.123456"
            ]),
            ts(None)
        );
        assert_eq!(
            infer(&[
                "2024-01-01T10:00:00Z",
                "2024-01-01T10:00:00+02:00",
                "2024-01-01 10:00:00.5-0530"
            ]),
            ts(Some(UTC))
        );
        assert_eq!(
            infer(&["2024-01-01T10:00:00Z", "2024-01-01T10:00:00"]),
            DataType::Utf8
        );
        assert_eq!(infer(&["1", "true"]), DataType::Utf8);
        assert_eq!(infer(&["1", "x"]), DataType::Utf8);
        assert_eq!(infer(&[]), DataType::Utf8);
        assert_eq!(infer(&["-", "+", ".", "e5", "1e", "--1"]), DataType::Utf8);
        let mut yes = ColumnInference::with_bools(BoolWords {
            true_words: vec!["yes".into()],
            false_words: vec!["no".into()],
        });
        yes.observe("YES");
        yes.observe("no");
        assert_eq!(yes.data_type(), DataType::Boolean);
    }

    #[test]
    fn schemas_merge_by_widening() {
        let s = |fields: Vec<Field>| Schema::new(fields);
        let a = s(vec![
            Field::new("i", DataType::Int64, false),
            Field::new("d", DataType::Date32, false),
            Field::new("x", DataType::Boolean, false),
            Field::new(
                "st",
                DataType::Struct(vec![Field::new("a", DataType::Int32, false)].into()),
                true,
            ),
        ]);
        let b = s(vec![
            Field::new("x", DataType::Int64, false),
            Field::new("i", DataType::Float64, false),
            Field::new("d", DataType::Timestamp(TimeUnit::Millisecond, None), false),
            Field::new(
                "st",
                DataType::Struct(vec![Field::new("b", DataType::Utf8, false)].into()),
                true,
            ),
            Field::new("new", DataType::Utf8, false),
        ]);
        let m = merge_schemas(&a, &b);
        let names: Vec<_> = m.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["i", "d", "x", "st", "new"]);
        assert_eq!(m.field(0).data_type(), &DataType::Float64);
        assert_eq!(
            m.field(1).data_type(),
            &DataType::Timestamp(TimeUnit::Millisecond, None)
        );
        assert_eq!(
            m.field(2).data_type(),
            &DataType::Utf8,
            "a conflict widens to string"
        );
        let DataType::Struct(st) = m.field(3).data_type() else {
            panic!()
        };
        assert_eq!(st.len(), 2);
        assert!(st.iter().all(|f| f.is_nullable()));
        assert!(m.field(4).is_nullable());
        assert!(!m.field(0).is_nullable());
    }

    #[test]
    fn conform_casts_and_fills() {
        let batch = RecordBatch::try_from_iter([(
            "n",
            Arc::new(arrow_array::Int64Array::from(vec![1, 2])) as ArrayRef,
        )])
        .unwrap();
        let target = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Float64, false),
            Field::new("s", DataType::Utf8, true),
        ]));
        let out = conform(&batch, &target).unwrap();
        assert_eq!(out.schema(), target);
        assert_eq!(out.column(1).null_count(), 2);
        let strict = Arc::new(Schema::new(vec![Field::new("m", DataType::Utf8, false)]));
        assert!(
            conform(&batch, &strict)
                .unwrap_err()
                .to_string()
                .contains("`m`")
        );
    }
}
