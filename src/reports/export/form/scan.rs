//! One pass over an entry's bytes that vouches for everything the parsed checks would find of an
//! entry written by the service: JSON that is already its own RFC 8785 form, exactly the
//! members of [`ENTRY`](super::ENTRY) of their types, and every number whole and below 2^53.
//! Parsing each entry into a tree, checking it and writing it again was nearly all of a
//! verification's time; the scan reads each byte once and allocates nothing.
//!
//! The scan only ever says yes for less: it gives up (`None`) on anything it does not know to
//! be canonical — a member name with an escape or outside ASCII, a key out of order, a number
//! in any other spelling — and the verifier then runs the parsed checks, which find the fault
//! and word it. So a verdict never depends on which of the two read the line.

use super::{LIMIT, Link};

/// The entry's link members when `bytes` are UTF-8 and an entry in its canonical form that
/// keeps every promise of the format, nesting at most `max_depth` arrays and objects; `None`
/// when the parsed checks must decide.
pub fn canonical_entry(bytes: &[u8], max_depth: usize) -> Option<Link<'_>> {
    let mut scan = Scan {
        bytes,
        at: 0,
        max_depth,
        non_ascii: false,
    };
    let mut link = Members::default();
    scan.object(1, |name, value| link.take(name, value))?;
    // Outside strings only ASCII was taken; inside, other bytes are UTF-8 or nothing is.
    if scan.at != bytes.len() || (scan.non_ascii && std::str::from_utf8(bytes).is_err()) {
        return None;
    }
    link.complete()
}

/// What the scan found a value to be.
#[derive(Clone, Copy)]
enum Scanned<'a> {
    Null,
    Bool,
    /// A whole number below 2^53 in size; its value when it is not negative.
    Integer(Option<u64>),
    /// A string with no escape in it, as it stands between its quotes.
    Plain(&'a [u8]),
    Escaped,
    Array,
    /// An object, and whether it has a member `type` that is a string.
    Object {
        typed: bool,
    },
}

/// The entry's members as they are met; a member met twice cannot happen, as names must
/// ascend.
#[derive(Default)]
struct Members<'a> {
    actor: bool,
    event: bool,
    chain: Option<&'a [u8]>,
    prev_hash: Option<&'a [u8]>,
    time: bool,
    seq: Option<u64>,
    v: Option<u32>,
}

impl<'a> Members<'a> {
    /// Takes one member; `None` for a member the format does not define or of another type.
    fn take(&mut self, name: &[u8], value: Scanned<'a>) -> Option<()> {
        match (name, value) {
            (b"actor", Scanned::Object { .. }) => self.actor = true,
            (b"event", Scanned::Object { typed: true }) => self.event = true,
            (b"chain", Scanned::Plain(text)) => self.chain = Some(text),
            (b"prev_hash", Scanned::Plain(text)) => self.prev_hash = Some(text),
            (b"time", Scanned::Plain(text))
                if std::str::from_utf8(text).is_ok_and(crate::time::is_canonical_text) =>
            {
                self.time = true;
            }
            (b"seq", Scanned::Integer(Some(seq))) => self.seq = Some(seq),
            (b"v", Scanned::Integer(Some(v))) => self.v = Some(u32::try_from(v).ok()?),
            _ => return None,
        }
        Some(())
    }

    fn complete(self) -> Option<Link<'a>> {
        (self.actor && self.event && self.time).then_some(())?;
        Some(Link {
            v: self.v?,
            chain: std::str::from_utf8(self.chain?).ok()?,
            seq: self.seq?,
            prev_hash: std::str::from_utf8(self.prev_hash?).ok()?,
        })
    }
}

/// Whether `later` comes strictly after `earlier` in byte order. Member names are a few bytes
/// long, and a call into `memcmp` for each was a tenth of the scan.
fn ascends(earlier: &[u8], later: &[u8]) -> bool {
    match earlier.iter().zip(later).find(|(a, b)| a != b) {
        Some((a, b)) => a < b,
        None => earlier.len() < later.len(),
    }
}

/// Where in `word` (eight bytes, the first in the low bits) the first byte is that is not
/// [`PLAIN`], if any: found at once rather than a byte at a time, whose branch at the end of
/// every string was most of the scan.
fn first_special(word: u64) -> Option<usize> {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGH: u64 = ONES << 7;
    // The high bit of each byte below `n` (n at most 128). A borrow can also mark bytes after
    // the first such byte, never before it, so the lowest mark is exact.
    let below = |word: u64, n: u8| word.wrapping_sub(ONES * u64::from(n)) & !word & HIGH;
    let equal = |n: u8| below(word ^ (ONES * u64::from(n)), 1);
    let marks = (word & HIGH) | below(word, 0x20) | equal(b'"') | equal(b'\\');
    (marks != 0).then(|| marks.trailing_zeros() as usize / 8)
}

/// The bytes a string holds as themselves with nothing more to check: printable ASCII other
/// than `"` and `\\`.
const PLAIN: [bool; 256] = {
    let mut plain = [false; 256];
    let mut byte = 0x20;
    while byte < 0x80 {
        plain[byte] = byte != b'"' as usize && byte != b'\\' as usize;
        byte += 1;
    }
    plain
};

struct Scan<'a> {
    bytes: &'a [u8],
    at: usize,
    max_depth: usize,
    /// Whether a string held a byte outside ASCII, so the whole must be checked as UTF-8.
    non_ascii: bool,
}

impl<'a> Scan<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        let here = self.peek() == Some(byte);
        if here {
            self.at += 1;
        }
        here
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.at + word.len();
        (self.bytes.get(self.at..end)? == word).then(|| self.at = end)
    }

    fn value(&mut self, depth: usize) -> Option<Scanned<'a>> {
        match self.peek()? {
            b'{' => {
                let mut typed = false;
                self.object(depth + 1, |name, value| {
                    typed |=
                        name == b"type" && matches!(value, Scanned::Plain(_) | Scanned::Escaped);
                    Some(())
                })?;
                Some(Scanned::Object { typed })
            }
            b'[' => self.array(depth + 1).map(|()| Scanned::Array),
            b'"' => self.string(),
            b'n' => self.literal(b"null").map(|()| Scanned::Null),
            b't' => self.literal(b"true").map(|()| Scanned::Bool),
            b'f' => self.literal(b"false").map(|()| Scanned::Bool),
            _ => self.integer().map(Scanned::Integer),
        }
    }

    /// An object whose member names are plain ASCII in strictly ascending order (byte order is
    /// then RFC 8785's order of UTF-16 code units), each member handed to `member`.
    fn object(
        &mut self,
        depth: usize,
        mut member: impl FnMut(&[u8], Scanned<'a>) -> Option<()>,
    ) -> Option<()> {
        if depth > self.max_depth || !self.eat(b'{') {
            return None;
        }
        if self.eat(b'}') {
            return Some(());
        }
        let mut previous: Option<&[u8]> = None;
        loop {
            let Scanned::Plain(name) = self.string()? else {
                return None;
            };
            if !name.is_ascii() || previous.is_some_and(|p| !ascends(p, name)) || !self.eat(b':') {
                return None;
            }
            previous = Some(name);
            let value = self.value(depth)?;
            member(name, value)?;
            if self.eat(b'}') {
                return Some(());
            }
            if !self.eat(b',') {
                return None;
            }
        }
    }

    fn array(&mut self, depth: usize) -> Option<()> {
        if depth > self.max_depth || !self.eat(b'[') {
            return None;
        }
        if self.eat(b']') {
            return Some(());
        }
        loop {
            self.value(depth)?;
            if self.eat(b']') {
                return Some(());
            }
            if !self.eat(b',') {
                return None;
            }
        }
    }

    /// A string escaped exactly as RFC 8785 §3.2.2.2 escapes: `\"`, `\\`, the five short
    /// escapes for their control characters, `\u00xx` in lowercase for the other control
    /// characters, and every other character as itself.
    fn string(&mut self) -> Option<Scanned<'a>> {
        if !self.eat(b'"') {
            return None;
        }
        let start = self.at;
        let mut escaped = false;
        loop {
            self.skip_plain();
            match self.peek()? {
                b'"' => break,
                b'\\' => {
                    self.at += 1;
                    escaped = true;
                    self.escape()?;
                }
                // A control character may only appear escaped.
                byte if byte < 0x20 => return None,
                _ => {
                    self.non_ascii = true;
                    self.at += 1;
                }
            }
        }
        let text = &self.bytes[start..self.at];
        self.at += 1;
        Some(if escaped {
            Scanned::Escaped
        } else {
            Scanned::Plain(text)
        })
    }

    /// Moves past printable ASCII other than `"` and `\\`, eight bytes at a time while it lasts:
    /// most of an entry is such text, and a byte at a time was most of the scan.
    fn skip_plain(&mut self) {
        while let Some(eight) = self.bytes.get(self.at..self.at + 8) {
            let mut word = [0; 8];
            word.copy_from_slice(eight);
            match first_special(u64::from_le_bytes(word)) {
                Some(at) => {
                    self.at += at;
                    return;
                }
                None => self.at += 8,
            }
        }
        while self.peek().is_some_and(|b| PLAIN[usize::from(b)]) {
            self.at += 1;
        }
    }

    /// The rest of an escape whose `\` was just read.
    fn escape(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' | b'\\' | b'b' | b't' | b'n' | b'f' | b'r' => self.at += 1,
            b'u' => {
                let hex = self.bytes.get(self.at + 1..self.at + 5)?;
                let lower_hex = |b: &u8| matches!(b, b'0'..=b'9' | b'a'..=b'f');
                if &hex[..2] != b"00" || !hex[2..].iter().all(lower_hex) {
                    return None;
                }
                // Only the control characters without a short escape are written this way.
                if hex[2] > b'1' || matches!(&hex[2..], b"08" | b"09" | b"0a" | b"0c" | b"0d") {
                    return None;
                }
                self.at += 5;
            }
            _ => return None,
        }
        Some(())
    }

    /// A whole number in its one spelling, below 2^53 in size: `0`, or digits not starting
    /// with `0`, with a `-` before a number other than 0. Its value when it is not negative.
    fn integer(&mut self) -> Option<Option<u64>> {
        let negative = self.eat(b'-');
        let start = self.at;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
        let digits = &self.bytes[start..self.at];
        if digits.is_empty()
            || digits.len() > 16
            || (digits[0] == b'0' && (digits.len() > 1 || negative))
        {
            return None;
        }
        let size = digits
            .iter()
            .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        if size >= LIMIT {
            return None;
        }
        Some((!negative).then_some(size))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::super::{ENTRY, Link, canonical, integers, members};
    use super::*;

    type Owned = (u32, String, u64, String);

    fn scanned(text: &str) -> Option<Link<'_>> {
        canonical_entry(text.as_bytes(), super::super::MAX_DEPTH)
    }

    fn owned(link: &Link<'_>) -> Owned {
        (
            link.v,
            link.chain.to_owned(),
            link.seq,
            link.prev_hash.to_owned(),
        )
    }

    /// What the parsed checks make of `text`: its link when every one of them holds.
    fn parsed(text: &str) -> Option<Owned> {
        let value: Value = serde_json::from_str(text).ok()?;
        let link = Link::of(&value)?;
        members(&value, ENTRY).ok()?;
        integers(&value, "").ok()?;
        canonical(&value, text.as_bytes()).ok()?;
        Some(owned(&link))
    }

    /// What `actor` and `event` hold: mostly what the format allows, now and then a number it
    /// does not.
    fn content() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            2 => Just(Value::Null),
            2 => any::<bool>().prop_map(Value::Bool),
            6 => (-(1i64 << 53) + 1..(1i64 << 53)).prop_map(Value::from),
            1 => any::<f64>().prop_map(Value::from),
            1 => Just(json!(9_007_199_254_740_992u64)),
            8 => "[ -~]{0,16}|\\PC{0,6}|[\\x00-\\x1f\"\\\\]{0,3}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z_]{1,8}|[ -~]{0,3}|\\PC{0,2}", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Entries shaped like the service's, now and then with a member missing, added or of
    /// another type.
    fn entry() -> impl Strategy<Value = Value> {
        let any = super::super::tests::json_value().boxed();
        let time = prop_oneof![
            8 => Just(json!("2026-11-27T09:40:05.123456Z")),
            1 => Just(json!("2026-11-27T09:40:05Z")),
            1 => any.clone(),
        ];
        let count = prop_oneof![
            8 => (0u64..1 << 53).prop_map(Value::from),
            1 => Just(json!(-1)),
            1 => any.clone(),
        ];
        (
            content(),
            "[a-z-]{0,12}|\\PC{0,4}",
            content(),
            "[0-9a-f]{64}|\\PC{0,8}",
            (count, time, prop_oneof![8 => Just(json!(1)), 1 => Just(json!(4_294_967_296u64))]),
            (any.clone(), 0u8..24),
        )
            .prop_map(
                |(actor, chain, event, prev, (seq, time, v), (extra, change))| {
                    let mut event = match event {
                        Value::Object(members) => members,
                        _ => serde_json::Map::new(),
                    };
                    if change != 1 {
                        event.insert("type".into(), json!("action.requested"));
                    }
                    let mut entry = json!({
                        "actor": if change == 2 { actor } else { json!({"kind": "analyst", "id": actor}) },
                        "chain": chain, "event": event, "prev_hash": prev,
                        "seq": seq, "time": time, "v": v,
                    });
                    if let Some(members) = entry.as_object_mut() {
                        match change {
                            3 => drop(members.remove("time")),
                            4 => drop(members.insert("extra".into(), extra)),
                            5 => drop(members.insert("seq".into(), Value::Null)),
                            _ => {}
                        }
                    }
                    entry
                },
            )
    }

    /// One edit of a few characters, at a place given as a fraction of the text.
    fn edit() -> impl Strategy<Value = (f64, usize, String)> {
        (
            0.0..1.0f64,
            0usize..4,
            "[\\[\\]{}\",:\\\\ .eE+\\-0-9a-z\\x00-\\x1fé\u{2028}]{0,3}",
        )
    }

    fn edited(text: &str, (at, removed, inserted): &(f64, usize, String)) -> String {
        let chars: Vec<char> = text.chars().collect();
        let start = ((chars.len() as f64) * at) as usize;
        let end = (start + removed).min(chars.len());
        let mut out: String = chars[..start].iter().collect();
        out.push_str(inserted);
        out.extend(&chars[end..]);
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// The scan says yes only where the parsed checks do, and finds the same link.
        #[test]
        fn the_scan_vouches_only_for_what_the_parsed_checks_accept(
            value in entry(),
            edits in proptest::collection::vec(edit(), 0..3),
        ) {
            let canonical = String::from_utf8(serde_jcs::to_vec(&value).unwrap_or_default())
                .unwrap_or_default();
            let mut texts = vec![canonical.clone()];
            let mut text = canonical;
            for change in &edits {
                text = edited(&text, change);
                texts.push(text.clone());
            }
            for text in texts {
                if let Some(link) = scanned(&text) {
                    prop_assert_eq!(Some(owned(&link)), parsed(&text), "{}", text);
                }
            }
        }
    }

    #[test]
    fn the_scan_takes_the_entries_the_service_writes() {
        let prev = "ab".repeat(32);
        let text = format!(
            r#"{{"actor":{{"id":"a@example.com","kind":"analyst","mfa":"totp"}},"chain":"acme","event":{{"action_id":"0193","note":"tab\tand \"quote\" é  ","reasons":[],"type":"action.requested","upn":"u@acme.com","x":-12}},"prev_hash":"{prev}","seq":42,"time":"2026-11-27T09:40:05.123456Z","v":1}}"#
        )
        .replace('\t', "\\t");
        let expected = Some((1, "acme".to_owned(), 42, prev));
        assert_eq!(parsed(&text), expected);
        assert_eq!(scanned(&text).map(|l| owned(&l)), expected);
    }

    #[test]
    fn the_scan_leaves_every_other_spelling_to_the_parsed_checks() {
        let base = r#"{"actor":{},"chain":"c","event":{"n":[1,"\u001f"],"type":"t"},"prev_hash":"p","seq":1,"time":"2026-11-27T09:40:05.123456Z","v":1}"#;
        assert!(scanned(base).is_some());
        for other in [
            base.replace("u001f", "u001F"),
            base.replace(r#""\u001f""#, r#""\u0041""#),
            base.replace(r#""\u001f""#, r#""\n""#)
                .replace(r"\n", r"\u000a"),
            base.replace("[1,", "[1.0,"),
            base.replace("[1,", "[01,"),
            base.replace("[1,", "[-0,"),
            base.replace("[1,", "[9007199254740992,"),
            base.replace("[1,", "[1e0,"),
            base.replace("[1,", "[ 1,"),
            base.replace(r#""c""#, r#""\u0063""#),
            base.replace(r#""c""#, r#""c\/""#),
            base.replace(r#""actor":{},"chain":"c""#, r#""chain":"c","actor":{}"#),
            base.replace(r#""v":1}"#, r#""v":1,"v":1}"#),
            base.replace(r#""type":"t""#, r#""type":1"#),
            base.replace(r#""seq":1"#, r#""seq":-1"#),
            base.replace(r#""v":1"#, r#""v":4294967296"#),
            format!("{base} "),
        ] {
            assert_ne!(other, base);
            assert!(scanned(&other).is_none(), "{other}");
        }
    }

    proptest! {
        #[test]
        fn the_first_special_byte_is_found_exactly(bytes in proptest::array::uniform8(prop_oneof![8 => 0x20u8..0x7f, 1 => any::<u8>()])) {
            let expected = bytes.iter().position(|&b| !PLAIN[usize::from(b)]);
            prop_assert_eq!(first_special(u64::from_le_bytes(bytes)), expected);
        }
    }

    #[test]
    fn the_scan_holds_to_its_depth_and_to_utf8() {
        let nested = r#"{"actor":{"a":[[{}]]},"chain":"c","event":{"type":"t"},"prev_hash":"p","seq":1,"time":"2026-11-27T09:40:05.123456Z","v":1}"#;
        assert!(canonical_entry(nested.as_bytes(), 5).is_some());
        assert!(canonical_entry(nested.as_bytes(), 4).is_none());
        let accented = nested.replace(r#""a":"#, r#""a":"é","b":"#);
        assert!(canonical_entry(accented.as_bytes(), 5).is_some());
        let mut cut = accented.into_bytes();
        let at = cut.iter().position(|&b| b >= 0x80).unwrap_or_default();
        cut.remove(at);
        assert!(canonical_entry(&cut, 5).is_none());
    }
}
