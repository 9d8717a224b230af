//! Arrow schema → Avro schema (writing), and the checks an Avro file's own schema passes
//! before its datums are decoded (reading).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow_schema::{DataType, Field, FieldRef, Fields, Schema, TimeUnit};
use serde_json::{Map, Value, json};

use super::FORMAT;
use crate::error::{Error, Result};

/// The name of the top-level record (the name Spark and arrow-avro use too).
pub(crate) const ROOT_RECORD: &str = "topLevelRecord";

fn schema_error(message: String) -> Error {
    Error::Schema {
        format: FORMAT,
        message,
    }
}

/// An Arrow schema made writable: dictionary columns become their value type. The Avro
/// schema is what the file's header carries.
#[derive(Debug)]
pub(crate) struct WriteSchema {
    /// The schema the batches are converted to before encoding (no dictionaries).
    pub(crate) arrow: Arc<Schema>,
    /// Whether batches need converting (they hold dictionaries).
    pub(crate) needs_cast: bool,
    /// The Avro schema as JSON.
    pub(crate) avro: String,
}

/// Map an Arrow schema to an Avro record schema.
///
/// Nullable fields become `["null", T]` unions with a `null` default; structs become records
/// with unique names; lists become arrays; maps with string keys become maps; dictionaries
/// become their value type. Timestamps with a time zone become `timestamp-*`, without one
/// `local-timestamp-*` (nanoseconds stay nanoseconds: `timestamp-nanos`, Avro 1.12).
pub(crate) fn to_avro(schema: &Schema) -> Result<WriteSchema> {
    let mut names = Names::default();
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut arrow_fields = Vec::with_capacity(schema.fields().len());
    let mut needs_cast = false;
    for field in schema.fields() {
        let path = field.name().clone();
        let (avro, plain) = field_to_avro(field, &path, &mut names)?;
        needs_cast |= plain.data_type() != field.data_type();
        fields.push(avro);
        arrow_fields.push(plain);
    }
    let record = json!({
        "type": "record",
        "name": ROOT_RECORD,
        "fields": fields,
    });
    let avro = serde_json::to_string(&record).map_err(|e| schema_error(e.to_string()))?;
    let mut metadata = HashMap::new();
    metadata.insert("avro.schema".to_owned(), avro.clone());
    Ok(WriteSchema {
        arrow: Arc::new(Schema::new_with_metadata(arrow_fields, metadata)),
        needs_cast,
        avro,
    })
}

/// Named types (records, fixed) must have unique full names.
#[derive(Default)]
struct Names {
    used: HashSet<String>,
}

impl Names {
    fn unique(&mut self, base: &str) -> String {
        let base: String = base
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let mut name = base.clone();
        let mut n = 1;
        while self.used.contains(&name) || name == ROOT_RECORD {
            n += 1;
            name = format!("{base}_{n}");
        }
        self.used.insert(name.clone());
        name
    }
}

fn check_name(name: &str, path: &str) -> Result<()> {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(schema_error(format!(
            "field `{path}`: `{name}` is not a valid Avro name (letters, digits and `_`, not \
             starting with a digit); rename the column before writing Avro"
        )))
    }
}

/// The Avro field for an Arrow field, and the Arrow field batches are converted to.
fn field_to_avro(field: &Field, path: &str, names: &mut Names) -> Result<(Value, Field)> {
    check_name(field.name(), path)?;
    let (ty, plain) = type_to_avro(field.data_type(), path, names)?;
    let mut out = Map::new();
    out.insert("name".into(), Value::String(field.name().clone()));
    if field.is_nullable() && !matches!(plain, DataType::Null) {
        out.insert("type".into(), json!(["null", ty]));
        out.insert("default".into(), Value::Null);
    } else {
        out.insert("type".into(), ty);
    }
    Ok((
        Value::Object(out),
        Field::new(field.name(), plain, field.is_nullable())
            .with_metadata(field.metadata().clone()),
    ))
}

/// A list item or map value: nullable ones are `["null", T]` unions.
fn child_to_avro(field: &Field, path: &str, names: &mut Names) -> Result<(Value, FieldRef)> {
    let (ty, plain) = type_to_avro(field.data_type(), path, names)?;
    let ty = if field.is_nullable() && !matches!(plain, DataType::Null) {
        json!(["null", ty])
    } else {
        ty
    };
    Ok((
        ty,
        Arc::new(
            Field::new(field.name(), plain, field.is_nullable())
                .with_metadata(field.metadata().clone()),
        ),
    ))
}

fn logical(base: &str, logical: &str) -> Value {
    json!({"type": base, "logicalType": logical})
}

fn type_to_avro(dt: &DataType, path: &str, names: &mut Names) -> Result<(Value, DataType)> {
    let same = |v: Value| Ok((v, dt.clone()));
    match dt {
        DataType::Null => same(json!("null")),
        DataType::Boolean => same(json!("boolean")),
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::UInt8 | DataType::UInt16 => {
            same(json!("int"))
        }
        DataType::Int64 | DataType::UInt32 => same(json!("long")),
        DataType::Float16 | DataType::Float32 => same(json!("float")),
        DataType::Float64 => same(json!("double")),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => same(json!("string")),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => same(json!("bytes")),
        DataType::FixedSizeBinary(size) => {
            let name = names.unique(&format!("fixed_{path}"));
            same(json!({"type": "fixed", "name": name, "size": size}))
        }
        DataType::Date32 => same(logical("int", "date")),
        DataType::Time32(TimeUnit::Millisecond) => same(logical("int", "time-millis")),
        DataType::Time64(TimeUnit::Microsecond) => same(logical("long", "time-micros")),
        DataType::Timestamp(unit, tz) => {
            let unit = match unit {
                TimeUnit::Millisecond => "millis",
                TimeUnit::Microsecond => "micros",
                TimeUnit::Nanosecond => "nanos",
                TimeUnit::Second => {
                    return Err(unsupported(
                        path,
                        dt,
                        "cast it to Timestamp(Millisecond) first",
                    ));
                }
            };
            let kind = if tz.is_some() {
                "timestamp"
            } else {
                "local-timestamp"
            };
            same(logical("long", &format!("{kind}-{unit}")))
        }
        DataType::Decimal32(p, s)
        | DataType::Decimal64(p, s)
        | DataType::Decimal128(p, s)
        | DataType::Decimal256(p, s) => {
            if *s < 0 || i16::from(*s) > i16::from(*p) {
                return Err(unsupported(
                    path,
                    dt,
                    "Avro decimals need 0 <= scale <= precision",
                ));
            }
            same(json!({"type": "bytes", "logicalType": "decimal", "precision": p, "scale": s}))
        }
        DataType::Struct(fields) => {
            let name = names.unique(path);
            let mut avro_fields = Vec::with_capacity(fields.len());
            let mut plain = Vec::with_capacity(fields.len());
            for f in fields {
                let (a, p) = field_to_avro(f, &format!("{path}.{}", f.name()), names)?;
                avro_fields.push(a);
                plain.push(p);
            }
            Ok((
                json!({"type": "record", "name": name, "fields": avro_fields}),
                DataType::Struct(Fields::from(plain)),
            ))
        }
        DataType::List(item) | DataType::LargeList(item) => {
            let (items, plain) = child_to_avro(item, &format!("{path}[]"), names)?;
            let dt = match dt {
                DataType::LargeList(_) => DataType::LargeList(plain),
                _ => DataType::List(plain),
            };
            Ok((json!({"type": "array", "items": items}), dt))
        }
        DataType::Map(entries, sorted) => {
            let DataType::Struct(kv) = entries.data_type() else {
                return Err(unsupported(path, dt, "a map's entries must be a struct"));
            };
            let (Some(key), Some(value), 2) = (kv.first(), kv.get(1), kv.len()) else {
                return Err(unsupported(
                    path,
                    dt,
                    "a map's entries must be key and value",
                ));
            };
            if !matches!(key.data_type(), DataType::Utf8 | DataType::LargeUtf8) {
                return Err(unsupported(path, dt, "Avro map keys are strings"));
            }
            let (values, plain_value) = child_to_avro(value, &format!("{path}{{}}"), names)?;
            let entries = Field::new(
                entries.name(),
                DataType::Struct(Fields::from(vec![key.clone(), plain_value])),
                entries.is_nullable(),
            );
            Ok((
                json!({"type": "map", "values": values}),
                DataType::Map(Arc::new(entries), *sorted),
            ))
        }
        DataType::Dictionary(_, value) => type_to_avro(value, path, names),
        other => Err(unsupported(
            path,
            other,
            "convert the column to a supported type (strings, numbers, booleans, binary, \
             dates, times in ms/µs, timestamps, decimals, structs, lists, string-keyed maps)",
        )),
    }
}

fn unsupported(path: &str, dt: &DataType, hint: &str) -> Error {
    schema_error(format!(
        "field `{path}` has type {dt}, which this Avro writer does not support: {hint}"
    ))
}

/// What the reader learns from a file's Avro schema before decoding it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReadChecks {
    /// The fewest bytes one datum can take: a block may not declare more rows than its
    /// bytes can hold.
    pub(crate) min_datum_bytes: u64,
}

/// Check a file's schema: a top-level record, no recursive types (Arrow cannot hold them),
/// no arrays whose items take no bytes (a corrupt count would spin the decoder).
pub(crate) fn check_file_schema(json: &str) -> std::result::Result<ReadChecks, String> {
    let value: Value =
        serde_json::from_str(json).map_err(|e| format!("the schema is not valid JSON: {e}"))?;
    match &value {
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("record") => {}
        _ => {
            return Err(
                "the schema is not a record: only files of records can be read as tables".into(),
            );
        }
    }
    let mut walker = Walker::default();
    let min = walker.min_size(&value, None, "", 0)?;
    Ok(ReadChecks {
        min_datum_bytes: min,
    })
}

#[derive(Default)]
struct Walker {
    /// Named types by full name: their minimum size once known.
    named: HashMap<String, u64>,
    /// Named types being walked (a reference to one of them is recursion).
    open: HashSet<String>,
}

fn full_name(name: &str, namespace: Option<&str>) -> String {
    if name.contains('.') {
        return name.to_owned();
    }
    match namespace {
        Some(ns) if !ns.is_empty() => format!("{ns}.{name}"),
        _ => name.to_owned(),
    }
}

impl Walker {
    fn min_size(
        &mut self,
        value: &Value,
        namespace: Option<&str>,
        path: &str,
        depth: usize,
    ) -> std::result::Result<u64, String> {
        if depth > 64 {
            return Err(format!(
                "field `{path}`: the schema nests deeper than 64 levels"
            ));
        }
        let at = |p: &str| {
            if p.is_empty() {
                "the schema".to_owned()
            } else {
                format!("field `{p}`")
            }
        };
        match value {
            Value::String(name) => self.primitive_or_named(name, namespace, path),
            Value::Array(branches) => {
                for b in branches {
                    self.min_size(b, namespace, path, depth + 1)?;
                }
                // The branch index.
                Ok(1)
            }
            Value::Object(o) => {
                let ty = o
                    .get("type")
                    .ok_or_else(|| format!("{}: a type without `type`", at(path)))?;
                let Value::String(ty) = ty else {
                    return self.min_size(ty, namespace, path, depth + 1);
                };
                match ty.as_str() {
                    "record" | "error" | "fixed" | "enum" => {
                        let name = o
                            .get("name")
                            .and_then(Value::as_str)
                            .ok_or_else(|| format!("{}: a named type without a name", at(path)))?;
                        let ns = o.get("namespace").and_then(Value::as_str).or(namespace);
                        let full = full_name(name, ns);
                        let inner_ns = full.rsplit_once('.').map(|(ns, _)| ns.to_owned());
                        let size = match ty.as_str() {
                            "fixed" => o.get("size").and_then(Value::as_u64).ok_or_else(|| {
                                format!("{}: fixed `{full}` without a size", at(path))
                            })?,
                            "enum" => 1,
                            _ => {
                                self.open.insert(full.clone());
                                let fields =
                                    o.get("fields").and_then(Value::as_array).ok_or_else(|| {
                                        format!("{}: record `{full}` without fields", at(path))
                                    })?;
                                let mut sum = 0u64;
                                for f in fields {
                                    let fname =
                                        f.get("name").and_then(Value::as_str).unwrap_or("?");
                                    let fpath = if path.is_empty() {
                                        fname.to_owned()
                                    } else {
                                        format!("{path}.{fname}")
                                    };
                                    let fty = f
                                        .get("type")
                                        .ok_or_else(|| format!("field `{fpath}` has no type"))?;
                                    sum = sum.saturating_add(self.min_size(
                                        fty,
                                        inner_ns.as_deref(),
                                        &fpath,
                                        depth + 1,
                                    )?);
                                }
                                self.open.remove(&full);
                                sum
                            }
                        };
                        self.named.insert(full, size);
                        Ok(size)
                    }
                    "array" => {
                        let items = o
                            .get("items")
                            .ok_or_else(|| format!("{}: an array without items", at(path)))?;
                        let item =
                            self.min_size(items, namespace, &format!("{path}[]"), depth + 1)?;
                        if item == 0 {
                            return Err(format!(
                                "{}: arrays whose items take no bytes (null, empty records) are \
                                 not supported (a corrupt count could make the reader spin)",
                                at(path)
                            ));
                        }
                        Ok(1)
                    }
                    "map" => {
                        let values = o
                            .get("values")
                            .ok_or_else(|| format!("{}: a map without values", at(path)))?;
                        self.min_size(values, namespace, &format!("{path}{{}}"), depth + 1)?;
                        Ok(1)
                    }
                    // A primitive with a logical type or other attributes.
                    other => self.primitive_or_named(other, namespace, path),
                }
            }
            _ => Err(format!("{}: `{value}` is not a type", at(path))),
        }
    }

    fn primitive_or_named(
        &mut self,
        name: &str,
        namespace: Option<&str>,
        path: &str,
    ) -> std::result::Result<u64, String> {
        Ok(match name {
            "null" => 0,
            "boolean" | "int" | "long" | "bytes" | "string" => 1,
            "float" => 4,
            "double" => 8,
            other => {
                let candidates = [full_name(other, namespace), other.to_owned()];
                if let Some(full) = candidates.iter().find(|c| self.open.contains(*c)) {
                    return Err(format!(
                        "field `{path}`: the type `{full}` contains itself; recursive types \
                         cannot be read as Arrow columns"
                    ));
                }
                match candidates.iter().find_map(|c| self.named.get(c)) {
                    Some(size) => *size,
                    None => return Err(format!("field `{path}`: unknown type `{other}`")),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn nullable_nested_and_logical_types_map_to_avro() {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
                true,
            ),
            Field::new(
                "local",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                false,
            ),
            Field::new("amount", DataType::Decimal128(20, 4), true),
            Field::new(
                "o",
                DataType::Struct(Fields::from(vec![Field::new("o", DataType::Int32, true)])),
                true,
            ),
            Field::new(
                "d",
                DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
                true,
            ),
        ]);
        let w = to_avro(&schema).unwrap();
        let v: Value = serde_json::from_str(&w.avro).unwrap();
        assert_eq!(v["fields"][0]["type"], "long");
        assert_eq!(v["fields"][1]["type"], json!(["null", "string"]));
        assert_eq!(v["fields"][1]["default"], Value::Null);
        assert_eq!(v["fields"][2]["type"][1]["logicalType"], "timestamp-micros");
        assert_eq!(
            v["fields"][3]["type"]["logicalType"],
            "local-timestamp-millis"
        );
        assert_eq!(v["fields"][4]["type"][1]["precision"], 20);
        assert_eq!(v["fields"][5]["type"][1]["name"], "o");
        assert_eq!(v["fields"][6]["type"], json!(["null", "string"]));
        assert!(w.needs_cast);
        assert_eq!(w.arrow.field(6).data_type(), &DataType::Utf8);
        assert_eq!(
            check_file_schema(&w.avro).unwrap().min_datum_bytes,
            1 + 1 + 1 + 1 + 1 + 1 + 1
        );
    }

    #[test]
    fn unsupported_types_and_bad_names_name_the_field() {
        let schema = Schema::new(vec![Field::new(
            "s",
            DataType::Struct(Fields::from(vec![Field::new(
                "iv",
                DataType::Interval(arrow_schema::IntervalUnit::DayTime),
                true,
            )])),
            true,
        )]);
        let err = to_avro(&schema).unwrap_err().to_string();
        assert!(err.contains("`s.iv`") && err.contains("Interval"), "{err}");
        let schema = Schema::new(vec![Field::new("user-id", DataType::Int32, true)]);
        let err = to_avro(&schema).unwrap_err().to_string();
        assert!(
            err.contains("user-id") && err.contains("not a valid Avro name"),
            "{err}"
        );
    }

    #[test]
    fn recursive_and_zero_width_array_schemas_are_refused() {
        let recursive =
            r#"{"type":"record","name":"Node","fields":[{"name":"next","type":["null","Node"]}]}"#;
        let err = check_file_schema(recursive).unwrap_err();
        assert!(err.contains("contains itself"), "{err}");
        let nulls = r#"{"type":"record","name":"R","fields":[{"name":"a","type":{"type":"array","items":"null"}}]}"#;
        let err = check_file_schema(nulls).unwrap_err();
        assert!(
            err.contains("`a`") && err.contains("take no bytes"),
            "{err}"
        );
        assert!(check_file_schema(r#""int""#).is_err());
        let named = r#"{"type":"record","name":"R","namespace":"x","fields":[
            {"name":"f","type":{"type":"fixed","name":"F","size":16}},
            {"name":"g","type":"F"},{"name":"h","type":"x.F"}]}"#;
        assert_eq!(check_file_schema(named).unwrap().min_datum_bytes, 48);
    }
}
