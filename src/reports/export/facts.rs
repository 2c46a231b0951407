//! What the formats for people and SIEMs (CSV, OCSF, HTML) read from an entry: a flat set of
//! facts, with each action's outcome joined to the request it answers.

use std::collections::HashMap;

use serde_json::Value;

use crate::audit::records::EntryRecord;

/// At most this many requests wait for their outcome at once; beyond that, outcome rows carry
/// only what their own entry says (memory stays bounded whatever the log holds).
const OPEN_ACTIONS_CAP: usize = 10_000;

/// Requests seen earlier in this export whose outcome has not come yet, so an outcome can say
/// what was asked, by whom and why.
#[derive(Default)]
pub(crate) struct OpenActions {
    open: HashMap<String, Facts>,
}

impl OpenActions {
    /// Requests still without an outcome when the export ends, oldest first.
    pub(crate) fn into_unfinished(self) -> Vec<Facts> {
        let mut open: Vec<Facts> = self.open.into_values().collect();
        open.sort_by_key(|f| f.seq);
        open
    }

    fn remember(&mut self, request: &Facts) {
        if self.open.len() < OPEN_ACTIONS_CAP && !request.action_id.is_empty() {
            self.open.insert(request.action_id.clone(), request.clone());
        }
    }

    fn take(&mut self, action_id: &str) -> Option<Facts> {
        self.open.remove(action_id)
    }
}

/// The fields people and SIEMs want from an entry, read loosely so any event shape exports.
#[derive(Debug, Default, Clone)]
pub(crate) struct Facts {
    pub seq: i64,
    pub time: String,
    pub event: String,
    pub actor_type: String,
    /// Who, as a person reads it: an analyst's e-mail, `operator root`, `falcon (critical)`.
    pub actor: String,
    pub analyst_id: String,
    pub operation: String,
    pub account: String,
    pub reason: String,
    pub ticket: String,
    pub outcome: String,
    pub detail: String,
    pub graph_request_id: String,
    pub action_id: String,
    pub mfa: String,
    pub client_ip: String,
    pub user_agent: String,
    /// For an outcome: when the action was requested, and by whom.
    pub requested_at: String,
    pub requested_by: String,
    pub raw: Value,
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The first of `candidates` that says anything.
fn first_said<const N: usize>(candidates: [String; N]) -> String {
    candidates
        .into_iter()
        .find(|s| !s.is_empty())
        .unwrap_or_default()
}

impl Facts {
    /// Reads one stored entry; `open` pairs requests with their outcomes.
    pub(crate) fn read(row: &EntryRecord, open: &mut OpenActions) -> Facts {
        let raw: Value = serde_json::from_str(&row.entry).unwrap_or(Value::Null);
        let mut facts = Facts::common(row, &raw["actor"], &raw["event"]);
        facts.add_event_specifics(&raw["event"], open);
        facts.raw = raw;
        facts
    }

    /// The facts any event may carry, each under whichever field name its event uses.
    fn common(row: &EntryRecord, actor: &Value, event: &Value) -> Facts {
        let state_upn = first_said([
            text(&event["after"]["user_principal_name"]),
            text(&event["before"]["user_principal_name"]),
        ]);
        Facts {
            seq: row.seq,
            time: row.time.clone(),
            event: row.event.clone(),
            actor_type: text(&actor["type"]),
            actor: actor_display(actor),
            analyst_id: first_said([text(&actor["id"]), text(&event["analyst_id"])]),
            operation: text(&event["operation"]),
            account: first_said([text(&event["account"]), state_upn]),
            reason: text(&event["reason"]),
            ticket: text(&event["ticket"]),
            outcome: first_said([text(&event["outcome"]), text(&event["decision"])]),
            detail: text(&event["detail"]),
            graph_request_id: text(&event["graph"]["request_id"]),
            action_id: text(&event["action_id"]),
            mfa: mfa(actor, event),
            client_ip: first_said([
                text(&event["request"]["client_ip"]),
                text(&actor["client_ip"]),
            ]),
            user_agent: text(&event["request"]["user_agent"]),
            requested_at: String::new(),
            requested_by: String::new(),
            raw: Value::Null,
        }
    }

    /// What only some events say, put where people look for it (mostly `detail`).
    fn add_event_specifics(&mut self, event: &Value, open: &mut OpenActions) {
        match self.event.as_str() {
            "action_requested" => open.remember(self),
            "action_outcome" => self.complete_outcome(event, open),
            "detection_received" => {
                self.detail = format!(
                    "{} severity, {}",
                    text(&event["severity"]),
                    text(&event["composite_id"])
                )
            }
            "analyst_locked_out" => self.detail = format!("locked until {}", text(&event["until"])),
            "connection_tested" => {
                self.outcome = if event["ready"] == Value::Bool(true) {
                    "ready".to_owned()
                } else {
                    "not ready".to_owned()
                }
            }
            "audit_exported" => {
                self.detail = format!(
                    "{} export, {} entries",
                    text(&event["format"]),
                    text(&event["entries"])
                )
            }
            "analyst_added"
            | "analyst_disabled"
            | "analyst_enabled"
            | "analyst_mfa_reset"
            | "analyst_token_rotated" => {
                self.detail = text(&event["email"]);
            }
            "customer_updated" | "customer_policy_changed" => {
                self.detail = changes(&event["changes"])
            }
            _ => {}
        }
    }

    /// An outcome says what was asked, by whom and why, from its request when the export
    /// holds it; its warnings join the detail.
    fn complete_outcome(&mut self, event: &Value, open: &mut OpenActions) {
        if let Some(asked) = open.take(&self.action_id) {
            self.operation = asked.operation;
            if self.account.is_empty() {
                self.account = asked.account;
            }
            self.reason = asked.reason;
            self.ticket = asked.ticket;
            self.mfa = asked.mfa;
            self.requested_at = asked.time;
            self.requested_by = asked.actor;
        }
        let warnings: Vec<String> = event["warnings"]
            .as_array()
            .map(|w| w.iter().map(text).collect())
            .unwrap_or_default();
        if !warnings.is_empty() {
            self.detail = [std::mem::take(&mut self.detail), warnings.join("; ")]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join("; ");
        }
    }
}

/// Who, as a person reads it.
fn actor_display(actor: &Value) -> String {
    match actor["type"].as_str() {
        Some("analyst") => text(&actor["email"]),
        Some("operator") => format!("operator {}", text(&actor["user"])),
        Some("falcon") => format!("falcon (auto-disable: {})", text(&actor["policy"])),
        Some("unauthenticated") => match actor["client_ip"].as_str() {
            Some(ip) => format!("unauthenticated ({ip})"),
            None => "unauthenticated".to_owned(),
        },
        Some(other) => other.to_owned(),
        None => String::new(),
    }
}

/// The second factor given for an action, if any.
fn mfa(actor: &Value, event: &Value) -> String {
    let mfa = match &event["mfa"] {
        Value::Object(m) => format!(
            "{} step {} verified {}",
            text(&m["method"]),
            text(&m["time_step"]),
            text(&m["verified_at"])
        ),
        _ => String::new(),
    };
    // How the analyst signed in belongs with the second factor they gave.
    match actor["auth"].as_str() {
        Some(auth) if !mfa.is_empty() => {
            format!("{mfa}; signed in with {}", auth.replace('_', " "))
        }
        _ => mfa,
    }
}

/// `{"before": {..}, "after": {..}}` as the fields that changed, `key: old → new`; anything
/// else as its JSON.
fn changes(value: &Value) -> String {
    let (Some(before), Some(after)) = (value["before"].as_object(), value["after"].as_object())
    else {
        return text(value);
    };
    let changed: Vec<String> = after
        .iter()
        .filter(|(key, new)| before.get(*key) != Some(*new))
        .map(|(key, new)| {
            format!(
                "{key}: {} → {}",
                before.get(key).map(text).unwrap_or_default(),
                text(new)
            )
        })
        .collect();
    if changed.is_empty() {
        "no change".to_owned()
    } else {
        changed.join("; ")
    }
}
