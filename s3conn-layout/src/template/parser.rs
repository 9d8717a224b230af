//! The template parser: every problem is reported with its byte position and a hint.

use chrono::format::{Item, StrftimeItems};

use super::{Clock, Part, Slot, Template, TemplateOptions, TimeField, Variable};
use crate::error::{Error, Result};

/// The path variables written `${NAME}`.
const PATH_VARIABLES: &[&str] = &[
    "NAMESPACE",
    "STREAM_NAME",
    "YEAR",
    "MONTH",
    "DAY",
    "HOUR",
    "MINUTE",
    "SECOND",
    "MILLISECOND",
    "EPOCH",
    "DATE",
    "UUID",
    "SYNC_ID",
    "JOB_ID",
    "PART_NUMBER",
];

/// The file-name placeholders written `{name}` or `{name:spec}`.
const PLACEHOLDERS: &[&str] = &[
    "date",
    "timestamp",
    "part_number",
    "sync_id",
    "format_extension",
];

fn path_variable(name: &str) -> Option<Variable> {
    let time = |field| Variable::Time { field, clock: None };
    Some(match name {
        "NAMESPACE" => Variable::Namespace,
        "STREAM_NAME" => Variable::StreamName,
        "YEAR" => time(TimeField::Year),
        "MONTH" => time(TimeField::Month),
        "DAY" => time(TimeField::Day),
        "HOUR" => time(TimeField::Hour),
        "MINUTE" => time(TimeField::Minute),
        "SECOND" => time(TimeField::Second),
        "MILLISECOND" => time(TimeField::Millisecond),
        "EPOCH" => time(TimeField::EpochMillis),
        "DATE" => time(TimeField::IsoDate),
        "UUID" => Variable::Uuid,
        "SYNC_ID" | "JOB_ID" => Variable::SyncId,
        "PART_NUMBER" => Variable::PartNumber { width: 0 },
        _ => return None,
    })
}

pub(super) fn parse(src: &str, options: &TemplateOptions) -> Result<Template> {
    let mut parser = Parser {
        src,
        options,
        segments: Vec::new(),
        current: Vec::new(),
        literal: String::new(),
        segment_start: 0,
    };
    parser.check_options()?;
    parser.run()?;
    Ok(Template {
        source: src.to_owned(),
        segments: parser.segments,
        options: options.clone(),
    })
}

struct Parser<'a> {
    src: &'a str,
    options: &'a TemplateOptions,
    segments: Vec<Vec<Part>>,
    current: Vec<Part>,
    literal: String,
    segment_start: usize,
}

impl Parser<'_> {
    fn error(&self, position: usize, message: impl Into<String>, hint: Option<String>) -> Error {
        Error::TemplateParse {
            template: self.src.to_owned(),
            position,
            message: message.into(),
            hint,
        }
    }

    fn host_names(&self) -> impl Iterator<Item = &str> {
        self.options
            .statics
            .keys()
            .map(String::as_str)
            .chain(self.options.columns.iter().map(String::as_str))
    }

    fn check_options(&self) -> Result<()> {
        for name in self.host_names() {
            let identifier = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !identifier {
                return Err(Error::Unsuitable {
                    template: self.src.to_owned(),
                    reason: format!(
                        "host variable `{name}`: use letters, digits and `_`, starting with a letter"
                    ),
                });
            }
            if PATH_VARIABLES.contains(&name) {
                return Err(Error::Unsuitable {
                    template: self.src.to_owned(),
                    reason: format!("host variable `{name}` has the name of a built-in variable"),
                });
            }
        }
        Ok(())
    }

    fn flush_literal(&mut self) {
        if !self.literal.is_empty() {
            self.current
                .push(Part::Literal(std::mem::take(&mut self.literal)));
        }
    }

    fn push_var(&mut self, var: Variable, name: &str, path_style: bool) {
        self.flush_literal();
        self.current.push(Part::Var(Slot {
            var,
            name: name.to_owned(),
            path_style,
        }));
    }

    fn end_segment(&mut self, at: usize) -> Result<()> {
        self.flush_literal();
        let segment = std::mem::take(&mut self.current);
        if let [Part::Literal(text)] = segment.as_slice()
            && (text == ".." || text == ".")
        {
            return Err(self.error(
                self.segment_start,
                "a `.` or `..` path segment is not allowed",
                None,
            ));
        }
        self.segments.push(segment);
        self.segment_start = at + 1;
        Ok(())
    }

    fn run(&mut self) -> Result<()> {
        if self.src.is_empty() {
            return Err(self.error(
                0,
                "the template is empty",
                Some(format!("the default is `{}`", super::DEFAULT_TEMPLATE)),
            ));
        }
        if self.src.starts_with('/') {
            return Err(self.error(
                0,
                "a key must not start with `/`",
                Some("remove the leading `/`".into()),
            ));
        }
        let mut i = 0;
        while i < self.src.len() {
            let rest = self.src.get(i..).unwrap_or("");
            if rest.starts_with("${") {
                i = self.path_variable(i)?;
            } else if rest.starts_with("{{") {
                self.literal.push('{');
                i += 2;
            } else if rest.starts_with("}}") {
                self.literal.push('}');
                i += 2;
            } else if rest.starts_with('{') {
                i = self.placeholder(i)?;
            } else if rest.starts_with('}') {
                return Err(self.error(
                    i,
                    "unbalanced `}`",
                    Some("write `}}` for a literal brace".into()),
                ));
            } else if rest.starts_with("%%") {
                self.literal.push('%');
                i += 2;
            } else if rest.starts_with('%') {
                i = self.strftime(i)?;
            } else if rest.starts_with('/') {
                self.end_segment(i)?;
                i += 1;
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
        self.end_segment(self.src.len())
    }

    fn clock(&self, text: &str, at: usize, name: &str, is_time: bool) -> Result<Clock> {
        if !is_time {
            return Err(self.error(
                at,
                format!("`{name}` is not a time variable and reads no clock"),
                Some("only time variables take `@sync`, `@record` or `@file`".into()),
            ));
        }
        text.parse().map_err(|_| {
            self.error(
                at,
                format!("unknown clock `{text}`"),
                Some("use `@sync`, `@record` or `@file`".into()),
            )
        })
    }

    fn with_clock(var: Variable, clock: Option<Clock>) -> Variable {
        match (var, clock) {
            (Variable::Time { field, .. }, Some(c)) => Variable::Time {
                field,
                clock: Some(c),
            },
            (var, _) => var,
        }
    }

    fn check_record_clock(&self, var: &Variable, at: usize, written: &str) -> Result<()> {
        if let Variable::Time { clock, .. } = var
            && clock.unwrap_or(self.options.clock) == Clock::Record
            && self.options.time_column.is_none()
        {
            return Err(self.error(
                at,
                format!("`{written}` reads the record clock, but no time column is named"),
                Some("name the column that holds each record's time (time_column)".into()),
            ));
        }
        Ok(())
    }

    /// Parse `${NAME}` or `${NAME@clock}` at `start`; returns the index after the brace.
    fn path_variable(&mut self, start: usize) -> Result<usize> {
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
        let inner = body.get(..len).unwrap_or("");
        let (name, clock_text) = match inner.split_once('@') {
            Some((n, c)) => (n, Some(c)),
            None => (inner, None),
        };
        if name.is_empty() {
            return Err(self.error(start, "empty variable `${}`", Some(self.known())));
        }
        let var = match path_variable(name) {
            Some(var) => var,
            None if self.host_names().any(|h| h == name) => Variable::Host(name.to_owned()),
            None => {
                return Err(self.error(
                    start,
                    format!("unknown variable `${{{name}}}`"),
                    Some(self.suggest(name)),
                ));
            }
        };
        let clock = match clock_text {
            Some(text) => Some(self.clock(
                text,
                body_start + name.len() + 1,
                name,
                matches!(var, Variable::Time { .. }),
            )?),
            None => None,
        };
        let var = Self::with_clock(var, clock);
        self.check_record_clock(&var, start, &format!("${{{inner}}}"))?;
        self.push_var(var, name, true);
        Ok(body_start + len + 1)
    }

    /// Parse `{name}`, `{name:spec}`, `{name@clock}` or `{name:spec@clock}` at `start`.
    fn placeholder(&mut self, start: usize) -> Result<usize> {
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
        let whole = body.get(..len).unwrap_or("");
        let (inner, clock_text) = match whole.rsplit_once('@') {
            Some((i, c)) => (i, Some(c)),
            None => (whole, None),
        };
        let (name, spec) = match inner.split_once(':') {
            Some((n, s)) => (n, Some(s)),
            None => (inner, None),
        };
        let spec_pos = body_start + name.len() + 1;
        let time = |field| Variable::Time { field, clock: None };
        let var = match (name, spec) {
            ("date", None) => time(TimeField::Format("%Y_%m_%d".into())),
            ("date", Some(pattern)) => time(TimeField::Format(
                java_date_pattern(pattern)
                    .map_err(|(offset, msg)| self.error(spec_pos + offset, msg, None))?,
            )),
            ("timestamp", None | Some("millis")) => time(TimeField::EpochMillis),
            ("timestamp", Some("micros")) => time(TimeField::EpochMicros),
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
                    Some(self.suggest(name)),
                ));
            }
        };
        let clock = match clock_text {
            Some(text) => Some(self.clock(
                text,
                body_start + inner.len() + 1,
                name,
                matches!(var, Variable::Time { .. }),
            )?),
            None => None,
        };
        let var = Self::with_clock(var, clock);
        self.check_record_clock(&var, start, &format!("{{{whole}}}"))?;
        let name = match &var {
            Variable::Time {
                field: TimeField::EpochMicros,
                ..
            } => "timestamp_micros",
            _ => name,
        };
        self.push_var(var, name, false);
        Ok(body_start + len + 1)
    }

    /// Parse an inline strftime field (`%Y`, `%-d`, `%3f`, `%:z`) at `start`.
    fn strftime(&mut self, start: usize) -> Result<usize> {
        let rest = self.src.get(start + 1..).unwrap_or("");
        let mut len = 0;
        let mut chars = rest.char_indices().peekable();
        if let Some(&(_, c)) = chars.peek()
            && matches!(c, '-' | '_' | '0' | '^' | '#')
        {
            chars.next();
            len += 1;
        }
        while let Some(&(_, c)) = chars.peek() {
            if c.is_ascii_digit() || c == '.' || c == ':' {
                chars.next();
                len += 1;
            } else {
                break;
            }
        }
        match chars.next() {
            Some((_, c)) if c.is_ascii_alphabetic() => len += 1,
            _ => {
                return Err(self.error(
                    start,
                    "`%` starts a time field but no field follows",
                    Some("write `%%` for a literal `%`, or a field such as `%Y`".into()),
                ));
            }
        }
        let spec = self.src.get(start..start + 1 + len).unwrap_or("%");
        let valid = StrftimeItems::new(spec)
            .parse()
            .is_ok_and(|items| !items.iter().any(|i| matches!(i, Item::Error)));
        if !valid {
            return Err(self.error(
                start,
                format!("unknown time field `{spec}`"),
                Some("use a strftime field such as %Y %m %d %H %M %S %F %j".into()),
            ));
        }
        let var = Variable::Time {
            field: TimeField::Format(spec.to_owned()),
            clock: None,
        };
        self.check_record_clock(&var, start, spec)?;
        self.push_var(var, spec, false);
        Ok(start + 1 + len)
    }

    fn known(&self) -> String {
        let mut names: Vec<String> = PATH_VARIABLES.iter().map(|n| format!("${{{n}}}")).collect();
        names.extend(self.host_names().map(|n| format!("${{{n}}}")));
        format!("known variables: {}", names.join(" "))
    }

    /// Suggest the closest known variable or placeholder for a misspelt name.
    fn suggest(&self, name: &str) -> String {
        let candidates = PATH_VARIABLES
            .iter()
            .map(|n| format!("${{{n}}}"))
            .chain(self.host_names().map(|n| format!("${{{n}}}")))
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
                self.known(),
                PLACEHOLDERS
                    .iter()
                    .map(|p| format!("{{{p}}}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        }
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
