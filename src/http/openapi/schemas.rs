//! Schemas for values the server checks beyond their JSON type, written from the same enums
//! and limits the server checks them with, so the document and the server cannot drift.

use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, SchemaType, Type};
use utoipa::openapi::{Object, Schema};

use crate::domain::Reason;
use crate::domain::action::ActionState;
use crate::domain::customer::AutoDisable;
use crate::domain::detection::{DetectionState, SignedString};
use crate::http::input::PageLimit;
use crate::reports::export::Format;

/// The characters one line of free text may not hold (`domain::one_line_text`): control
/// characters, line and paragraph separators, and the Unicode format characters (bidi overrides
/// and isolates, zero-width characters) of the Basic Multilingual Plane. Written as `\uXXXX`,
/// which ECMA-262 and the common regular-expression engines read alike.
const NOT_ONE_LINE: &str = r"\u0000-\u001f\u007f-\u009f\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb";

/// The customer slug rule (`domain::CustomerSlug`), without its one reserved word.
pub const CUSTOMER_SLUG: &str = "^[a-z0-9][a-z0-9-]{0,61}[a-z0-9]$";

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

fn nullable_string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(SchemaType::from_iter([Type::String, Type::Null]))
}

fn one_of(values: impl IntoIterator<Item = &'static str>) -> ObjectBuilder {
    string().enum_values(Some(values))
}

pub fn action_state() -> Object {
    one_of(ActionState::ALL.map(ActionState::as_str))
        .description(Some("only actions in this state"))
        .build()
}

pub fn notification_state() -> Object {
    one_of(crate::notify::NotificationState::ALL.map(crate::notify::NotificationState::as_str))
        .description(Some("only notifications in this state"))
        .build()
}

pub fn detection_state() -> Object {
    one_of(DetectionState::ALL.map(DetectionState::as_str))
        .description(Some("only detections in this state"))
        .build()
}

pub fn export_format() -> Object {
    one_of(Format::ALL.map(Format::as_str))
        .description(Some(
            "`jsonl` (the default, verifiable), `csv`, `ocsf` or `html`",
        ))
        .build()
}

pub fn auto_disable() -> Object {
    one_of(AutoDisable::ALL.map(AutoDisable::as_str))
        .description(Some(
            "Falcon detections from this severity disable at once (`off`: never)",
        ))
        .build()
}

pub fn webhook_signature() -> Schema {
    let values = SignedString::ALL.map(|s| serde_json::Value::from(s.as_str()));
    Schema::Object(
        nullable_string()
            .enum_values(Some(values.into_iter().chain([serde_json::Value::Null])))
            .description(Some(
                "The string the customer's Falcon webhook signs (`body_timestamp_base64` when null)",
            ))
            .build(),
    )
}

/// One line of text with at least one visible character, at most `max` characters as sent;
/// whitespace around it (a trailing line break from a form, say) is trimmed, not refused.
fn one_line(max: usize) -> ObjectBuilder {
    let pattern = format!("^\\s*[^{NOT_ONE_LINE}]*[^\\s{NOT_ONE_LINE}][^{NOT_ONE_LINE}]*\\s*$");
    string()
        .min_length(Some(1))
        .max_length(Some(max))
        .pattern(Some(pattern))
}

pub fn reason() -> Object {
    one_line(Reason::MAX_CHARS)
        .description(Some(
            "Why: one line without control or format characters, at most 500 characters; \
             recorded in the audit log and shown to the customer",
        ))
        .build()
}

pub fn ticket() -> Object {
    let one_line = one_line(crate::domain::Ticket::MAX_CHARS).build();
    nullable_string()
        .min_length(one_line.min_length)
        .max_length(one_line.max_length)
        .pattern(one_line.pattern)
        .description(Some(
            "The provider's or customer's ticket reference: one line, at most 100 characters",
        ))
        .build()
}

pub fn customer_slug() -> Object {
    string()
        .pattern(Some(CUSTOMER_SLUG))
        .description(Some("customer slug"))
        .examples(["contoso"])
        .build()
}

/// An account as `domain::AccountRef` reads it: an Entra object id, or a userPrincipalName
/// whose name part holds the characters Entra allows, at most 113 characters.
const ACCOUNT: &str = concat!(
    "^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
    "|[A-Za-z0-9'_!#^~-]([A-Za-z0-9'._!#^~-]{0,62}[A-Za-z0-9'_!#^~-])?",
    "@[A-Za-z0-9-]+(\\.[A-Za-z0-9-]+)+)$"
);

fn account_builder() -> ObjectBuilder {
    string()
        .pattern(Some(ACCOUNT))
        .max_length(Some(113))
        .examples(["alice@contoso.onmicrosoft.com"])
}

pub fn account() -> Object {
    account_builder()
        .description(Some("userPrincipalName or Entra object id"))
        .build()
}

pub fn account_list() -> utoipa::openapi::Array {
    utoipa::openapi::ArrayBuilder::new()
        .items(account_builder().build())
        .description(Some(
            "Accounts never touched (UPN or object id): break-glass and service accounts",
        ))
        .build()
}

pub fn page_limit() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int32)))
        .minimum(Some(PageLimit::MIN))
        .maximum(Some(PageLimit::MAX))
        .description(Some("at most this many, newest first (default 100)"))
        .build()
}

/// An `Idempotency-Key` a client may send (`domain::IdempotencyKey::from_client`): 1 to 255
/// visible ASCII characters, not starting with the prefix the service keeps for detections.
pub fn idempotency_key() -> Object {
    string()
        .pattern(Some(format!(
            "^(?!{})[!-~]{{1,255}}$",
            crate::domain::IdempotencyKey::RESERVED_PREFIX
        )))
        .description(Some(
            "the same key and request return the same action (1 to 255 visible ASCII characters, not starting with `falcon-`)",
        ))
        .build()
}

/// The customer's security contacts (`auth::analysts::normalize_contacts`), or none.
pub fn contact() -> Object {
    nullable_string()
        .max_length(Some(20 * 256))
        .description(Some(
            "the customer's security contacts: one e-mail address, or several separated by commas; each action on the tenant is notified there",
        ))
        .build()
}

/// A customer's notice webhook (`domain::customer::check_webhook_url`), or none.
pub fn webhook_url() -> Object {
    nullable_string()
        .max_length(Some(2000))
        .description(Some(
            "the customer's own endpoint for action notices: https (http only to loopback), signed with Standard Webhooks",
        ))
        .build()
}

/// How a customer's contact hears of actions (`NotifyMode`).
pub fn notify_mode() -> Object {
    nullable_string()
        .enum_values(Some(
            crate::domain::customer::NotifyMode::ALL.map(|m| m.as_str()),
        ))
        .description(Some(
            "`immediate`: a notice for each action (the default); `digest`: one message a day; `off`: none",
        ))
        .build()
}
