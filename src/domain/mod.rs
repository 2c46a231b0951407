//! The values every layer shares, parsed once at the edge: requests, webhooks and the CLI hand
//! the core a `CustomerSlug`, an `AccountRef`, a `Reason`, never the raw text, and the store
//! hands out typed actions, detections and customers. Nothing here knows the layers above it
//! (see docs/architecture.md).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A value that does not parse, in words fit for whoever sent it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidValue {
    /// Input from a request, a webhook or the command line.
    #[error("{0}")]
    Input(String),
    /// A value read back from the store: the stored data is not what killswitch wrote.
    #[error("internal error: {0}")]
    Stored(String),
}

pub mod action;
pub mod analyst;
pub mod cursor;
pub mod customer;
pub mod detection;
pub mod event;
pub mod instance;
pub mod notification;

/// The name of the chain that records events not tied to one customer.
pub const SYSTEM_CHAIN: &str = "system";

/// A customer's slug: `[a-z0-9-]{2,63}`, not starting or ending with `-`, and never `system`
/// (that name belongs to the service's own audit chain).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct CustomerSlug(String);

impl CustomerSlug {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for CustomerSlug {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let valid_chars = s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !(2..=63).contains(&s.len()) || !valid_chars || s.starts_with('-') || s.ends_with('-') {
            return Err(InvalidValue::Input(format!(
                "`{s}` is not a customer slug: use 2 to 63 characters from a-z, 0-9 and `-`, not starting or ending with `-`"
            )));
        }
        if s == SYSTEM_CHAIN {
            return Err(InvalidValue::Input(format!(
                "`{s}` is reserved for the service's own audit chain; choose another slug"
            )));
        }
        Ok(CustomerSlug(s.to_owned()))
    }
}

impl<'de> Deserialize<'de> for CustomerSlug {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for CustomerSlug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which hash chain an audit entry belongs to: one per customer, plus the `system` chain.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChainId {
    System,
    Customer(CustomerSlug),
}

impl ChainId {
    pub fn as_str(&self) -> &str {
        match self {
            ChainId::System => SYSTEM_CHAIN,
            ChainId::Customer(slug) => slug.as_str(),
        }
    }
}

impl FromStr for ChainId {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == SYSTEM_CHAIN {
            Ok(ChainId::System)
        } else {
            s.parse().map(ChainId::Customer)
        }
    }
}

impl fmt::Display for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<CustomerSlug> for ChainId {
    fn from(slug: CustomerSlug) -> Self {
        ChainId::Customer(slug)
    }
}

/// An Entra tenant id (a GUID).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TenantId(uuid::Uuid);

impl TenantId {
    pub fn new(id: uuid::Uuid) -> TenantId {
        TenantId(id)
    }
}

impl FromStr for TenantId {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s.trim()).map(TenantId).map_err(|_| {
            InvalidValue::Input(format!(
                "`{s}` is not a tenant id (a GUID such as 72f988bf-86f1-41af-91ab-2d7cd011db47)"
            ))
        })
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.hyphenated())
    }
}

/// An Entra account as an analyst names it: its object id or its userPrincipalName.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AccountRef {
    ObjectId(uuid::Uuid),
    /// Stored lowercased: Entra compares UPNs case-insensitively.
    Upn(String),
}

impl AccountRef {
    /// The form Graph accepts in `/users/{id | userPrincipalName}`.
    pub fn as_graph_key(&self) -> String {
        self.to_string()
    }

    /// Whether this reference names the account with `id` and `upn`.
    pub fn matches(&self, id: &str, upn: &str) -> bool {
        match self {
            AccountRef::ObjectId(oid) => uuid::Uuid::parse_str(id).is_ok_and(|other| other == *oid),
            AccountRef::Upn(name) => upn.eq_ignore_ascii_case(name),
        }
    }
}

impl FromStr for AccountRef {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Ok(id) = uuid::Uuid::parse_str(s) {
            return Ok(AccountRef::ObjectId(id));
        }
        let bad = || {
            InvalidValue::Input(format!(
                "`{s}` is not an account: give its userPrincipalName (name@domain) or its Entra object id (a GUID)"
            ))
        };
        let (local, domain) = s.split_once('@').ok_or_else(bad)?;
        // The characters Entra allows in the name part of a userPrincipalName.
        let allowed = |c: char| c.is_ascii_alphanumeric() || "'.-_!#^~".contains(c);
        if s.len() > 113
            || local.is_empty()
            || local.len() > 64
            || !local.chars().all(allowed)
            || local.starts_with('.')
            || local.ends_with('.')
        {
            return Err(bad());
        }
        let domain_ok = domain.contains('.')
            && domain.split('.').all(|label| {
                !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if !domain_ok {
            return Err(bad());
        }
        Ok(AccountRef::Upn(s.to_ascii_lowercase()))
    }
}

impl fmt::Display for AccountRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AccountRef::ObjectId(id) => write!(f, "{}", id.hyphenated()),
            AccountRef::Upn(upn) => f.write_str(upn),
        }
    }
}

impl Serialize for AccountRef {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AccountRef {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Why an analyst acts: required, one line of free text, at most 500 characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Reason(String);

impl Reason {
    pub const MAX_CHARS: usize = 500;

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Reason {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().is_empty() {
            return Err(InvalidValue::Input(
                "`reason` is required: say why this account is being changed".to_owned(),
            ));
        }
        one_line_text("reason", s, Reason::MAX_CHARS).map(Reason)
    }
}

/// Why a character may not appear in text that people will read later, if it may not.
fn forbidden(c: char) -> Option<&'static str> {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    match c.general_category() {
        GeneralCategory::Control => Some("control characters (such as line breaks)"),
        // Bidi overrides and isolates (U+202A–U+202E, U+2066–U+2069), zero-width and other
        // invisible characters: they make the text read differently from what it is.
        GeneralCategory::Format => Some("Unicode format characters (such as bidi overrides)"),
        GeneralCategory::LineSeparator | GeneralCategory::ParagraphSeparator => {
            Some("Unicode line or paragraph separators")
        }
        _ => None,
    }
}

/// Text someone else wrote (an identity provider's error description), made safe to record:
/// its first line, characters [`one_line_text`] refuses replaced by `?`, at most `max_chars`.
pub fn clean_line(text: &str, max_chars: usize) -> String {
    text.lines()
        .next()
        .unwrap_or_default()
        .trim()
        .chars()
        .map(|c| if forbidden(c).is_some() { '?' } else { c })
        .take(max_chars)
        .collect()
}

/// One line of free text for the audit log, a page or a report: at most `max_chars` as sent,
/// then trimmed, without control, format or line/paragraph-separator characters, which could
/// hide or reorder what a reader sees. The error names `field`.
/// Whether a URL's host is this machine (`localhost` or a loopback address): the one place
/// plain `http://` or SMTP without TLS is allowed to go.
pub fn is_loopback_host<S: AsRef<str>>(host: &url::Host<S>) -> bool {
    match host {
        url::Host::Domain(name) => name.as_ref().eq_ignore_ascii_case("localhost"),
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
    }
}

pub fn one_line_text(field: &str, value: &str, max_chars: usize) -> Result<String, InvalidValue> {
    let text = value.trim();
    if value.chars().count() > max_chars {
        return Err(InvalidValue::Input(format!(
            "`{field}` is longer than {max_chars} characters"
        )));
    }
    if let Some((c, why)) = text.chars().find_map(|c| forbidden(c).map(|why| (c, why))) {
        return Err(InvalidValue::Input(format!(
            "`{field}` must be one line of plain text: it contains U+{:04X}, and {why} are not accepted",
            u32::from(c)
        )));
    }
    Ok(text.to_owned())
}

/// A reference to the provider's or customer's ticket: at most 100 printable characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Ticket(String);

impl Ticket {
    pub const MAX_CHARS: usize = 100;

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Ticket {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().is_empty() {
            return Err(InvalidValue::Input(
                "`ticket` is 1 to 100 printable characters".to_owned(),
            ));
        }
        one_line_text("ticket", s, Ticket::MAX_CHARS).map(Ticket)
    }
}

/// An `Idempotency-Key`: 1 to 255 visible ASCII characters as a client sends it; stored scoped
/// to the analyst who sent it (see [`IdempotencyKey::scoped_to`]), or derived by the service
/// from a detection (`falcon-…`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Keys the service derives from Falcon detections start with this; no caller may use it,
    /// so nobody can take a detection's action before the detection arrives.
    pub const RESERVED_PREFIX: &'static str = "falcon-";

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A key from a request's `Idempotency-Key` header: the reserved prefix is refused.
    pub fn from_client(text: &str) -> Result<IdempotencyKey, InvalidValue> {
        if text.starts_with(Self::RESERVED_PREFIX) {
            return Err(InvalidValue::Input(format!(
                "`Idempotency-Key`: keys starting with `{}` are reserved for actions the service derives from detections",
                Self::RESERVED_PREFIX
            )));
        }
        text.parse()
    }

    /// The key as stored for `analyst`: two analysts' keys never meet, so one can neither
    /// replay nor block another's request.
    pub fn scoped_to(&self, analyst: uuid::Uuid) -> IdempotencyKey {
        IdempotencyKey(format!("{}/{}", analyst.hyphenated(), self.0))
    }
}

impl FromStr for IdempotencyKey {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.len() > 255 || !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(InvalidValue::Input(
                "`Idempotency-Key` is 1 to 255 visible ASCII characters".to_owned(),
            ));
        }
        Ok(IdempotencyKey(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_contract_slugs() {
        for ok in ["contoso", "a1", "fabrikam-eu", &"x".repeat(63)] {
            assert!(ok.parse::<CustomerSlug>().is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_malformed_and_reserved_slugs() {
        for bad in [
            "",
            "a",
            "Contoso",
            "con toso",
            "-lead",
            "trail-",
            "système",
            "system",
            &"x".repeat(64),
        ] {
            assert!(bad.parse::<CustomerSlug>().is_err(), "{bad}");
        }
    }

    #[test]
    fn accounts_are_upns_or_object_ids() {
        let upn: AccountRef = "Alice.Smith@Contoso.onmicrosoft.com".parse().unwrap();
        assert_eq!(upn.to_string(), "alice.smith@contoso.onmicrosoft.com");
        assert!(upn.matches(
            "00000000-0000-0000-0000-000000000001",
            "ALICE.SMITH@contoso.onmicrosoft.com"
        ));
        let id: AccountRef = "6F1C2E1B-0B5B-4C1E-9C43-2F4F7A3C9D10".parse().unwrap();
        assert_eq!(id.to_string(), "6f1c2e1b-0b5b-4c1e-9c43-2f4f7a3c9d10");
        assert!(id.matches("6f1c2e1b-0b5b-4c1e-9c43-2f4f7a3c9d10", "x@y.z"));
        for bad in [
            "",
            "alice",
            "@contoso.com",
            "alice@",
            "alice@contoso",
            "a b@c.d",
            "../etc@x.y",
            "a@b..c",
        ] {
            assert!(bad.parse::<AccountRef>().is_err(), "{bad}");
        }
    }

    #[test]
    fn reasons_are_required_single_line_and_bounded() {
        assert_eq!(
            "  stolen laptop ".parse::<Reason>().unwrap().as_str(),
            "stolen laptop"
        );
        assert!("".parse::<Reason>().is_err());
        assert!("   ".parse::<Reason>().is_err());
        assert!("two\nlines".parse::<Reason>().is_err());
        assert!("x".repeat(501).parse::<Reason>().is_err());
        assert!("é".repeat(500).parse::<Reason>().is_ok());
        // The length is of the text as sent, as the API's schema says (`maxLength`), and the
        // whitespace around it is trimmed, a trailing line break included.
        assert!(format!("  {}", "x".repeat(500)).parse::<Reason>().is_err());
        assert_eq!(
            "false positive\n".parse::<Reason>().unwrap().as_str(),
            "false positive"
        );
    }

    #[test]
    fn text_that_reads_differently_from_what_it_is_is_refused_naming_the_field() {
        for c in [
            '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}', '\u{2066}', '\u{2067}',
            '\u{2068}', '\u{2069}', '\u{2028}', '\u{2029}', '\u{200B}', '\u{FEFF}', '\n', '\u{1b}',
        ] {
            let text = format!("disable {c}evil");
            let reason = text.parse::<Reason>().err().map(|e| e.to_string());
            assert!(reason.is_some_and(|e| e.contains("`reason`")), "{c:?}");
            let ticket = text.parse::<Ticket>().err().map(|e| e.to_string());
            assert!(ticket.is_some_and(|e| e.contains("`ticket`")), "{c:?}");
        }
        for fine in [
            "Falcon ITP: impossible travel",
            "Überprüfung – Ticket № 7",
            "日本語の理由",
            "a\u{00A0}b",
        ] {
            assert!(fine.parse::<Reason>().is_ok(), "{fine}");
        }
    }

    #[test]
    fn chain_ids_round_trip_through_text() {
        for name in ["system", "contoso"] {
            let id: ChainId = name.parse().unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(id.as_str(), name);
        }
    }
}
