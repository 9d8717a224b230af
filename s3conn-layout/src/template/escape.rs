//! What may appear in a key: escaping of variable values, Hive-style and for S3.

use crate::error::{Error, Result};

/// What to do with characters S3 advises against in object keys
/// (`\ { ^ } % ` ] " > [ ~ < # |`) when a variable's value contains them.
///
/// Control characters are always refused. A `/` inside a value is always escaped (`%2F`), so
/// that a value never adds a folder, and so is `%` (`%25`), the escape character itself, so
/// that keys can always be read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CharacterPolicy {
    /// Percent-encode them (`#` becomes `%23`). The default.
    #[default]
    Escape,
    /// Refuse the key, naming the variable and the character.
    Refuse,
    /// Keep them as they are.
    Allow,
}

impl std::str::FromStr for CharacterPolicy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "escape" => Ok(Self::Escape),
            "refuse" => Ok(Self::Refuse),
            "allow" => Ok(Self::Allow),
            other => Err(Error::Unsuitable {
                template: String::new(),
                reason: format!("character policy `{other}`: use escape, refuse or allow"),
            }),
        }
    }
}

/// Characters S3's key naming guidelines advise against.
pub(crate) fn s3_advises_against(c: char) -> bool {
    matches!(
        c,
        '\\' | '{' | '^' | '}' | '%' | '`' | ']' | '"' | '>' | '[' | '~' | '<' | '#' | '|'
    )
}

/// Characters Hive escapes in partition values (as Spark, Trino and Athena unescape them).
fn hive_escapes(c: char) -> bool {
    c.is_ascii_control()
        || matches!(
            c,
            '"' | '#'
                | '%'
                | '\''
                | '*'
                | '/'
                | ':'
                | '='
                | '?'
                | '\\'
                | '\x7f'
                | '{'
                | '['
                | ']'
                | '^'
        )
}

fn push_escaped(out: &mut String, c: char) {
    let mut buf = [0u8; 4];
    for b in c.encode_utf8(&mut buf).bytes() {
        out.push_str(&format!("%{b:02X}"));
    }
}

/// Escape a variable's value for a key. `hive`: the value is a Hive partition value.
pub(crate) fn escape_value(
    value: &str,
    policy: CharacterPolicy,
    hive: bool,
    variable: &str,
    template: &str,
) -> Result<String> {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if c.is_control() {
            return Err(Error::InvalidKey {
                template: template.to_owned(),
                key: value.to_owned(),
                reason: format!("the value of `{variable}` contains the control character {c:?}"),
            });
        }
        if c == '/' || c == '%' || (hive && hive_escapes(c)) {
            push_escaped(&mut out, c);
        } else if s3_advises_against(c) {
            match policy {
                CharacterPolicy::Escape => push_escaped(&mut out, c),
                CharacterPolicy::Allow => out.push(c),
                CharacterPolicy::Refuse => {
                    return Err(Error::InvalidKey {
                        template: template.to_owned(),
                        key: value.to_owned(),
                        reason: format!(
                            "the value of `{variable}` contains {c:?}, which S3 advises against in keys; escape it or allow it with the character policy"
                        ),
                    });
                }
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

/// Undo [`escape_value`]: decode `%XX` sequences (invalid sequences are kept as they are).
pub(crate) fn unescape(value: &str) -> String {
    if !value.contains('%') {
        return value.to_owned();
    }
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = (bytes.get(i) == Some(&b'%'))
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match decoded {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.extend(bytes.get(i));
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_escape_and_come_back() {
        let v = "a/b#c=d é";
        let plain = escape_value(v, CharacterPolicy::Escape, false, "x", "t").unwrap();
        assert_eq!(plain, "a%2Fb%23c=d é");
        assert_eq!(unescape(&plain), v);
        let hive = escape_value(v, CharacterPolicy::Escape, true, "x", "t").unwrap();
        assert_eq!(hive, "a%2Fb%23c%3Dd é");
        assert_eq!(unescape(&hive), v);
        assert_eq!(
            escape_value("a#b", CharacterPolicy::Allow, false, "x", "t").unwrap(),
            "a#b"
        );
        let percent = escape_value("100%41", CharacterPolicy::Allow, false, "x", "t").unwrap();
        assert_eq!(
            percent, "100%2541",
            "the escape character is always escaped"
        );
        assert_eq!(unescape(&percent), "100%41");
        let err = escape_value("a#b", CharacterPolicy::Refuse, false, "x", "t").unwrap_err();
        assert!(err.to_string().contains("advises against"), "{err}");
        let err = escape_value("a\nb", CharacterPolicy::Allow, false, "x", "t").unwrap_err();
        assert!(err.to_string().contains("control"), "{err}");
        assert_eq!(unescape("100%"), "100%");
        assert_eq!(unescape("%zz%41"), "%zzA");
    }
}
