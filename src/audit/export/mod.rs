//! Per-customer exports of the audit log, streamed in constant memory: JSON Lines (the
//! verifiable format, see docs/audit-format.md), CSV for people, OCSF events for SIEMs, and a
//! printable HTML report.

mod csv;
mod html;
pub mod jsonl;
mod ocsf;
pub mod verify;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::audit::AuditKey;
use crate::audit::event::{Actor, AuditEvent};
use crate::audit::records::{CheckpointRecord, EntryRecord};
use crate::domain::{ChainId, CustomerSlug};
use crate::error::{Error, Result};
use crate::store::Store;
use crate::time::Timestamp;

/// Chunks are flushed at about this size; with the channel depth it bounds memory.
const CHUNK: usize = 64 * 1024;
const CHANNEL_DEPTH: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jsonl,
    Csv,
    Ocsf,
    Html,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Jsonl => "jsonl",
            Format::Csv => "csv",
            Format::Ocsf => "ocsf",
            Format::Html => "html",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Jsonl => "application/x-ndjson",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Ocsf => "application/x-ndjson",
            Format::Html => "text/html; charset=utf-8",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Format::Jsonl | Format::Ocsf => "jsonl",
            Format::Csv => "csv",
            Format::Html => "html",
        }
    }
}

impl FromStr for Format {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "jsonl" => Ok(Format::Jsonl),
            "csv" => Ok(Format::Csv),
            "ocsf" => Ok(Format::Ocsf),
            "html" => Ok(Format::Html),
            other => Err(Error::InvalidInput(format!(
                "`{other}` is not an export format (jsonl, csv, ocsf, html)"
            ))),
        }
    }
}

/// What to export.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    pub customer: CustomerSlug,
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
    pub format: Format,
    pub actor: Actor,
}

/// The export's extent, fixed before streaming starts (entries written meanwhile are not in it).
#[derive(Debug, Clone)]
pub struct Window {
    pub chain: String,
    pub customer_name: String,
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
    /// Inclusive seq bounds; `None` when the window holds no entry.
    pub seqs: Option<(i64, i64)>,
    pub checkpoints: Vec<CheckpointRecord>,
    pub exported_at: Timestamp,
}

impl Window {
    pub fn entry_count(&self) -> u64 {
        self.seqs
            .map(|(first, last)| u64::try_from(last - first + 1).unwrap_or(0))
            .unwrap_or(0)
    }
}

/// A period bound: an RFC 3339 time, or a date meaning its midnight UTC.
pub fn parse_bound(text: &str) -> Result<Timestamp> {
    if let Ok(time) = text.parse::<Timestamp>() {
        return Ok(time);
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| Timestamp::from_datetime(t.and_utc()))
        .ok_or_else(|| Error::InvalidInput(format!("`{text}` is not a time (RFC 3339, e.g. 2026-11-01T00:00:00Z) or a date (2026-11-01)")))
}

/// A started export: its window, and the body as a stream of chunks.
pub struct Export {
    pub window: Window,
    pub body: BoxStream<'static, Result<Bytes>>,
}

/// Fixes the window, records the export in the customer's chain (who, range, format), and
/// starts streaming.
pub async fn start(
    store: Arc<dyn Store>,
    key: Arc<AuditKey>,
    request: ExportRequest,
) -> Result<Export> {
    let customer = store
        .customer(&request.customer)
        .await?
        .ok_or_else(|| Error::NotFound(format!("customer `{}`", request.customer)))?;
    if let (Some(from), Some(to)) = (request.from, request.to)
        && from >= to
    {
        return Err(Error::InvalidInput(format!(
            "the period is empty: `from` ({from}) is not before `to` ({to})"
        )));
    }
    let chain = request.customer.to_string();
    let exported_at = Timestamp::now();
    let from = request
        .from
        .unwrap_or_else(|| Timestamp::from_datetime(chrono::DateTime::UNIX_EPOCH));
    let to = request
        .to
        .unwrap_or_else(|| exported_at.after(std::time::Duration::from_secs(1)));
    let seqs = match (request.from, request.to) {
        // The whole log: the head says where it ends, no need to look at times.
        (None, None) => store
            .head(&chain)
            .await?
            .filter(|h| h.seq > 0)
            .map(|h| (1, h.seq)),
        _ => store.seq_window(&chain, from, to).await?,
    };
    let checkpoints = match seqs {
        Some((first, last)) => store
            .checkpoints(&chain)
            .await?
            .into_iter()
            .filter(|c| c.seq >= first && c.seq <= last)
            .collect(),
        None => Vec::new(),
    };
    let window = Window {
        chain,
        customer_name: customer.name,
        from: request.from,
        to: request.to,
        seqs,
        checkpoints,
        exported_at,
    };
    let event = AuditEvent::AuditExported {
        format: request.format.as_str().to_owned(),
        from: request.from,
        to: request.to,
        entries: window.entry_count(),
    };
    store
        .append(
            &ChainId::Customer(request.customer.clone()),
            &request.actor,
            &event,
        )
        .await?;
    let (tx, rx) = mpsc::channel::<Result<Bytes>>(CHANNEL_DEPTH);
    let producer_window = window.clone();
    let format = request.format;
    tokio::spawn(async move {
        let mut sink = Sink {
            tx,
            buffer: Vec::with_capacity(CHUNK),
        };
        let store = store.as_ref();
        let outcome = match format {
            Format::Jsonl => jsonl::write(store, &key, &producer_window, &mut sink).await,
            Format::Csv => csv::write(store, &producer_window, &mut sink).await,
            Format::Ocsf => ocsf::write(store, &producer_window, &mut sink).await,
            Format::Html => html::write(store, &key, &producer_window, &mut sink).await,
        };
        match outcome {
            Ok(()) => {
                if sink.flush().await.is_err() {
                    tracing::info!("the export's reader went away before the end");
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "export stopped");
                sink.fail(e).await;
            }
        }
    });
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    })
    .boxed();
    Ok(Export { window, body })
}

/// The window's entries in seq order (none when the window is empty).
pub(crate) fn rows<'a>(
    store: &'a dyn Store,
    window: &'a Window,
) -> BoxStream<'a, Result<EntryRecord>> {
    match window.seqs {
        Some((first, last)) => store.entry_range(&window.chain, first, last),
        None => futures::stream::empty().boxed(),
    }
}

/// Where formatters write: a buffer flushed to the channel in chunks. A closed channel (the
/// client went away) ends the export quietly.
pub(crate) struct Sink {
    tx: mpsc::Sender<Result<Bytes>>,
    buffer: Vec<u8>,
}

impl Sink {
    pub(crate) fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.buffer
    }

    pub(crate) async fn maybe_flush(&mut self) -> Result<()> {
        if self.buffer.len() >= CHUNK {
            self.flush().await?;
        }
        Ok(())
    }

    pub(crate) async fn flush(&mut self) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(CHUNK),
        ));
        self.tx
            .send(Ok(chunk))
            .await
            .map_err(|_| Error::Internal("the export's reader went away".to_owned()))
    }

    pub(crate) async fn fail(self, error: Error) {
        let _ = self.tx.send(Err(error)).await;
    }
}

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

impl Facts {
    /// Reads one stored entry; `open` pairs requests with their outcomes.
    pub(crate) fn read(row: &EntryRecord, open: &mut OpenActions) -> Facts {
        let raw: Value = serde_json::from_str(&row.entry).unwrap_or(Value::Null);
        let actor = &raw["actor"];
        let event = &raw["event"];
        let actor_display = match actor["type"].as_str() {
            Some("analyst") => text(&actor["email"]),
            Some("operator") => format!("operator {}", text(&actor["user"])),
            Some("falcon") => format!("falcon (auto-disable: {})", text(&actor["policy"])),
            Some("unauthenticated") => match actor["client_ip"].as_str() {
                Some(ip) => format!("unauthenticated ({ip})"),
                None => "unauthenticated".to_owned(),
            },
            Some(other) => other.to_owned(),
            None => String::new(),
        };
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
        let mfa = match actor["auth"].as_str() {
            Some(auth) if !mfa.is_empty() => {
                format!("{mfa}; signed in with {}", auth.replace('_', " "))
            }
            _ => mfa,
        };
        let state_upn = [
            &event["after"]["user_principal_name"],
            &event["before"]["user_principal_name"],
        ]
        .into_iter()
        .map(text)
        .find(|s| !s.is_empty())
        .unwrap_or_default();
        let mut facts = Facts {
            seq: row.seq,
            time: row.time.clone(),
            event: row.event.clone(),
            actor_type: text(&actor["type"]),
            actor: actor_display,
            analyst_id: [text(&actor["id"]), text(&event["analyst_id"])]
                .into_iter()
                .find(|s| !s.is_empty())
                .unwrap_or_default(),
            operation: text(&event["operation"]),
            account: [text(&event["account"]), state_upn]
                .into_iter()
                .find(|s| !s.is_empty())
                .unwrap_or_default(),
            reason: text(&event["reason"]),
            ticket: text(&event["ticket"]),
            outcome: [text(&event["outcome"]), text(&event["decision"])]
                .into_iter()
                .find(|s| !s.is_empty())
                .unwrap_or_default(),
            detail: text(&event["detail"]),
            graph_request_id: text(&event["graph"]["request_id"]),
            action_id: text(&event["action_id"]),
            mfa,
            client_ip: [
                text(&event["request"]["client_ip"]),
                text(&actor["client_ip"]),
            ]
            .into_iter()
            .find(|s| !s.is_empty())
            .unwrap_or_default(),
            user_agent: text(&event["request"]["user_agent"]),
            requested_at: String::new(),
            requested_by: String::new(),
            raw: Value::Null,
        };
        match row.event.as_str() {
            "action_requested"
                if open.open.len() < OPEN_ACTIONS_CAP && !facts.action_id.is_empty() =>
            {
                open.open.insert(facts.action_id.clone(), facts.clone());
            }
            "action_outcome" => {
                if let Some(asked) = open.open.remove(&facts.action_id) {
                    facts.operation = asked.operation;
                    if facts.account.is_empty() {
                        facts.account = asked.account;
                    }
                    facts.reason = asked.reason;
                    facts.ticket = asked.ticket;
                    facts.mfa = asked.mfa;
                    facts.requested_at = asked.time;
                    facts.requested_by = asked.actor;
                }
                let warnings: Vec<String> = event["warnings"]
                    .as_array()
                    .map(|w| w.iter().map(text).collect())
                    .unwrap_or_default();
                if !warnings.is_empty() {
                    facts.detail = [facts.detail, warnings.join("; ")]
                        .into_iter()
                        .filter(|s| !s.is_empty())
                        .collect::<Vec<_>>()
                        .join("; ");
                }
            }
            "detection_received" => {
                facts.detail = format!(
                    "{} severity, {}",
                    text(&event["severity"]),
                    text(&event["composite_id"])
                )
            }
            "analyst_locked_out" => {
                facts.detail = format!("locked until {}", text(&event["until"]))
            }
            "connection_tested" => {
                facts.outcome = if event["ready"] == Value::Bool(true) {
                    "ready".to_owned()
                } else {
                    "not ready".to_owned()
                }
            }
            "audit_exported" => {
                facts.detail = format!(
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
                facts.detail = text(&event["email"]);
            }
            "customer_updated" | "customer_policy_changed" => {
                facts.detail = changes(&event["changes"])
            }
            _ => {}
        }
        facts.raw = raw;
        facts
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
