//! Path templates: parse once, render object keys many times, read values back out of keys.
//!
//! One language accepts the syntaxes users bring from the destinations they already use:
//!
//! | syntax | renders | example |
//! |---|---|---|
//! | `${NAMESPACE}` | the stream's namespace, or nothing (the `/` after it goes too) | `public` |
//! | `${STREAM_NAME}` | the stream name | `users` |
//! | `${YEAR}` `${MONTH}` `${DAY}` `${HOUR}` `${MINUTE}` `${SECOND}` | zero-padded parts of a time | `2024`, `01` |
//! | `${MILLISECOND}` | three digits | `042` |
//! | `${EPOCH}` | milliseconds since the Unix epoch | `1732665600042` |
//! | `${DATE}` | ISO date | `2024-11-27` |
//! | `${UUID}` | a random UUID per rendered key | `0b6c…` |
//! | `${SYNC_ID}` `${JOB_ID}` | the id of the sync | `01936b…` |
//! | `${PART_NUMBER}` `{part_number}` `{part_number:05}` | the file's part number, optionally zero-padded | `00000` |
//! | `{format_extension}` | the file extension, with its dot | `.parquet`, `.jsonl.gz` |
//! | `{date}` `{date:yyyy_MM}` | `yyyy_MM_dd`, or a date pattern (`yyyy yy MM dd HH mm ss SSS 'text'`) | `2024_11` |
//! | `{timestamp}` `{timestamp:millis}` `{timestamp:micros}` | epoch milliseconds or microseconds | `1732665600042` |
//! | `{sync_id}` | the id of the sync | `01936b…` |
//! | `%Y` `%m` `%d` `%H` `%F` … | strftime fields, inline | `%Y/%m/%d` → `2024/11/27` |
//! | `${name}` | a host variable: a static value, or a column of each record | `${tenant}`, `${country}` |
//!
//! `{{`, `}}` and `%%` stand for a literal `{`, `}` and `%`.
//!
//! # Clocks and time zone
//!
//! Every time variable reads one of three clocks: the **sync** start (the default), the
//! **record**'s time (a column named with [`TemplateOptions::with_time_column`]), or the
//! wall clock when the **file** is created. The template's clock is set with
//! [`TemplateOptions::with_clock`]; one variable can state its own with `@`:
//! `${DAY@record}`, `{date:yyyy_MM@file}`. Times are rendered in UTC unless
//! [`TemplateOptions::with_time_zone`] says otherwise (`+02:00`, `Europe/Paris`). Epoch
//! variables do not depend on the zone.
//!
//! # Hive partitions
//!
//! With [`TemplateOptions::with_hive`], a folder made of exactly one `${…}` variable renders
//! as `name=value`: `${YEAR}/${MONTH}/${DAY}/${JOB_ID}` becomes
//! `year=2024/month=11/day=27/job_id=<id>`, `${DATE}` becomes `date=2024-11-27` and
//! `${country}` becomes `country=FR`. The namespace and stream folders name the table, not a
//! partition, and stay as they are. Values are escaped the way Hive, Spark, Trino and Athena
//! unescape them, and an empty value is written as Hive writes a null one,
//! `__HIVE_DEFAULT_PARTITION__`. Outside Hive mode too, a folder made of one record column
//! keeps its place when the value is empty (as `__HIVE_DEFAULT_PARTITION__`), so that keys
//! read back unambiguously; a folder of the namespace or of an empty static value disappears.
//!
//! # Checks
//!
//! Parsing checks everything that can be checked without values: unknown variables, bad
//! format specs and unbalanced braces are reported with their byte position and a hint.
//! Rendering checks the key: at most 1024 bytes of UTF-8, no `.` or `..` segment, no control
//! character; repeated `/` collapse and a leading `/` (left by an empty variable) goes.
//! Characters S3 advises against are escaped in variable values (or refused, by
//! [`CharacterPolicy`]); a `/` in a value is always escaped, so values never add folders.
//!
//! ```
//! use s3conn_layout::template::{RenderContext, Template, TemplateOptions};
//! use chrono::{TimeZone, Utc};
//!
//! let options = TemplateOptions::default().with_hive(true).with_static("tenant", "acme");
//! let template = Template::parse_with(
//!     "${STREAM_NAME}/${tenant}/${YEAR}/${MONTH}/${DAY}/${JOB_ID}/{part_number}{format_extension}",
//!     &options,
//! )?;
//! let time = Utc.with_ymd_and_hms(2024, 11, 27, 9, 0, 0).unwrap();
//! let ctx = RenderContext::new("users", time)
//!     .with_sync_id("d12d74f4")
//!     .with_format_extension(".csv.gz");
//! assert_eq!(
//!     template.render(&ctx)?,
//!     "users/tenant=acme/year=2024/month=11/day=27/job_id=d12d74f4/0.csv.gz"
//! );
//!
//! // And back: the values of a key.
//! let parsed = template.matcher()?.parse(&template.render(&ctx)?).unwrap();
//! assert_eq!(parsed.get("JOB_ID"), Some("d12d74f4"));
//! assert_eq!(parsed.date(), chrono::NaiveDate::from_ymd_opt(2024, 11, 27));
//! # Ok::<(), s3conn_layout::Error>(())
//! ```

mod escape;
mod matcher;
mod parser;

use std::collections::BTreeMap;
use std::fmt;
use std::fmt::Write as _;

use chrono::{
    DateTime, Datelike, FixedOffset, Months, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta,
    TimeZone, Timelike, Utc,
};

pub use escape::CharacterPolicy;
pub use matcher::{KeyMatcher, ParsedKey};

use crate::error::{Error, Result};

/// The longest object key S3 accepts, in bytes of UTF-8.
pub const MAX_KEY_BYTES: usize = 1024;

/// The default key template: one folder per stream, files named `<date>_<epoch>_<part>.<ext>`.
pub const DEFAULT_TEMPLATE: &str =
    "${NAMESPACE}/${STREAM_NAME}/${YEAR}_${MONTH}_${DAY}_${EPOCH}_{part_number}{format_extension}";

/// How Hive writes a null or empty partition value (`country=__HIVE_DEFAULT_PARTITION__`).
pub const HIVE_NULL: &str = "__HIVE_DEFAULT_PARTITION__";

/// The most prefixes [`Template::prefixes`] produces for one range.
const MAX_PREFIXES: usize = 100_000;

/// Which time a time variable reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Clock {
    /// The start of the sync (the default): every file of a sync shares it.
    #[default]
    Sync,
    /// The record's own time, from the template's time column.
    Record,
    /// The wall clock when the file is created.
    File,
}

impl std::str::FromStr for Clock {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "sync" => Ok(Self::Sync),
            "record" => Ok(Self::Record),
            "file" => Ok(Self::File),
            other => Err(Error::Unsuitable {
                template: String::new(),
                reason: format!("clock `{other}`: use sync, record or file"),
            }),
        }
    }
}

impl fmt::Display for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Sync => "sync",
            Self::Record => "record",
            Self::File => "file",
        })
    }
}

/// The time zone time variables are rendered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Zone {
    /// UTC (the default).
    #[default]
    Utc,
    /// A fixed offset (`+02:00`).
    Fixed(FixedOffset),
    /// A zone of the IANA database (`Europe/Paris`), with its daylight saving time.
    Named(chrono_tz::Tz),
}

impl std::str::FromStr for Zone {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        if s.eq_ignore_ascii_case("utc") || s == "Z" {
            return Ok(Self::Utc);
        }
        if let Ok(offset) = s.parse::<FixedOffset>() {
            return Ok(Self::Fixed(offset));
        }
        s.parse::<chrono_tz::Tz>()
            .map(Self::Named)
            .map_err(|_| Error::Unsuitable {
                template: String::new(),
                reason: format!(
                    "time zone `{s}`: use UTC, an offset such as +02:00, or an IANA name such as Europe/Paris"
                ),
            })
    }
}

impl Zone {
    /// `t` in this zone, or `None` when its wall-clock time is outside chrono's range (the
    /// first or last instants chrono can hold, in a zone behind or ahead of UTC).
    fn local(&self, t: DateTime<Utc>) -> Option<DateTime<FixedOffset>> {
        let offset = match self {
            Self::Utc => FixedOffset::east_opt(0)?,
            Self::Fixed(offset) => *offset,
            Self::Named(tz) => *t.with_timezone(tz).fixed_offset().offset(),
        };
        t.naive_utc().checked_add_offset(offset)?;
        Some(t.with_timezone(&offset))
    }

    /// The wall-clock time of `t` in this zone, when it has one.
    fn naive_local(&self, t: DateTime<Utc>) -> Option<NaiveDateTime> {
        self.local(t).map(|l| l.naive_local())
    }

    /// The instant a local wall-clock time names: the earlier one when the clock goes back,
    /// and the first valid one after a gap when it goes forward.
    fn to_utc(self, local: NaiveDateTime) -> Option<DateTime<Utc>> {
        match self {
            Self::Utc => Some(local.and_utc()),
            Self::Fixed(offset) => offset
                .from_local_datetime(&local)
                .earliest()
                .map(|t| t.with_timezone(&Utc)),
            Self::Named(tz) => (0..=24).find_map(|hours| {
                tz.from_local_datetime(&(local + TimeDelta::hours(hours)))
                    .earliest()
                    .map(|t| t.with_timezone(&Utc))
            }),
        }
    }
}

/// How fine a time is: the finest time field a template renders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Granularity {
    /// Years.
    Year,
    /// Months.
    Month,
    /// Days.
    Day,
    /// Hours.
    Hour,
    /// Minutes.
    Minute,
    /// Seconds.
    Second,
    /// Milliseconds.
    Millisecond,
}

impl Granularity {
    /// The start of the unit of `t` (in `zone`'s wall-clock time) that `t` falls in.
    pub fn truncate(&self, t: DateTime<Utc>, zone: Zone) -> DateTime<Utc> {
        zone.naive_local(t)
            .and_then(|local| zone.to_utc(self.truncate_local(local)))
            .unwrap_or(t)
    }

    fn truncate_local(&self, t: NaiveDateTime) -> NaiveDateTime {
        let date = t.date();
        let (h, m, s, ms) = (
            t.hour(),
            t.minute(),
            t.second(),
            t.and_utc().timestamp_subsec_millis(),
        );
        let at = |d: NaiveDate, h, m, s, ms| {
            d.and_hms_milli_opt(h, m, s, ms)
                .unwrap_or_else(|| d.and_time(NaiveTime::MIN))
        };
        match self {
            Self::Millisecond => at(date, h, m, s, ms),
            Self::Second => at(date, h, m, s, 0),
            Self::Minute => at(date, h, m, 0, 0),
            Self::Hour => at(date, h, 0, 0, 0),
            Self::Day => at(date, 0, 0, 0, 0),
            Self::Month => at(date.with_day(1).unwrap_or(date), 0, 0, 0, 0),
            Self::Year => at(date.with_ordinal(1).unwrap_or(date), 0, 0, 0, 0),
        }
    }

    /// About how many units `span` holds (months of 28 days, years of 365: an upper bound).
    fn units(&self, span: TimeDelta) -> i64 {
        match self {
            Self::Year => span.num_days() / 365,
            Self::Month => span.num_days() / 28,
            Self::Day => span.num_days(),
            Self::Hour => span.num_hours(),
            Self::Minute => span.num_minutes(),
            Self::Second => span.num_seconds(),
            Self::Millisecond => span.num_milliseconds(),
        }
    }

    /// The start of the next unit after `t` (a unit start), in wall-clock time.
    fn step_local(&self, t: NaiveDateTime) -> Option<NaiveDateTime> {
        match self {
            Self::Year => t.checked_add_months(Months::new(12)),
            Self::Month => t.checked_add_months(Months::new(1)),
            Self::Day => t.checked_add_signed(TimeDelta::days(1)),
            Self::Hour => t.checked_add_signed(TimeDelta::hours(1)),
            Self::Minute => t.checked_add_signed(TimeDelta::minutes(1)),
            Self::Second => t.checked_add_signed(TimeDelta::seconds(1)),
            Self::Millisecond => t.checked_add_signed(TimeDelta::milliseconds(1)),
        }
    }
}

/// A time field a template renders.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TimeField {
    /// `${YEAR}`
    Year,
    /// `${MONTH}`
    Month,
    /// `${DAY}`
    Day,
    /// `${HOUR}`
    Hour,
    /// `${MINUTE}`
    Minute,
    /// `${SECOND}`
    Second,
    /// `${MILLISECOND}`
    Millisecond,
    /// `${EPOCH}`, `{timestamp}`, `{timestamp:millis}`
    EpochMillis,
    /// `{timestamp:micros}`
    EpochMicros,
    /// `${DATE}`
    IsoDate,
    /// `{date}`, `{date:PATTERN}` and inline `%Y`-style fields, as a strftime string.
    Format(String),
}

impl TimeField {
    fn granularity(&self) -> Option<Granularity> {
        Some(match self {
            Self::Year => Granularity::Year,
            Self::Month => Granularity::Month,
            Self::Day | Self::IsoDate => Granularity::Day,
            Self::Hour => Granularity::Hour,
            Self::Minute => Granularity::Minute,
            Self::Second => Granularity::Second,
            Self::Millisecond | Self::EpochMillis | Self::EpochMicros => Granularity::Millisecond,
            Self::Format(f) => return format_granularity(f),
        })
    }
}

/// The finest field a strftime string renders, if it renders only well-known fields.
fn format_granularity(format: &str) -> Option<Granularity> {
    let mut finest = None;
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            continue;
        }
        let mut spec = String::new();
        while let Some(&n) = chars.peek() {
            chars.next();
            spec.push(n);
            if n.is_ascii_alphabetic() || n == '%' {
                break;
            }
        }
        let g = match spec.chars().last() {
            Some('%') => continue,
            Some('Y' | 'y' | 'C' | 'G' | 'g') => Granularity::Year,
            Some('m' | 'b' | 'B' | 'h') => Granularity::Month,
            Some('d' | 'e' | 'F' | 'j' | 'D' | 'x' | 'a' | 'A' | 'u' | 'w' | 'U' | 'W' | 'V') => {
                Granularity::Day
            }
            Some('H' | 'I' | 'k' | 'l' | 'p' | 'P') => Granularity::Hour,
            Some('M' | 'R') => Granularity::Minute,
            Some('S' | 'T' | 'X' | 'r' | 's') => Granularity::Second,
            Some('f') => Granularity::Millisecond,
            _ => return None,
        };
        finest = Some(finest.map_or(g, |f: Granularity| f.max(g)));
    }
    finest
}

/// A variable a template can contain.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Variable {
    /// `${NAMESPACE}`
    Namespace,
    /// `${STREAM_NAME}`
    StreamName,
    /// A time field, and the clock it reads when it states one.
    Time {
        /// What it renders.
        field: TimeField,
        /// Its own clock (`@record`); `None` reads the template's clock.
        clock: Option<Clock>,
    },
    /// `${UUID}`
    Uuid,
    /// `${SYNC_ID}`, `${JOB_ID}`, `{sync_id}`
    SyncId,
    /// `${PART_NUMBER}`, `{part_number}`, `{part_number:WIDTH}`
    PartNumber {
        /// Zero-padded width (0: no padding).
        width: u8,
    },
    /// `{format_extension}`
    FormatExtension,
    /// A host variable: a static value or a record column.
    Host(String),
}

impl Variable {
    /// Whether this variable makes every rendered key of one sync distinct from the keys of
    /// another sync (a time with millisecond precision, a UUID or the sync id).
    pub fn is_unique_per_sync(&self) -> bool {
        matches!(
            self,
            Self::Uuid
                | Self::SyncId
                | Self::Time {
                    field: TimeField::EpochMillis | TimeField::EpochMicros,
                    clock: None | Some(Clock::Sync),
                }
        )
    }

    /// Whether this variable makes the keys of two files of one stream in one sync distinct.
    pub fn is_unique_per_file(&self) -> bool {
        matches!(self, Self::PartNumber { .. } | Self::Uuid)
    }
}

/// A variable where it stands, with the name it was written with.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Slot {
    var: Variable,
    /// `YEAR`, `JOB_ID`, `part_number`, `%Y`, a host name.
    name: String,
    /// Written `${…}`: a path variable.
    path_style: bool,
}

impl Slot {
    /// Whether a folder made of this variable alone is a Hive partition (`name=value`): path
    /// variables other than the namespace and stream, which name the table.
    fn is_partition(&self) -> bool {
        self.path_style && !matches!(self.var, Variable::Namespace | Variable::StreamName)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Var(Slot),
}

/// How a template is read: Hive mode, clock, time zone, host variables, character policy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TemplateOptions {
    hive: bool,
    clock: Clock,
    zone: Zone,
    statics: BTreeMap<String, String>,
    columns: Vec<String>,
    time_column: Option<String>,
    characters: CharacterPolicy,
}

impl TemplateOptions {
    /// Render folders made of one `${…}` variable as `name=value`.
    pub fn with_hive(mut self, hive: bool) -> Self {
        self.hive = hive;
        self
    }

    /// The clock of time variables that do not state their own (default: sync).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The clock of time variables that do not state their own.
    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// The time zone of time variables (default UTC).
    pub fn with_zone(mut self, zone: Zone) -> Self {
        self.zone = zone;
        self
    }

    /// The time zone, by name (`UTC`, `+02:00`, `Europe/Paris`).
    pub fn with_time_zone(self, zone: &str) -> Result<Self> {
        Ok(self.with_zone(zone.parse()?))
    }

    /// A host variable with a static value: `${name}` renders `value`.
    pub fn with_static(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.statics.insert(name.into(), value.into());
        self
    }

    /// A host variable whose value comes from each record's column of that name:
    /// `${country}` partitions the records by `country`.
    pub fn with_column(mut self, name: impl Into<String>) -> Self {
        let name = name.into();
        if !self.columns.contains(&name) {
            self.columns.push(name);
        }
        self
    }

    /// The column that holds each record's time (for the record clock, and for the time
    /// range a manifest records per file).
    pub fn with_time_column(mut self, name: impl Into<String>) -> Self {
        self.time_column = Some(name.into());
        self
    }

    /// What to do with characters S3 advises against in variable values.
    pub fn with_characters(mut self, policy: CharacterPolicy) -> Self {
        self.characters = policy;
        self
    }

    /// The time zone.
    pub fn zone(&self) -> Zone {
        self.zone
    }
}

/// The values a template is rendered with.
#[derive(Debug, Clone)]
pub struct RenderContext {
    namespace: Option<String>,
    stream: String,
    time: DateTime<Utc>,
    record_time: Option<DateTime<Utc>>,
    file_time: Option<DateTime<Utc>>,
    sync_id: String,
    part_number: u64,
    format_extension: String,
    values: BTreeMap<String, String>,
}

impl RenderContext {
    /// Values for `stream` at `time` (the sync's start), part number 0, no namespace, empty
    /// sync id and extension.
    pub fn new(stream: impl Into<String>, time: DateTime<Utc>) -> Self {
        Self {
            namespace: None,
            stream: stream.into(),
            time,
            record_time: None,
            file_time: None,
            sync_id: String::new(),
            part_number: 0,
            format_extension: String::new(),
            values: BTreeMap::new(),
        }
    }

    /// Set the stream's namespace.
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// Set or clear the stream's namespace.
    pub fn with_optional_namespace(mut self, namespace: Option<String>) -> Self {
        self.namespace = namespace;
        self
    }

    /// Set the sync id.
    pub fn with_sync_id(mut self, sync_id: impl Into<String>) -> Self {
        self.sync_id = sync_id.into();
        self
    }

    /// Set the part number.
    pub fn with_part_number(mut self, part_number: u64) -> Self {
        self.part_number = part_number;
        self
    }

    /// Set the file extension, with its leading dot (`.parquet`, `.jsonl.gz`).
    pub fn with_format_extension(mut self, extension: impl Into<String>) -> Self {
        self.format_extension = extension.into();
        self
    }

    /// Set the record time (for variables on the record clock).
    pub fn with_record_time(mut self, time: DateTime<Utc>) -> Self {
        self.record_time = Some(time);
        self
    }

    /// Set the file-creation time (default: the wall clock when the key is rendered).
    pub fn with_file_time(mut self, time: DateTime<Utc>) -> Self {
        self.file_time = Some(time);
        self
    }

    /// Give a host variable its value for this key (a record column's value).
    pub fn with_value(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.values.insert(name.into(), value.into());
        self
    }

    /// The part number.
    pub fn part_number(&self) -> u64 {
        self.part_number
    }
}

/// A parsed path template. Parse once with [`Template::parse`] or [`Template::parse_with`],
/// render with [`Template::render`], read keys back with [`Template::matcher`].
#[derive(Clone, PartialEq)]
pub struct Template {
    source: String,
    /// Path segments (split on literal `/`); the last is the file name.
    segments: Vec<Vec<Part>>,
    options: TemplateOptions,
}

impl Template {
    /// Parse a template with default options, reporting the first problem with its byte
    /// position and a hint.
    ///
    /// ```
    /// use s3conn_layout::template::Template;
    /// let err = Template::parse("${STREAM}/{part_number}").unwrap_err();
    /// assert!(err.to_string().contains("at byte 0"), "{err}");
    /// assert!(err.to_string().contains("did you mean `${STREAM_NAME}`"), "{err}");
    /// ```
    pub fn parse(template: &str) -> Result<Self> {
        Self::parse_with(template, &TemplateOptions::default())
    }

    /// Parse a template with options (Hive mode, clock, zone, host variables).
    pub fn parse_with(template: &str, options: &TemplateOptions) -> Result<Self> {
        parser::parse(template, options)
    }

    /// The template as it was written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The options it was parsed with.
    pub fn options(&self) -> &TemplateOptions {
        &self.options
    }

    fn slots(&self) -> impl Iterator<Item = &Slot> {
        self.segments.iter().flatten().filter_map(|p| match p {
            Part::Var(slot) => Some(slot),
            Part::Literal(_) => None,
        })
    }

    /// The variables in the order they appear.
    pub fn variables(&self) -> impl Iterator<Item = &Variable> {
        self.slots().map(|s| &s.var)
    }

    /// Whether two files of one stream in one sync always get distinct keys.
    pub fn is_unique_per_file(&self) -> bool {
        self.variables().any(Variable::is_unique_per_file)
    }

    /// Whether keys of one sync can never equal keys of an earlier sync (an epoch time on the
    /// sync clock, a UUID or the sync id).
    pub fn is_unique_per_sync(&self) -> bool {
        self.variables().any(|v| match v {
            Variable::Time { clock, .. } => {
                self.clock_of(*clock) == Clock::Sync && v.is_unique_per_sync()
            }
            other => other.is_unique_per_sync(),
        })
    }

    /// Check that the template can name the files of an append (incremental) sync: it needs a
    /// part number, a UUID, an epoch time or the sync id, or new files could take old keys.
    pub fn check_append(&self) -> Result<()> {
        if self.is_unique_per_file() || self.is_unique_per_sync() {
            Ok(())
        } else {
            Err(Error::Unsuitable {
                template: self.source.clone(),
                reason: "in append mode every file needs a key of its own, and nothing in this template changes from file to file or from sync to sync: add `{part_number}`, `${UUID}`, `${EPOCH}` or `${SYNC_ID}`".into(),
            })
        }
    }

    /// The record columns the template reads (host variables declared as columns).
    pub fn columns(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for slot in self.slots() {
            if let Variable::Host(name) = &slot.var
                && self.options.columns.contains(name)
                && !out.contains(&name.as_str())
            {
                out.push(name);
            }
        }
        out
    }

    /// Whether `slot` is a host variable read from each record's column.
    fn is_column(&self, slot: &Slot) -> bool {
        matches!(&slot.var, Variable::Host(name)
            if !self.options.statics.contains_key(name) && self.options.columns.contains(name))
    }

    /// Whether a folder made of `slot` alone disappears when its value is empty: the
    /// namespace, and static host values.
    fn may_vanish(&self, slot: &Slot) -> bool {
        match &slot.var {
            Variable::Namespace => true,
            Variable::Host(name) => self.options.statics.contains_key(name),
            _ => false,
        }
    }

    /// The clock a time variable reads.
    fn clock_of(&self, clock: Option<Clock>) -> Clock {
        clock.unwrap_or(self.options.clock)
    }

    /// The finest time field read on the record clock, if any: records whose times agree to
    /// this granularity (and whose column values agree) share a key.
    pub fn record_granularity(&self) -> Option<Granularity> {
        self.slots()
            .filter_map(|s| match &s.var {
                Variable::Time { field, clock } if self.clock_of(*clock) == Clock::Record => {
                    Some(field.granularity().unwrap_or(Granularity::Millisecond))
                }
                _ => None,
            })
            .max()
    }

    /// The column holding each record's time.
    pub fn time_column(&self) -> Option<&str> {
        self.options.time_column.as_deref()
    }

    /// Render a key and check it.
    pub fn render(&self, ctx: &RenderContext) -> Result<String> {
        self.render_segments(self.segments.len(), ctx, None)
            .and_then(|raw| self.normalize(raw))
    }

    /// Render the first `count` segments; `time` (when set) stands in for every clock.
    fn render_segments(
        &self,
        count: usize,
        ctx: &RenderContext,
        time: Option<DateTime<Utc>>,
    ) -> Result<String> {
        let mut out = String::with_capacity(self.source.len() + 32);
        let last = self.segments.len().saturating_sub(1);
        for (i, segment) in self.segments.iter().take(count).enumerate() {
            if i > 0 {
                out.push('/');
            }
            match (i < last, segment.as_slice()) {
                (true, [Part::Var(slot)]) if self.options.hive && slot.is_partition() => {
                    let value = self.value(slot, ctx, time, true)?;
                    let value = if value.is_empty() { HIVE_NULL } else { &value };
                    let _ = write!(out, "{}={value}", slot.name.to_ascii_lowercase());
                }
                (true, [Part::Var(slot)]) if !self.may_vanish(slot) && self.is_column(slot) => {
                    let value = self.value(slot, ctx, time, false)?;
                    out.push_str(if value.is_empty() { HIVE_NULL } else { &value });
                }
                _ => {
                    for part in segment {
                        match part {
                            Part::Literal(text) => out.push_str(text),
                            Part::Var(slot) => out.push_str(&self.value(slot, ctx, time, false)?),
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// The rendered (and escaped) value of one variable.
    fn value(
        &self,
        slot: &Slot,
        ctx: &RenderContext,
        time: Option<DateTime<Utc>>,
        hive: bool,
    ) -> Result<String> {
        let escape = |raw: &str| {
            escape::escape_value(raw, self.options.characters, hive, &slot.name, &self.source)
        };
        Ok(match &slot.var {
            Variable::Namespace => escape(ctx.namespace.as_deref().unwrap_or(""))?,
            Variable::StreamName => escape(&ctx.stream)?,
            Variable::SyncId => escape(&ctx.sync_id)?,
            Variable::Host(name) => {
                let raw = self
                    .options
                    .statics
                    .get(name)
                    .or_else(|| ctx.values.get(name))
                    .ok_or_else(|| Error::InvalidKey {
                        template: self.source.clone(),
                        key: String::new(),
                        reason: format!("no value was given for `${{{name}}}`"),
                    })?;
                escape(raw)?
            }
            Variable::Uuid => uuid::Uuid::new_v4().to_string(),
            Variable::PartNumber { width } => {
                format!("{:0width$}", ctx.part_number, width = usize::from(*width))
            }
            Variable::FormatExtension => ctx.format_extension.clone(),
            Variable::Time { field, clock } => {
                let t = match (time, self.clock_of(*clock)) {
                    (Some(t), _) => t,
                    (None, Clock::Sync) => ctx.time,
                    (None, Clock::File) => ctx.file_time.unwrap_or_else(Utc::now),
                    (None, Clock::Record) => ctx.record_time.ok_or_else(|| Error::InvalidKey {
                        template: self.source.clone(),
                        key: String::new(),
                        reason: format!(
                            "`{}` reads the record clock but no record time was given",
                            slot.name
                        ),
                    })?,
                };
                render_time(field, t, self.options.zone).ok_or_else(|| Error::InvalidKey {
                    template: self.source.clone(),
                    key: String::new(),
                    reason: format!(
                        "`{}` cannot render {t}: it is outside the range of dates",
                        slot.name
                    ),
                })?
            }
        })
    }

    fn normalize(&self, raw: String) -> Result<String> {
        let invalid = |key: &str, reason: &str| Error::InvalidKey {
            template: self.source.clone(),
            key: key.to_owned(),
            reason: reason.to_owned(),
        };
        let mut key = String::with_capacity(raw.len());
        for segment in raw.split('/').filter(|s| !s.is_empty()) {
            if segment == ".." || segment == "." {
                return Err(invalid(&raw, "a `.` or `..` path segment is not allowed"));
            }
            if !key.is_empty() {
                key.push('/');
            }
            key.push_str(segment);
        }
        if raw.ends_with('/') {
            return Err(invalid(
                &raw,
                "the key ends with `/`; end the template with a file name such as `{part_number}{format_extension}`",
            ));
        }
        if key.is_empty() {
            return Err(invalid(&raw, "the key is empty"));
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(invalid(
                &key,
                &format!(
                    "the key is {} bytes long; S3 accepts at most {MAX_KEY_BYTES}",
                    key.len()
                ),
            ));
        }
        if let Some(c) = key.chars().find(|c| c.is_control()) {
            return Err(invalid(
                &key,
                &format!("the key contains the control character {c:?}"),
            ));
        }
        Ok(key)
    }

    /// Compile a matcher that reads variable values back out of keys this template rendered.
    pub fn matcher(&self) -> Result<KeyMatcher> {
        matcher::KeyMatcher::new(self)
    }

    /// The folder prefixes to list to find every key whose time falls between `from` and
    /// `to` (inclusive), without listing everything: the template's leading folders that hold
    /// only literals, the namespace, the stream, static values and time fields, rendered
    /// for each time unit in the range. Each prefix ends with `/`; an empty result means the
    /// template has no such leading folder (list from the root).
    ///
    /// ```
    /// use chrono::{TimeZone, Utc};
    /// use s3conn_layout::template::{RenderContext, Template};
    /// let t = Template::parse("${STREAM_NAME}/date=${DATE}/part-{part_number}{format_extension}")?;
    /// let ctx = RenderContext::new("users", Utc::now());
    /// let from = Utc.with_ymd_and_hms(2024, 2, 28, 12, 0, 0).unwrap();
    /// let to = Utc.with_ymd_and_hms(2024, 3, 1, 0, 0, 0).unwrap();
    /// assert_eq!(
    ///     t.prefixes(&ctx, from, to)?,
    ///     ["users/date=2024-02-28/", "users/date=2024-02-29/", "users/date=2024-03-01/"]
    /// );
    /// # Ok::<(), s3conn_layout::Error>(())
    /// ```
    pub fn prefixes(
        &self,
        ctx: &RenderContext,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<String>> {
        let dirs = self.segments.len().saturating_sub(1);
        let mut count = 0;
        let mut granularity: Option<Granularity> = None;
        for segment in self.segments.iter().take(dirs) {
            let mut finest = granularity;
            let plannable = segment.iter().all(|part| match part {
                Part::Literal(_) => true,
                Part::Var(slot) => match &slot.var {
                    Variable::Namespace | Variable::StreamName => true,
                    Variable::Host(name) => {
                        self.options.statics.contains_key(name) || ctx.values.contains_key(name)
                    }
                    Variable::Time { field, .. } => match field.granularity() {
                        Some(g) => {
                            finest = Some(finest.map_or(g, |f| f.max(g)));
                            true
                        }
                        None => false,
                    },
                    _ => false,
                },
            });
            if !plannable {
                break;
            }
            granularity = finest;
            count += 1;
        }
        if count == 0 {
            return Ok(Vec::new());
        }
        let mut out: Vec<String> = Vec::new();
        let render = |t| -> Result<String> {
            let raw = self.render_segments(count, ctx, t)?;
            let mut prefix = self.normalize_prefix(&raw);
            prefix.push('/');
            Ok(prefix)
        };
        match granularity {
            None => out.push(render(None)?),
            Some(g) => {
                let zone = self.options.zone;
                let out_of_range = || Error::Unsuitable {
                    template: self.source.clone(),
                    reason: format!("the range {from} to {to} is outside the range of dates"),
                };
                let end = zone.naive_local(to).ok_or_else(out_of_range)?;
                let mut local = g.truncate_local(zone.naive_local(from).ok_or_else(out_of_range)?);
                // Bounded by the time units walked, not only by the prefixes kept: a fine
                // unit under a coarse folder repeats one prefix many times.
                if g.units(end - local) > MAX_PREFIXES as i64 {
                    return Err(Error::Unsuitable {
                        template: self.source.clone(),
                        reason: format!(
                            "the range spans more than {MAX_PREFIXES} units of the template's finest folder time; narrow it"
                        ),
                    });
                }
                while local <= end {
                    if let Some(t) = zone.to_utc(local) {
                        let prefix = render(Some(t))?;
                        if out.last() != Some(&prefix) {
                            out.push(prefix);
                        }
                    }
                    // Wall-clock steps always move forward.
                    match g.step_local(local) {
                        Some(next) if next > local => local = next,
                        _ => break,
                    }
                }
            }
        }
        out.dedup();
        Ok(out)
    }

    fn normalize_prefix(&self, raw: &str) -> String {
        raw.split('/')
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("/")
    }
}

/// A time field of `t` in `zone`, or `None` when `t` has no wall-clock time there.
fn render_time(field: &TimeField, t: DateTime<Utc>, zone: Zone) -> Option<String> {
    let local = zone.local(t)?;
    Some(match field {
        TimeField::Year => format!("{:04}", local.year()),
        TimeField::Month => format!("{:02}", local.month()),
        TimeField::Day => format!("{:02}", local.day()),
        TimeField::Hour => format!("{:02}", local.hour()),
        TimeField::Minute => format!("{:02}", local.minute()),
        TimeField::Second => format!("{:02}", local.second()),
        TimeField::Millisecond => format!("{:03}", local.timestamp_subsec_millis()),
        TimeField::EpochMillis => t.timestamp_millis().to_string(),
        TimeField::EpochMicros => t.timestamp_micros().to_string(),
        TimeField::IsoDate => local.format("%Y-%m-%d").to_string(),
        // Formats are checked when the template is parsed, so formatting cannot fail.
        TimeField::Format(f) => {
            let mut s = String::new();
            let _ = write!(s, "{}", local.format(f));
            s
        }
    })
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Template").field(&self.source).finish()
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl std::str::FromStr for Template {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl Default for Template {
    fn default() -> Self {
        crate::layouts::stream_folders()
    }
}

#[cfg(test)]
mod tests;
