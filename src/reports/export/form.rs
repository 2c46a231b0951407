//! What docs/audit-format.md promises of the values on every export line (§1 and the member
//! tables of §3 and §4), checked on the parsed JSON before the verifier trusts a value: exactly
//! the members the format lists, each of its JSON type, every number a whole number below 2^53
//! in size, every time in the one spelling, and the line byte for byte the RFC 8785 form of what
//! it holds. docs/verify_export.py checks the same, in the same order, with the same words.

use serde_json::{Map, Value};

/// 2^53: beyond it an IEEE 754 double, which RFC 8785 writes every number as, loses integers.
const LIMIT: u64 = 1 << 53;

/// How deep arrays and objects may nest on a line. The deepest line the service writes, a
/// policy change listing protected accounts, nests 6 levels; parsers stop at different depths
/// (serde_json at 128, Python's recursion far later), so a deeper line is refused before any
/// parser sees it, and every verifier gives it the same verdict.
pub const MAX_DEPTH: usize = 32;

/// Whether `line` never has more than [`MAX_DEPTH`] arrays and objects open at once: each `[`
/// or `{` outside a string opens one, each `]` or `}` outside a string closes one, and a
/// string runs from a `"` to the next `"` not escaped by a `\`.
pub fn nests_within_limit(line: &[u8]) -> bool {
    let mut depth = 0isize;
    let mut in_string = false;
    let mut escaped = false;
    for &byte in line {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH as isize {
                    return false;
                }
            }
            b']' | b'}' => depth -= 1,
            _ => {}
        }
    }
    true
}

/// The JSON type of a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Text,
    /// A string in the form `2026-11-27T09:40:05.123456Z`.
    Time,
    /// A whole number from 0 to 2^53 − 1: seqs, counts, versions.
    Count,
    /// A list of counts.
    Counts,
    Object,
}

impl Type {
    fn holds(self, value: &Value) -> bool {
        match (self, value) {
            (Type::Text, Value::String(_)) | (Type::Object, Value::Object(_)) => true,
            (Type::Time, Value::String(text)) => crate::time::is_canonical_text(text),
            (Type::Count, Value::Number(n)) => n.as_u64().is_some_and(|n| n < LIMIT),
            (Type::Counts, Value::Array(items)) => items.iter().all(|v| Type::Count.holds(v)),
            _ => false,
        }
    }

    fn described(self) -> &'static str {
        match self {
            Type::Text => "a string",
            Type::Time => "a time of the form 2026-11-27T09:40:05.123456Z",
            Type::Count => "a whole number from 0 to 2^53 - 1",
            Type::Counts => "a list of whole numbers from 0 to 2^53 - 1",
            Type::Object => "an object",
        }
    }
}

/// Whether a member may be `null`, or left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Presence {
    Required,
    Nullable,
    /// May be absent (a signature the verifier then reports as missing).
    Optional,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Member {
    name: &'static str,
    ty: Type,
    presence: Presence,
}

const fn required(name: &'static str, ty: Type) -> Member {
    Member {
        name,
        ty,
        presence: Presence::Required,
    }
}

const fn nullable(name: &'static str, ty: Type) -> Member {
    Member {
        name,
        ty,
        presence: Presence::Nullable,
    }
}

const fn optional(name: &'static str, ty: Type) -> Member {
    Member {
        name,
        ty,
        presence: Presence::Optional,
    }
}

/// The members of each line, in the order docs/audit-format.md lists (and checks) them.
pub const HEADER: &[Member] = &[
    required("type", Type::Text),
    required("format", Type::Text),
    required("version", Type::Count),
    required("chain", Type::Text),
    required("customer", Type::Text),
    nullable("from", Type::Time),
    nullable("to", Type::Time),
    required("exported_at", Type::Time),
    nullable("first_seq", Type::Count),
    nullable("last_seq", Type::Count),
    nullable("prev_hash", Type::Text),
    required("key_id", Type::Text),
    required("checkpoint_seqs", Type::Counts),
    optional("signature", Type::Text),
];
pub const ENTRY: &[Member] = &[
    required("v", Type::Count),
    required("chain", Type::Text),
    required("seq", Type::Count),
    required("time", Type::Time),
    required("prev_hash", Type::Text),
    required("actor", Type::Object),
    required("event", Type::Object),
];
pub const CHECKPOINT: &[Member] = &[
    required("type", Type::Text),
    required("chain", Type::Text),
    required("seq", Type::Count),
    required("hash", Type::Text),
    required("time", Type::Time),
    required("key_id", Type::Text),
    required("signature", Type::Text),
];
pub const SEAL: &[Member] = &[
    required("type", Type::Text),
    required("chain", Type::Text),
    required("entries", Type::Count),
    nullable("first_seq", Type::Count),
    nullable("last_seq", Type::Count),
    nullable("last_hash", Type::Text),
    required("header_sha256", Type::Text),
    required("time", Type::Time),
    required("key_id", Type::Text),
    optional("signature", Type::Text),
];

/// The first promise a line breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Broken {
    NotAnObject,
    Missing(&'static str),
    Unknown(String),
    WrongType(&'static Member),
    /// A number inside an entry's `actor` or `event`, at this path.
    NotAnInteger(String),
    NotCanonical,
}

impl Broken {
    /// The reason, in words, for the line `what` ("header", "entry", …).
    pub fn describe(&self, what: &str) -> String {
        match self {
            Broken::NotAnObject => format!("the {what} is not a JSON object"),
            Broken::Missing(name) => format!("the {what} has no `{name}`"),
            Broken::Unknown(name) => {
                format!("the {what} has a member `{name}` the format does not define")
            }
            Broken::WrongType(m) => {
                let null = if m.presence == Presence::Nullable {
                    " or null"
                } else {
                    ""
                };
                format!(
                    "the {what}'s `{}` is not {}{null}",
                    m.name,
                    m.ty.described()
                )
            }
            Broken::NotAnInteger(path) => format!(
                "the {what}'s `{path}` is not a whole number between -(2^53 - 1) and 2^53 - 1"
            ),
            Broken::NotCanonical => {
                format!("the {what} is not in its canonical form (RFC 8785): it was edited")
            }
        }
    }
}

/// Members present, none unknown, each of its type: in that order, the first in each by the
/// table's order (unknown ones by name).
pub fn members(value: &Value, table: &'static [Member]) -> Result<(), Broken> {
    let Value::Object(object) = value else {
        return Err(Broken::NotAnObject);
    };
    if let Some(m) = table
        .iter()
        .find(|m| m.presence != Presence::Optional && !object.contains_key(m.name))
    {
        return Err(Broken::Missing(m.name));
    }
    let mut unknown: Vec<&String> = object
        .keys()
        .filter(|k| !table.iter().any(|m| m.name == k.as_str()))
        .collect();
    unknown.sort();
    if let Some(name) = unknown.first() {
        return Err(Broken::Unknown((*name).clone()));
    }
    for m in table {
        let ok = match object.get(m.name) {
            None => true,
            Some(Value::Null) => m.presence == Presence::Nullable,
            Some(value) => m.ty.holds(value),
        };
        if !ok {
            return Err(Broken::WrongType(m));
        }
    }
    Ok(())
}

/// Every number anywhere in `value` is a whole number of size below 2^53; the first that is
/// not, depth first with members by name, is named by its path.
pub fn integers(value: &Value, path: &str) -> Result<(), Broken> {
    match value {
        Value::Number(n) => {
            let small = n
                .as_i64()
                .map(|i| i.unsigned_abs() < LIMIT)
                .or_else(|| n.as_u64().map(|u| u < LIMIT))
                .unwrap_or(false);
            if small {
                Ok(())
            } else {
                Err(Broken::NotAnInteger(path.to_owned()))
            }
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, item)| integers(item, &format!("{path}[{i}]"))),
        Value::Object(members) => by_name(members).into_iter().try_for_each(|(k, v)| {
            let inner = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            integers(v, &inner)
        }),
        _ => Ok(()),
    }
}

fn by_name(members: &Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut sorted: Vec<_> = members.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    sorted
}

/// The line is exactly the RFC 8785 form of the value parsed from it.
pub fn canonical(value: &Value, line: &[u8]) -> Result<(), Broken> {
    match serde_jcs::to_vec(value) {
        Ok(again) if again == line => Ok(()),
        _ => Err(Broken::NotCanonical),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Value {
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn integers_are_whole_and_below_two_to_the_53() {
        for fine in [
            "0",
            "-5",
            "9007199254740991",
            "-9007199254740991",
            r#"{"a":[1,{"b":2}]}"#,
        ] {
            assert_eq!(integers(&parse(fine), ""), Ok(()), "{fine}");
        }
        for (bad, path) in [
            ("9007199254740992", ""),
            ("-9007199254740992", ""),
            ("18446744073709551616", ""),
            (r#"{"a":[1,{"b":1.0}]}"#, "a[1].b"),
            (r#"{"b":1e3,"a":1.5}"#, "a"),
        ] {
            assert_eq!(
                integers(&parse(bad), ""),
                Err(Broken::NotAnInteger(path.to_owned())),
                "{bad}"
            );
        }
    }

    #[test]
    fn nesting_is_counted_outside_strings_up_to_the_limit() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(nests_within_limit(deep(MAX_DEPTH).as_bytes()));
        assert!(!nests_within_limit(deep(MAX_DEPTH + 1).as_bytes()));
        assert!(!nests_within_limit("[".repeat(100_000).as_bytes()));
        let quoted = format!(r#"{{"a":"{}\\\"{}"}}"#, "[".repeat(40), "{".repeat(40));
        assert!(nests_within_limit(quoted.as_bytes()), "{quoted}");
        let after_escaped_backslash = format!(r#"{{"a":"\\\\",{}}}"#, deep(MAX_DEPTH));
        assert!(!nests_within_limit(after_escaped_backslash.as_bytes()));
        let unterminated = format!(r#"{{"a":"{}"#, "[".repeat(40));
        assert!(nests_within_limit(unterminated.as_bytes()));
    }

    #[test]
    fn members_missing_unknown_and_mistyped_are_named() {
        let line = r#"{"chain":"c","hash":"h","key_id":"k","seq":1,"signature":"s","time":"2026-11-27T09:40:05.123456Z","type":"checkpoint"}"#;
        assert_eq!(members(&parse(line), CHECKPOINT), Ok(()));
        assert_eq!(canonical(&parse(line), line.as_bytes()), Ok(()));
        let missing = line.replace(r#""hash":"h","#, "");
        assert_eq!(
            members(&parse(&missing), CHECKPOINT),
            Err(Broken::Missing("hash"))
        );
        let unknown = line.replace(r#""hash":"h","#, r#""hash":"h","zz":1,"extra":2,"#);
        assert_eq!(
            members(&parse(&unknown), CHECKPOINT),
            Err(Broken::Unknown("extra".into()))
        );
        let seconds = line.replace(".123456Z", "Z");
        assert_eq!(
            members(&parse(&seconds), CHECKPOINT)
                .map_err(|b| b.describe("checkpoint"))
                .unwrap_err(),
            "the checkpoint's `time` is not a time of the form 2026-11-27T09:40:05.123456Z"
        );
        let reordered = line.replace(r#""chain":"c","hash":"h""#, r#""hash":"h","chain":"c""#);
        assert_eq!(
            canonical(&parse(&reordered), reordered.as_bytes()),
            Err(Broken::NotCanonical)
        );
    }
}
