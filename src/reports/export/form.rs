//! What docs/audit-format.md promises of the values on every export line (§1 and the member
//! tables of §3 and §4), checked on the parsed JSON before the verifier trusts a value: exactly
//! the members the format lists, each of its JSON type, every number a whole number below 2^53
//! in size, every time in the one spelling, and the line byte for byte the RFC 8785 form of what
//! it holds. docs/verify_export.py checks the same, in the same order, with the same words.

use serde_json::{Map, Value};

mod scan;

pub use scan::canonical_entry;

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
    let mut rest = line;
    while let Some(at) = rest
        .iter()
        .position(|b| matches!(b, b'"' | b'[' | b'{' | b']' | b'}'))
    {
        let byte = rest[at];
        rest = &rest[at + 1..];
        match byte {
            b'"' => rest = after_string(rest),
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH as isize {
                    return false;
                }
            }
            _ => depth -= 1,
        }
    }
    true
}

/// What follows the string whose opening `"` came just before `rest` (nothing when it never
/// closes). Most of a line is inside strings, so they are skipped with `memchr`.
fn after_string(mut rest: &[u8]) -> &[u8] {
    while let Some(at) = memchr::memchr2(b'"', b'\\', rest) {
        if rest[at] == b'"' {
            return &rest[at + 1..];
        }
        // A backslash escapes the byte after it, whatever it is.
        rest = rest.get(at + 2..).unwrap_or_default();
    }
    &[]
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

/// The members of an entry that place it in its chain.
#[derive(Debug, PartialEq, Eq)]
pub struct Link<'v> {
    pub v: u32,
    pub chain: &'v str,
    pub seq: u64,
    pub prev_hash: &'v str,
}

impl<'v> Link<'v> {
    /// The members section 5 of docs/audit-format.md needs before the hash: `v`, `chain`,
    /// `seq`, `time`, `prev_hash` and an `event` with a `type`, of their types.
    pub fn of(entry: &'v Value) -> Option<Link<'v>> {
        let text = |name: &str| entry.get(name).and_then(Value::as_str);
        entry.get("event")?.get("type")?.as_str()?;
        text("time")?;
        Some(Link {
            v: u32::try_from(entry.get("v")?.as_u64()?).ok()?,
            chain: text("chain")?,
            seq: entry.get("seq")?.as_u64()?,
            prev_hash: text("prev_hash")?,
        })
    }
}

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
    // Names the path only once something is wrong: building it for every member of every
    // line was a tenth of a verification's time.
    if all_small_integers(value) {
        return Ok(());
    }
    integer_at(value, path)
}

fn small(n: &serde_json::Number) -> bool {
    n.as_i64()
        .map(|i| i.unsigned_abs() < LIMIT)
        .or_else(|| n.as_u64().map(|u| u < LIMIT))
        .unwrap_or(false)
}

fn all_small_integers(value: &Value) -> bool {
    match value {
        Value::Number(n) => small(n),
        Value::Array(items) => items.iter().all(all_small_integers),
        Value::Object(members) => members.values().all(all_small_integers),
        _ => true,
    }
}

/// [`integers`] for a value known to hold a number that is not one: the first, by path.
fn integer_at(value: &Value, path: &str) -> Result<(), Broken> {
    match value {
        Value::Number(n) => {
            if small(n) {
                Ok(())
            } else {
                Err(Broken::NotAnInteger(path.to_owned()))
            }
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, item)| integer_at(item, &format!("{path}[{i}]"))),
        Value::Object(members) => by_name(members).into_iter().try_for_each(|(k, v)| {
            let inner = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            integer_at(v, &inner)
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
    let mut again = Vec::with_capacity(line.len());
    let same = if write_canonical(value, &mut again) {
        again == line
    } else {
        serde_jcs::to_vec(value).is_ok_and(|again| again == line)
    };
    if same {
        Ok(())
    } else {
        Err(Broken::NotCanonical)
    }
}

/// Writes the RFC 8785 form of `value` for the values export lines hold: members named in
/// ASCII (so sorting by UTF-16 code units is sorting by bytes) and numbers that are whole and
/// below 2^53 (which RFC 8785 writes as their digits). Strings are escaped as RFC 8785 §3.2.2.2
/// asks, which is how serde_json escapes them. `false`, with `out` unfinished, for any other
/// value, which the general serialiser then writes; re-serialising through it was most of a
/// verification's time.
fn write_canonical(value: &Value, out: &mut Vec<u8>) -> bool {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) if small(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::Number(_) => return false,
        Value::String(text) => write_string(text, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                if !write_canonical(item, out) {
                    return false;
                }
            }
            out.push(b']');
        }
        Value::Object(members) => {
            if !members.keys().all(|k| k.is_ascii()) {
                return false;
            }
            out.push(b'{');
            for (i, (name, member)) in by_name(members).into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(name, out);
                out.push(b':');
                if !write_canonical(member, out) {
                    return false;
                }
            }
            out.push(b'}');
        }
    }
    true
}

fn write_string(text: &str, out: &mut Vec<u8>) {
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Value {
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The nesting rule read byte by byte, as docs/audit-format.md states it.
    fn nests_within_limit_bytewise(line: &[u8]) -> bool {
        let (mut depth, mut in_string, mut escaped) = (0isize, false, false);
        for &byte in line {
            match (in_string, escaped, byte) {
                (true, true, _) => escaped = false,
                (true, false, b'\\') => escaped = true,
                (true, false, b'"') => in_string = false,
                (true, _, _) => {}
                (false, _, b'"') => in_string = true,
                (false, _, b'[' | b'{') => {
                    depth += 1;
                    if depth > MAX_DEPTH as isize {
                        return false;
                    }
                }
                (false, _, b']' | b'}') => depth -= 1,
                _ => {}
            }
        }
        true
    }

    proptest::proptest! {
        #[test]
        fn nesting_is_read_as_byte_by_byte(line in "[\\[\\]{}\"\\\\a]{0,80}") {
            proptest::prop_assert_eq!(
                nests_within_limit(line.as_bytes()),
                nests_within_limit_bytewise(line.as_bytes())
            );
        }

        #[test]
        fn the_fast_canonical_form_is_serde_jcs_form(value in json_value()) {
            let mut fast = Vec::new();
            if write_canonical(&value, &mut fast) {
                let general = serde_jcs::to_vec(&value).unwrap_or_else(|e| panic!("{e}"));
                proptest::prop_assert_eq!(String::from_utf8_lossy(&fast), String::from_utf8_lossy(&general));
            }
        }
    }

    /// Values like export lines, with names and strings drawn from everything JSON can carry.
    pub(super) fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-(1i64 << 53) + 1..(1i64 << 53)).prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "\\PC*|[\\x00-\\x7f]*".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map("[ -~]{0,8}|\\PC{0,4}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    #[test]
    fn the_canonical_check_accepts_only_the_one_spelling() {
        let spelled = r#"{"a":[1,-2,"x\u001f\n\"\\é"],"b":{"B":null,"a":true}}"#;
        let value = parse(spelled);
        assert_eq!(canonical(&value, spelled.as_bytes()), Ok(()));
        for other in [
            spelled.replace("u001f", "u001F"),
            spelled.replace('é', "\\u00e9"),
            spelled.replace("[1,", "[1.0,"),
            spelled.replace(
                "\"b\":{\"B\":null,\"a\":true}",
                "\"b\":{\"a\":true,\"B\":null}",
            ),
            spelled.replace(",-2", ", -2"),
        ] {
            assert_ne!(other, spelled);
            assert!(
                canonical(&parse(&other), other.as_bytes()).is_err(),
                "{other}"
            );
        }
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
