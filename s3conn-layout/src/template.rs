//! Path templates: parse once, render object keys many times.
//!
//! A template mixes literal text with two kinds of variables that users bring from the
//! destinations they already know:
//!
//! | syntax | renders | example |
//! |---|---|---|
//! | `${NAMESPACE}` | the stream's namespace, or nothing (a `/` after it is dropped too) | `public` |
//! | `${STREAM_NAME}` | the stream name | `users` |
//! | `${YEAR}` `${MONTH}` `${DAY}` `${HOUR}` `${MINUTE}` `${SECOND}` | zero-padded parts of the sync time | `2024`, `01` |
//! | `${MILLISECOND}` | three digits | `042` |
//! | `${EPOCH}` | milliseconds since the Unix epoch | `1732665600042` |
//! | `${DATE}` | ISO date | `2024-11-27` |
//! | `${UUID}` | a random UUID per rendered key | `0b6c…` |
//! | `${SYNC_ID}` `${JOB_ID}` | the id of the sync | `01936b…` |
//! | `${PART_NUMBER}` `{part_number}` | the file's part number within the sync | `0` |
//! | `{part_number:05}` | zero-padded to a width | `00000` |
//! | `{format_extension}` | the file extension, with its dot | `.parquet`, `.jsonl.gz` |
//! | `{date}` | `yyyy_MM_dd` | `2024_11_27` |
//! | `{date:PATTERN}` | a date pattern (`yyyy`, `yy`, `MM`, `dd`, `HH`, `mm`, `ss`, `SSS`, `'quoted'`) | `{date:yyyy_MM}` → `2024_11` |
//! | `{timestamp}`, `{timestamp:millis}` | epoch milliseconds | `1732665600042` |
//! | `{timestamp:micros}` | epoch microseconds | `1732665600042000` |
//! | `{sync_id}` | the id of the sync | `01936b…` |
//!
//! `{{` and `}}` stand for literal braces. Every time variable uses the sync's start time,
//! in UTC.
//!
//! Parsing checks everything that can be checked without values: unknown variables, bad
//! format specs and unbalanced braces are reported with their byte position and a hint.
//! Rendering checks the resulting key: at most 1024 bytes of UTF-8, no `..` segment, no
//! control character or backslash; repeated `/` are collapsed and a leading `/` (left by an
//! empty variable) is dropped.
//!
//! ```
//! use s3conn_layout::template::{RenderContext, Template};
//! use chrono::{TimeZone, Utc};
//!
//! let template = Template::parse(
//!     "${NAMESPACE}/${STREAM_NAME}/${YEAR}_${MONTH}_${DAY}_${EPOCH}_{part_number}{format_extension}",
//! )?;
//! let time = Utc.with_ymd_and_hms(2021, 1, 1, 0, 0, 0).unwrap();
//! let ctx = RenderContext::new("users", time)
//!     .with_namespace("public")
//!     .with_format_extension(".csv.gz");
//! assert_eq!(template.render(&ctx)?, "public/users/2021_01_01_1609459200000_0.csv.gz");
//!
//! // Without a namespace the folder disappears cleanly.
//! let ctx = RenderContext::new("users", time).with_format_extension(".csv.gz");
//! assert_eq!(template.render(&ctx)?, "users/2021_01_01_1609459200000_0.csv.gz");
//! # Ok::<(), s3conn_layout::Error>(())
//! ```

use std::fmt;
use std::fmt::Write as _;

use chrono::{DateTime, Datelike, Timelike, Utc};

use crate::error::{Error, Result};

/// The longest object key S3 accepts, in bytes of UTF-8.
pub const MAX_KEY_BYTES: usize = 1024;

/// The default key template: one folder per stream, files named `<date>_<epoch>_<part>.<ext>`.
pub const DEFAULT_TEMPLATE: &str =
    "${NAMESPACE}/${STREAM_NAME}/${YEAR}_${MONTH}_${DAY}_${EPOCH}_{part_number}{format_extension}";

/// A parsed path template. Parse once with [`Template::parse`], render with [`Template::render`].
#[derive(Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Var(Variable),
}

/// A variable a template can contain.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Variable {
    /// `${NAMESPACE}`
    Namespace,
    /// `${STREAM_NAME}`
    StreamName,
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
    /// `{date}` or `{date:PATTERN}`, holding the pattern translated to strftime.
    DatePattern(String),
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
}

impl Variable {
    /// Whether this variable makes every rendered key of one sync distinct from the keys of
    /// another sync (a time with millisecond precision, a UUID or the sync id).
    pub fn is_unique_per_sync(&self) -> bool {
        matches!(
            self,
            Self::EpochMillis | Self::EpochMicros | Self::Uuid | Self::SyncId
        )
    }

    /// Whether this variable makes the keys of two files of one stream in one sync distinct.
    pub fn is_unique_per_file(&self) -> bool {
        matches!(self, Self::PartNumber { .. } | Self::Uuid)
    }
}

/// The path variables written `${NAME}`.
const PATH_VARIABLES: &[(&str, Variable)] = &[
    ("NAMESPACE", Variable::Namespace),
    ("STREAM_NAME", Variable::StreamName),
    ("YEAR", Variable::Year),
    ("MONTH", Variable::Month),
    ("DAY", Variable::Day),
    ("HOUR", Variable::Hour),
    ("MINUTE", Variable::Minute),
    ("SECOND", Variable::Second),
    ("MILLISECOND", Variable::Millisecond),
    ("EPOCH", Variable::EpochMillis),
    ("DATE", Variable::IsoDate),
    ("UUID", Variable::Uuid),
    ("SYNC_ID", Variable::SyncId),
    ("JOB_ID", Variable::SyncId),
    ("PART_NUMBER", Variable::PartNumber { width: 0 }),
];

/// The file-name placeholders written `{name}` or `{name:spec}`.
const PLACEHOLDERS: &[&str] = &[
    "date",
    "timestamp",
    "part_number",
    "sync_id",
    "format_extension",
];

/// The values a template is rendered with.
#[derive(Debug, Clone)]
pub struct RenderContext {
    namespace: Option<String>,
    stream: String,
    time: DateTime<Utc>,
    sync_id: String,
    part_number: u64,
    format_extension: String,
}

impl RenderContext {
    /// Values for `stream` at `time` (the sync's start), part number 0, no namespace, empty
    /// sync id and extension.
    pub fn new(stream: impl Into<String>, time: DateTime<Utc>) -> Self {
        Self {
            namespace: None,
            stream: stream.into(),
            time,
            sync_id: String::new(),
            part_number: 0,
            format_extension: String::new(),
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

    /// The part number.
    pub fn part_number(&self) -> u64 {
        self.part_number
    }
}

impl Template {
    /// Parse a template, reporting the first problem with its byte position and a hint.
    ///
    /// ```
    /// use s3conn_layout::template::Template;
    /// let err = Template::parse("${STREAM}/{part_number}").unwrap_err();
    /// assert!(err.to_string().contains("at byte 0"), "{err}");
    /// assert!(err.to_string().contains("did you mean `${STREAM_NAME}`"), "{err}");
    /// ```
    pub fn parse(template: &str) -> Result<Self> {
        Parser::new(template).parse()
    }

    /// The template as it was written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The variables in the order they appear.
    pub fn variables(&self) -> impl Iterator<Item = &Variable> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Var(v) => Some(v),
            Segment::Literal(_) => None,
        })
    }

    /// Whether two files of one stream in one sync always get distinct keys.
    pub fn is_unique_per_file(&self) -> bool {
        self.variables().any(Variable::is_unique_per_file)
    }

    /// Whether keys of one sync can never equal keys of an earlier sync.
    pub fn is_unique_per_sync(&self) -> bool {
        self.variables().any(Variable::is_unique_per_sync)
    }

    /// Render a key and check it.
    pub fn render(&self, ctx: &RenderContext) -> Result<String> {
        let mut out = String::with_capacity(self.source.len() + 32);
        for segment in &self.segments {
            match segment {
                Segment::Literal(text) => out.push_str(text),
                Segment::Var(var) => render_variable(var, ctx, &mut out),
            }
        }
        self.normalize(out)
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
        if let Some(c) = key.chars().find(|c| c.is_control() || *c == '\\') {
            return Err(invalid(
                &key,
                &format!("the key contains the character {c:?}, which S3 advises against"),
            ));
        }
        Ok(key)
    }
}

fn render_variable(var: &Variable, ctx: &RenderContext, out: &mut String) {
    let t = &ctx.time;
    // Writing to a String cannot fail.
    let _ = match var {
        Variable::Namespace => {
            out.push_str(ctx.namespace.as_deref().unwrap_or(""));
            Ok(())
        }
        Variable::StreamName => {
            out.push_str(&ctx.stream);
            Ok(())
        }
        Variable::Year => write!(out, "{:04}", t.year()),
        Variable::Month => write!(out, "{:02}", t.month()),
        Variable::Day => write!(out, "{:02}", t.day()),
        Variable::Hour => write!(out, "{:02}", t.hour()),
        Variable::Minute => write!(out, "{:02}", t.minute()),
        Variable::Second => write!(out, "{:02}", t.second()),
        Variable::Millisecond => write!(out, "{:03}", t.timestamp_subsec_millis()),
        Variable::EpochMillis => write!(out, "{}", t.timestamp_millis()),
        Variable::EpochMicros => write!(out, "{}", t.timestamp_micros()),
        Variable::IsoDate => write!(out, "{}", t.format("%Y-%m-%d")),
        Variable::DatePattern(fmt) => write!(out, "{}", t.format(fmt)),
        Variable::Uuid => write!(out, "{}", uuid::Uuid::new_v4()),
        Variable::SyncId => {
            out.push_str(&ctx.sync_id);
            Ok(())
        }
        Variable::PartNumber { width } => {
            write!(
                out,
                "{:0width$}",
                ctx.part_number,
                width = usize::from(*width)
            )
        }
        Variable::FormatExtension => {
            out.push_str(&ctx.format_extension);
            Ok(())
        }
    };
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
        // The default template is a constant that the tests parse; fall back to an
        // equivalent hand-built value so this can never fail at run time.
        Self::parse(DEFAULT_TEMPLATE).unwrap_or_else(|_| Self {
            source: DEFAULT_TEMPLATE.to_owned(),
            segments: vec![
                Segment::Var(Variable::Namespace),
                Segment::Literal("/".into()),
                Segment::Var(Variable::StreamName),
                Segment::Literal("/".into()),
                Segment::Var(Variable::Year),
                Segment::Literal("_".into()),
                Segment::Var(Variable::Month),
                Segment::Literal("_".into()),
                Segment::Var(Variable::Day),
                Segment::Literal("_".into()),
                Segment::Var(Variable::EpochMillis),
                Segment::Literal("_".into()),
                Segment::Var(Variable::PartNumber { width: 0 }),
                Segment::Var(Variable::FormatExtension),
            ],
        })
    }
}

struct Parser<'a> {
    src: &'a str,
    segments: Vec<Segment>,
    literal: String,
}

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Self {
        Self {
            src,
            segments: Vec::new(),
            literal: String::new(),
        }
    }

    fn error(&self, position: usize, message: impl Into<String>, hint: Option<String>) -> Error {
        Error::TemplateParse {
            template: self.src.to_owned(),
            position,
            message: message.into(),
            hint,
        }
    }

    fn push_var(&mut self, var: Variable) {
        if !self.literal.is_empty() {
            self.segments
                .push(Segment::Literal(std::mem::take(&mut self.literal)));
        }
        self.segments.push(Segment::Var(var));
    }

    fn parse(mut self) -> Result<Template> {
        if self.src.is_empty() {
            return Err(self.error(
                0,
                "the template is empty",
                Some(format!("the default is `{DEFAULT_TEMPLATE}`")),
            ));
        }
        if self.src.starts_with('/') {
            return Err(self.error(
                0,
                "a key must not start with `/`",
                Some("remove the leading `/`".into()),
            ));
        }
        let bytes = self.src.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let rest = self.src.get(i..).unwrap_or("");
            if rest.starts_with("${") {
                i = self.parse_path_variable(i)?;
            } else if rest.starts_with("{{") {
                self.literal.push('{');
                i += 2;
            } else if rest.starts_with("}}") {
                self.literal.push('}');
                i += 2;
            } else if rest.starts_with('{') {
                i = self.parse_placeholder(i)?;
            } else if rest.starts_with('}') {
                return Err(self.error(
                    i,
                    "unbalanced `}`",
                    Some("write `}}` for a literal brace".into()),
                ));
            } else {
                let Some(c) = rest.chars().next() else { break };
                if c.is_control() || c == '\\' {
                    return Err(self.error(
                        i,
                        format!("the character {c:?} is not allowed in a key"),
                        None,
                    ));
                }
                self.literal.push(c);
                i += c.len_utf8();
            }
        }
        if !self.literal.is_empty() {
            self.segments
                .push(Segment::Literal(std::mem::take(&mut self.literal)));
        }
        for (pos, segment) in literal_segments(self.src) {
            if segment == ".." || segment == "." {
                return Err(self.error(pos, "a `.` or `..` path segment is not allowed", None));
            }
        }
        Ok(Template {
            source: self.src.to_owned(),
            segments: self.segments,
        })
    }

    /// Parse `${NAME}` starting at `start`; returns the index after the closing brace.
    fn parse_path_variable(&mut self, start: usize) -> Result<usize> {
        let body_start = start + 2;
        let body = self.src.get(body_start..).unwrap_or("");
        let Some(len) = body.find(['}', '{', '$', '/']) else {
            return Err(self.error(start, "unclosed `${`", Some("close it with `}`".into())));
        };
        if body.as_bytes().get(len) != Some(&b'}') {
            return Err(self.error(
                start,
                "unclosed `${`",
                Some("close the variable with `}` before anything else".into()),
            ));
        }
        let name = body.get(..len).unwrap_or("");
        if name.is_empty() {
            return Err(self.error(start, "empty variable `${}`", Some(known_path_variables())));
        }
        match PATH_VARIABLES.iter().find(|(n, _)| *n == name) {
            Some((_, var)) => {
                self.push_var(var.clone());
                Ok(body_start + len + 1)
            }
            None => Err(self.error(
                start,
                format!("unknown variable `${{{name}}}`"),
                Some(suggest(name)),
            )),
        }
    }

    /// Parse `{name}` or `{name:spec}` starting at `start`.
    fn parse_placeholder(&mut self, start: usize) -> Result<usize> {
        let body_start = start + 1;
        let body = self.src.get(body_start..).unwrap_or("");
        let Some(len) = body.find(['}', '{']) else {
            return Err(self.error(
                start,
                "unclosed `{`",
                Some("close it with `}`, or write `{{` for a literal brace".into()),
            ));
        };
        if body.as_bytes().get(len) == Some(&b'{') {
            return Err(self.error(
                body_start + len,
                "`{` inside a placeholder",
                Some("placeholders do not nest; write `{{` for a literal brace".into()),
            ));
        }
        let inner = body.get(..len).unwrap_or("");
        let (name, spec) = match inner.split_once(':') {
            Some((n, s)) => (n, Some(s)),
            None => (inner, None),
        };
        let spec_pos = body_start + name.len() + 1;
        let var = match (name, spec) {
            ("date", None) => Variable::DatePattern("%Y_%m_%d".into()),
            ("date", Some(pattern)) => Variable::DatePattern(
                java_date_pattern(pattern)
                    .map_err(|(offset, msg)| self.error(spec_pos + offset, msg, None))?,
            ),
            ("timestamp", None | Some("millis")) => Variable::EpochMillis,
            ("timestamp", Some("micros")) => Variable::EpochMicros,
            ("timestamp", Some(other)) => {
                return Err(self.error(
                    spec_pos,
                    format!("unknown timestamp unit `{other}`"),
                    Some("use `{timestamp:millis}` or `{timestamp:micros}`".into()),
                ));
            }
            ("part_number", None) => Variable::PartNumber { width: 0 },
            ("part_number", Some(width)) => {
                let parsed = width
                    .trim_start_matches('0')
                    .parse::<u8>()
                    .ok()
                    .filter(|w| (1..=20).contains(w) && !width.is_empty());
                match parsed {
                    Some(w) => Variable::PartNumber { width: w },
                    None => {
                        return Err(self.error(
                            spec_pos,
                            format!("bad part number width `{width}`"),
                            Some("write a width from 1 to 20, such as `{part_number:05}`".into()),
                        ));
                    }
                }
            }
            ("sync_id", None) => Variable::SyncId,
            ("format_extension", None) => Variable::FormatExtension,
            ("sync_id" | "format_extension", Some(spec)) => {
                return Err(self.error(
                    spec_pos,
                    format!("`{{{name}}}` takes no format spec, found `{spec}`"),
                    None,
                ));
            }
            _ => {
                return Err(self.error(
                    start,
                    format!("unknown placeholder `{{{inner}}}`"),
                    Some(suggest(name)),
                ));
            }
        };
        self.push_var(var);
        Ok(body_start + len + 1)
    }
}

/// The literal `/`-separated segments of a template with their byte positions, skipping any
/// segment that contains a variable.
fn literal_segments(src: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut pos = 0;
    src.split('/').filter_map(move |seg| {
        let at = pos;
        pos += seg.len() + 1;
        (!seg.contains(['{', '}'])).then_some((at, seg))
    })
}

fn known_path_variables() -> String {
    let names: Vec<String> = PATH_VARIABLES
        .iter()
        .map(|(n, _)| format!("${{{n}}}"))
        .collect();
    format!("known variables: {}", names.join(" "))
}

/// Suggest the closest known variable or placeholder for a misspelt name.
fn suggest(name: &str) -> String {
    let candidates = PATH_VARIABLES
        .iter()
        .map(|(n, _)| format!("${{{n}}}"))
        .chain(PLACEHOLDERS.iter().map(|p| format!("{{{p}}}")));
    let wanted = name.to_ascii_lowercase();
    let best = candidates
        .map(|c| {
            let bare = c
                .trim_start_matches('$')
                .trim_matches(['{', '}'])
                .to_ascii_lowercase();
            let distance = if bare.starts_with(&wanted) || wanted.starts_with(&bare) {
                0
            } else {
                levenshtein(&bare, &wanted)
            };
            (distance, c)
        })
        .min_by_key(|(d, _)| *d);
    match best {
        Some((d, c)) if d <= 3 => format!("did you mean `{c}`?"),
        _ => format!(
            "{}; placeholders: {}",
            known_path_variables(),
            PLACEHOLDERS
                .iter()
                .map(|p| format!("{{{p}}}"))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    }
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = Vec::with_capacity(b.len() + 1);
        cur.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let sub = prev.get(j).copied().unwrap_or(0) + usize::from(ca != *cb);
            let del = prev.get(j + 1).copied().unwrap_or(0) + 1;
            let ins = cur.get(j).copied().unwrap_or(0) + 1;
            cur.push(sub.min(del).min(ins));
        }
        prev = cur;
    }
    prev.last().copied().unwrap_or(0)
}

/// Translate a Java-style date pattern (`yyyy_MM`) to a strftime string. Errors carry the
/// offset within the pattern.
fn java_date_pattern(pattern: &str) -> std::result::Result<String, (usize, String)> {
    if pattern.is_empty() {
        return Err((0, "empty date pattern".into()));
    }
    let mut out = String::new();
    let chars: Vec<(usize, char)> = pattern.char_indices().collect();
    let mut i = 0;
    while let Some(&(offset, c)) = chars.get(i) {
        let run = chars
            .get(i..)
            .unwrap_or(&[])
            .iter()
            .take_while(|(_, d)| *d == c)
            .count();
        if c == '\'' {
            // Quoted literal text up to the next quote.
            let end = chars
                .get(i + 1..)
                .unwrap_or(&[])
                .iter()
                .position(|(_, d)| *d == '\'')
                .ok_or((offset, "unclosed quote in date pattern".to_string()))?;
            for &(_, q) in chars.get(i + 1..i + 1 + end).unwrap_or(&[]) {
                push_literal(&mut out, q);
            }
            i += end + 2;
            continue;
        }
        if c.is_ascii_alphabetic() {
            let spec = match (c, run) {
                ('y', 4) => "%Y",
                ('y', 2) => "%y",
                ('M', 2) => "%m",
                ('d', 2) => "%d",
                ('H', 2) => "%H",
                ('m', 2) => "%M",
                ('s', 2) => "%S",
                ('S', 3) => "%3f",
                _ => {
                    return Err((
                        offset,
                        format!(
                            "unsupported date field `{}`: use yyyy, yy, MM, dd, HH, mm, ss or SSS, and quote literal letters",
                            c.to_string().repeat(run)
                        ),
                    ));
                }
            };
            out.push_str(spec);
            i += run;
        } else {
            if c.is_control() || c == '\\' {
                return Err((offset, format!("the character {c:?} is not allowed")));
            }
            push_literal(&mut out, c);
            i += 1;
        }
    }
    Ok(out)
}

fn push_literal(out: &mut String, c: char) {
    if c == '%' {
        out.push_str("%%");
    } else {
        out.push(c);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use chrono::TimeZone;

    fn time() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 11, 27, 13, 5, 9).unwrap() + chrono::Duration::milliseconds(42)
    }

    fn render(template: &str, ctx: &RenderContext) -> String {
        Template::parse(template).unwrap().render(ctx).unwrap()
    }

    fn parse_err(template: &str) -> (usize, String) {
        match Template::parse(template).unwrap_err() {
            Error::TemplateParse {
                position,
                message,
                hint,
                ..
            } => (
                position,
                format!("{message} | {}", hint.unwrap_or_default()),
            ),
            other => panic!("unexpected error {other}"),
        }
    }

    #[test]
    fn every_path_variable_renders() {
        let ctx = RenderContext::new("users", time())
            .with_namespace("public")
            .with_sync_id("sync-1")
            .with_part_number(7)
            .with_format_extension(".parquet");
        assert_eq!(
            render(
                "${NAMESPACE}/${STREAM_NAME}/${YEAR}/${MONTH}/${DAY}/${HOUR}/${MINUTE}/${SECOND}/${MILLISECOND}/${EPOCH}/${DATE}/${SYNC_ID}/${JOB_ID}/${PART_NUMBER}",
                &ctx
            ),
            "public/users/2024/11/27/13/05/09/042/1732712709042/2024-11-27/sync-1/sync-1/7"
        );
        let uuid_key = render("${UUID}.x", &ctx);
        assert_eq!(uuid_key.len(), 36 + 2);
        assert_ne!(uuid_key, render("${UUID}.x", &ctx), "a fresh UUID per key");
    }

    #[test]
    fn every_placeholder_renders() {
        let ctx = RenderContext::new("s", time())
            .with_sync_id("abc")
            .with_part_number(3)
            .with_format_extension(".jsonl.gz");
        assert_eq!(render("{date}", &ctx), "2024_11_27");
        assert_eq!(render("{date:yyyy_MM}", &ctx), "2024_11");
        assert_eq!(
            render("{date:yy-MM-dd'T'HH.mm.ss.SSS}", &ctx),
            "24-11-27T13.05.09.042"
        );
        assert_eq!(render("{timestamp}", &ctx), "1732712709042");
        assert_eq!(render("{timestamp:millis}", &ctx), "1732712709042");
        assert_eq!(render("{timestamp:micros}", &ctx), "1732712709042000");
        assert_eq!(render("{part_number}", &ctx), "3");
        assert_eq!(render("part-{part_number:05}", &ctx), "part-00003");
        assert_eq!(render("{sync_id}", &ctx), "abc");
        assert_eq!(render("f{format_extension}", &ctx), "f.jsonl.gz");
        assert_eq!(render("a{{b}}c", &ctx), "a{b}c");
    }

    #[test]
    fn default_template_matches_the_documented_example() {
        let t = Template::default();
        assert_eq!(t.as_str(), DEFAULT_TEMPLATE);
        let time = Utc.with_ymd_and_hms(2021, 1, 1, 0, 0, 0).unwrap();
        let ctx = RenderContext::new("users", time)
            .with_namespace("public")
            .with_format_extension(".csv.gz");
        assert_eq!(
            t.render(&ctx).unwrap(),
            "public/users/2021_01_01_1609459200000_0.csv.gz"
        );
        let ctx = RenderContext::new("users", time).with_format_extension(".csv.gz");
        assert_eq!(
            t.render(&ctx).unwrap(),
            "users/2021_01_01_1609459200000_0.csv.gz"
        );
        assert!(t.is_unique_per_file());
        assert!(t.is_unique_per_sync());
    }

    #[test]
    fn repeated_slashes_collapse() {
        let ctx = RenderContext::new("s", time());
        assert_eq!(render("a//b///${NAMESPACE}//c", &ctx), "a/b/c");
    }

    #[test]
    fn parse_errors_carry_position_and_hint() {
        let (pos, msg) = parse_err("data/${STREAM}/x");
        assert_eq!(pos, 5);
        assert!(msg.contains("unknown variable `${STREAM}`"), "{msg}");
        assert!(msg.contains("did you mean `${STREAM_NAME}`"), "{msg}");

        let (pos, msg) = parse_err("data/${YEAR");
        assert_eq!(pos, 5);
        assert!(msg.contains("unclosed `${`"), "{msg}");

        let (pos, msg) = parse_err("data/{part_number");
        assert_eq!(pos, 5);
        assert!(msg.contains("unclosed `{`"), "{msg}");

        let (pos, msg) = parse_err("data}x");
        assert_eq!(pos, 4);
        assert!(
            msg.contains("unbalanced `}`") && msg.contains("`}}`"),
            "{msg}"
        );

        let (pos, msg) = parse_err("x/{date:yyyy_QQ}");
        assert_eq!(pos, 13);
        assert!(msg.contains("unsupported date field `QQ`"), "{msg}");

        let (pos, msg) = parse_err("x/{part_number:abc}");
        assert_eq!(pos, 15);
        assert!(msg.contains("bad part number width"), "{msg}");

        let (pos, msg) = parse_err("x/{timestamp:nanos}");
        assert_eq!(pos, 13);
        assert!(msg.contains("unknown timestamp unit"), "{msg}");

        let (_, msg) = parse_err("x/{stream_name}");
        assert!(msg.contains("did you mean `${STREAM_NAME}`"), "{msg}");

        let (pos, msg) = parse_err("/abs/{part_number}");
        assert_eq!(pos, 0);
        assert!(msg.contains("must not start with `/`"), "{msg}");

        let (pos, msg) = parse_err("a/../{part_number}");
        assert_eq!(pos, 2);
        assert!(msg.contains("`..`"), "{msg}");

        let (pos, _) = parse_err("a/{x{y}}");
        assert_eq!(pos, 4);

        let (_, msg) = parse_err("");
        assert!(msg.contains("empty"), "{msg}");
    }

    #[test]
    fn rendered_keys_are_validated() {
        let t = Template::parse("${STREAM_NAME}/{part_number}").unwrap();
        let err = t.render(&RenderContext::new("..", time())).unwrap_err();
        assert!(err.to_string().contains("`..`"), "{err}");

        let long = "s".repeat(1100);
        let err = t.render(&RenderContext::new(long, time())).unwrap_err();
        assert!(err.to_string().contains("at most 1024"), "{err}");

        let err = t.render(&RenderContext::new("a\nb", time())).unwrap_err();
        assert!(err.to_string().contains("advises against"), "{err}");

        let t = Template::parse("${STREAM_NAME}/").unwrap();
        let err = t.render(&RenderContext::new("s", time())).unwrap_err();
        assert!(err.to_string().contains("ends with `/`"), "{err}");
    }

    #[test]
    fn uniqueness_analysis() {
        let t = Template::parse("${STREAM_NAME}/date=${DATE}/part-{part_number:05}.x").unwrap();
        assert!(t.is_unique_per_file());
        assert!(!t.is_unique_per_sync());
        let t = Template::parse("${STREAM_NAME}/${EPOCH}.x").unwrap();
        assert!(!t.is_unique_per_file());
        assert!(t.is_unique_per_sync());
    }

    #[test]
    fn unicode_literals_are_kept() {
        let ctx = RenderContext::new("événements", time());
        assert_eq!(
            render("données/${STREAM_NAME}/{part_number}", &ctx),
            "données/événements/0"
        );
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,64}") {
            let _ = Template::parse(&s);
        }

        #[test]
        fn rendering_a_parsed_template_never_panics(s in "[a-z${}/_:.0-9A-Z]{0,40}") {
            if let Ok(t) = Template::parse(&s) {
                let _ = t.render(&RenderContext::new("s", time()));
            }
        }
    }
}
