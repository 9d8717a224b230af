//! Reading keys back: which values a template rendered into a key.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use regex::Regex;

use super::{HIVE_NULL, Part, Slot, Template, TimeField, Variable, escape::unescape};
use crate::error::{Error, Result};

/// A compiled matcher for the keys of one template: [`Template::matcher`].
///
/// Keys are matched against one anchored regular expression. A template whose keys can be
/// split more than one way (two free-text variables with only a literal between them, such as
/// `${STREAM_NAME}_${tenant}` with a stream named `my_users`) reads back one of the splits;
/// put a `/` between such variables to make keys unambiguous.
#[derive(Clone)]
pub struct KeyMatcher {
    regex: Regex,
    /// Each capture group's variable name, whether its value is escaped, and the variable.
    groups: Vec<Group>,
    /// The column of each Hive-style folder's value group (`p0`, `p1`…).
    partitions: Vec<String>,
}

#[derive(Clone)]
struct Group {
    name: String,
    escaped: bool,
    var: Variable,
}

impl fmt::Debug for KeyMatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyMatcher")
            .field("pattern", &self.regex.as_str())
            .finish()
    }
}

/// The variable values read out of a key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedKey {
    values: BTreeMap<String, String>,
    partitions: Vec<(String, Option<String>)>,
}

impl ParsedKey {
    /// The value of a variable, by the name it is written with in the template: `YEAR`,
    /// `JOB_ID`, `STREAM_NAME`, a host variable's name, `part_number`, `date`, `%Y`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// Every value, by variable name.
    pub fn values(&self) -> &BTreeMap<String, String> {
        &self.values
    }

    /// The key's Hive-style partition folders (`name=value`), in the order of the key: the
    /// column name and its unescaped value, `None` for Hive's null
    /// (`__HIVE_DEFAULT_PARTITION__`). These are the folders [`KeyMatcher::partition_columns`]
    /// names.
    pub fn partitions(&self) -> &[(String, Option<String>)] {
        &self.partitions
    }

    fn number<T: std::str::FromStr>(&self, name: &str) -> Option<T> {
        self.get(name).and_then(|v| v.parse().ok())
    }

    /// The date the key's time fields name: `${DATE}`, or `${YEAR}` `${MONTH}` `${DAY}`, or
    /// `{date}` (all in the template's time zone), or else an epoch's UTC date.
    pub fn date(&self) -> Option<NaiveDate> {
        if let Some(d) = self.get("DATE") {
            return NaiveDate::parse_from_str(d, "%Y-%m-%d").ok();
        }
        if let (Some(y), Some(m), Some(d)) = (
            self.number("YEAR"),
            self.number("MONTH"),
            self.number("DAY"),
        ) {
            return NaiveDate::from_ymd_opt(y, m, d);
        }
        if let Some(d) = self.get("date")
            && let Ok(date) = NaiveDate::parse_from_str(d, "%Y_%m_%d")
        {
            return Some(date);
        }
        self.epoch().map(|t| t.date_naive())
    }

    /// The time the key's time fields name, as far as they go (a date alone is midnight).
    pub fn time(&self) -> Option<NaiveDateTime> {
        if let Some(t) = self.epoch() {
            return Some(t.naive_utc());
        }
        let date = self.date()?;
        let h = self.number("HOUR").unwrap_or(0);
        let m = self.number("MINUTE").unwrap_or(0);
        let s = self.number("SECOND").unwrap_or(0);
        let ms = self.number("MILLISECOND").unwrap_or(0);
        NaiveTime::from_hms_milli_opt(h, m, s, ms).map(|t| date.and_time(t))
    }

    fn epoch(&self) -> Option<DateTime<Utc>> {
        match self.number("EPOCH").or_else(|| self.number("timestamp")) {
            Some(ms) => DateTime::from_timestamp_millis(ms),
            None => DateTime::from_timestamp_micros(self.number("timestamp_micros")?),
        }
    }
}

fn time_pattern(field: &TimeField) -> String {
    match field {
        TimeField::Year => r"\d{4}".into(),
        TimeField::Month
        | TimeField::Day
        | TimeField::Hour
        | TimeField::Minute
        | TimeField::Second => r"\d{2}".into(),
        TimeField::Millisecond => r"\d{3}".into(),
        TimeField::EpochMillis | TimeField::EpochMicros => r"-?\d+".into(),
        TimeField::IsoDate => r"\d{4}-\d{2}-\d{2}".into(),
        TimeField::Format(f) => strftime_pattern(f),
    }
}

/// A regex for what a strftime string renders.
fn strftime_pattern(format: &str) -> String {
    let mut out = String::new();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push_str(&regex::escape(&c.to_string()));
            continue;
        }
        let mut flag = None;
        let mut spec = String::new();
        while let Some(&n) = chars.peek() {
            chars.next();
            if spec.is_empty() && flag.is_none() && matches!(n, '-' | '_' | '0' | '^' | '#') {
                flag = Some(n);
                continue;
            }
            spec.push(n);
            if n.is_ascii_alphabetic() || n == '%' {
                break;
            }
        }
        let digits = |n: usize| match flag {
            Some('-') => format!(r"\d{{1,{n}}}"),
            Some('_') => format!(r" *\d{{1,{n}}}"),
            _ => format!(r"\d{{{n}}}"),
        };
        out.push_str(&match spec.as_str() {
            "%" => "%".into(),
            "Y" => r"-?\d{4,}".into(),
            "y" | "C" | "m" | "d" | "H" | "I" | "M" | "S" => digits(2),
            // Space-padded fields.
            "e" | "k" | "l" => r"[ \d]\d".into(),
            "j" => digits(3),
            "F" => r"\d{4}-\d{2}-\d{2}".into(),
            "T" => r"\d{2}:\d{2}:\d{2}".into(),
            "s" => r"-?\d+".into(),
            "3f" | ".3f" => r"\.?\d{3}".into(),
            _ => ".+?".into(),
        });
    }
    out
}

/// A named capture group for `slot`, recorded in `groups`. A static host variable matches
/// only its own (escaped) value.
fn group(template: &Template, slot: &Slot, hive: bool, groups: &mut Vec<Group>) -> String {
    let (mut pattern, escaped) = slot_pattern(slot);
    let record = Group {
        name: slot.name.clone(),
        escaped,
        var: slot.var.clone(),
    };
    if let Variable::Host(name) = &slot.var
        && let Some(value) = template.options.statics.get(name)
        && let Ok(rendered) = super::escape::escape_value(
            value,
            template.options.characters,
            hive,
            name,
            &template.source,
        )
    {
        pattern = regex::escape(&rendered);
    }
    groups.push(record);
    format!("(?P<g{}>{pattern})", groups.len() - 1)
}

fn slot_pattern(slot: &Slot) -> (String, bool) {
    match &slot.var {
        Variable::Namespace | Variable::StreamName | Variable::SyncId | Variable::Host(_) => {
            ("[^/]+?".into(), true)
        }
        Variable::Uuid => (
            "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}".into(),
            false,
        ),
        Variable::PartNumber { width } => (format!(r"\d{{{},}}", (*width).max(1)), false),
        Variable::FormatExtension => (r"(?:\.[A-Za-z0-9]+)+".into(), false),
        Variable::Time { field, .. } => (time_pattern(field), false),
    }
}

/// The column a folder names when it starts with the literal `name=` (a Hive-style folder),
/// and the literal text after the `=`.
fn hive_folder(segment: &[Part]) -> Option<(&str, &str)> {
    let Some(Part::Literal(text)) = segment.first() else {
        return None;
    };
    let (name, rest) = text.split_once('=')?;
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    valid.then_some((name, rest))
}

/// The pattern of a run of parts, with a capture group per variable.
fn parts_pattern(template: &Template, parts: &[Part], groups: &mut Vec<Group>) -> String {
    let mut body = String::new();
    for part in parts {
        match part {
            Part::Literal(text) => body.push_str(&regex::escape(text)),
            Part::Var(slot) => body.push_str(&group(template, slot, false, groups)),
        }
    }
    body
}

impl KeyMatcher {
    pub(super) fn new(template: &Template) -> Result<Self> {
        let mut groups: Vec<Group> = Vec::new();
        let mut partitions: Vec<String> = Vec::new();
        let mut partition = |column: &str, value: String| {
            partitions.push(column.to_owned());
            format!(
                "{}=(?P<p{}>{value})",
                regex::escape(column),
                partitions.len() - 1
            )
        };
        let segments: Vec<&Vec<Part>> =
            template.segments.iter().filter(|s| !s.is_empty()).collect();
        let last = segments.len().saturating_sub(1);
        let mut pattern = String::from("^");
        for (i, segment) in segments.iter().enumerate() {
            let dir = i < last;
            let (body, optional) = match (template.options.hive && dir, segment.as_slice()) {
                (true, [Part::Var(slot)]) if slot.is_partition() => {
                    let value = group(template, slot, true, &mut groups);
                    (partition(&slot.name.to_ascii_lowercase(), value), false)
                }
                // A folder of one value that may be empty (the namespace, a static value)
                // disappears when it is. A column's empty value is written as Hive's null
                // instead, so that keys stay unambiguous.
                (_, [Part::Var(slot)]) if dir && template.may_vanish(slot) => {
                    (group(template, slot, false, &mut groups), true)
                }
                // A folder written as `name=…`, such as `date=${DATE}` or `d=%d-%m-%Y`.
                (_, parts) if dir && hive_folder(parts).is_some() => {
                    let (column, rest) = hive_folder(parts).unwrap_or_default();
                    let value = format!(
                        "{}{}",
                        regex::escape(rest),
                        parts_pattern(template, parts.get(1..).unwrap_or_default(), &mut groups)
                    );
                    (partition(column, value), false)
                }
                (_, parts) => (parts_pattern(template, parts, &mut groups), false),
            };
            let separator = if dir { "/" } else { "" };
            if optional {
                pattern.push_str(&format!("(?:{body}{separator})?"));
            } else {
                pattern.push_str(&body);
                pattern.push_str(separator);
            }
        }
        pattern.push('$');
        let regex = Regex::new(&pattern).map_err(|e| Error::Unsuitable {
            template: template.source.clone(),
            reason: format!("cannot read keys back with this template: {e}"),
        })?;
        Ok(Self {
            regex,
            groups,
            partitions,
        })
    }

    /// The columns of the template's Hive-style partition folders, in the order of the key:
    /// in Hive mode every folder of one partition variable (`year`, `job_id`, `country`), and
    /// in any mode a folder written `name=…` (`date=${DATE}` gives `date`, `d=%d-%m-%Y`
    /// gives `d`). A column named twice is listed once.
    pub fn partition_columns(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for name in &self.partitions {
            if !out.contains(&name.as_str()) {
                out.push(name);
            }
        }
        out
    }

    /// The values in `key`, or `None` when the template could not have rendered it (or a
    /// variable that appears twice has two values).
    pub fn parse(&self, key: &str) -> Option<ParsedKey> {
        let captures = self.regex.captures(key)?;
        let mut partitions: Vec<(String, Option<String>)> = Vec::new();
        let mut values: BTreeMap<String, String> = BTreeMap::new();
        let mut first: BTreeMap<&str, &Variable> = BTreeMap::new();
        for (i, group) in self.groups.iter().enumerate() {
            let Some(m) = captures.name(&format!("g{i}")) else {
                continue;
            };
            let value = if group.escaped {
                unescape(m.as_str())
            } else {
                m.as_str().to_owned()
            };

            match first.get(group.name.as_str()) {
                // The same variable twice must agree; the same name with another spec or
                // clock (`{date}` and `{date:yyyy}`) keeps its first value.
                Some(var) if **var == group.var => {
                    if values.get(&group.name) != Some(&value) {
                        return None;
                    }
                }
                Some(_) => {}
                None => {
                    first.insert(&group.name, &group.var);
                    values.insert(group.name.clone(), value);
                }
            }
        }
        for (i, column) in self.partitions.iter().enumerate() {
            if partitions.iter().any(|(c, _)| c == column) {
                continue;
            }
            let value = captures
                .name(&format!("p{i}"))
                .map(|m| m.as_str())
                .filter(|v| *v != HIVE_NULL)
                .map(unescape);
            partitions.push((column.clone(), value));
        }
        Some(ParsedKey { values, partitions })
    }
}
