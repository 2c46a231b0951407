//! The printable report for a customer and period: a summary, every action with who, why, the
//! MFA evidence, the result and Graph's request-id, the full timeline, and the data a reader
//! needs to check it against the verifiable JSONL export.
//!
//! The summary comes first but needs every entry, so the window is read three times (summary,
//! actions, timeline) instead of being held in memory.

use std::collections::BTreeMap;

use futures::TryStreamExt;

use super::{Facts, OpenActions, Sink, Window};
use crate::audit::AuditKey;
use crate::error::Result;
use crate::html::escape;
use crate::store::Store;

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:2rem;color:#111}\
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #999}\
table{border-collapse:collapse;width:100%;margin:.5rem 0}th,td{border:1px solid #bbb;padding:.25rem .4rem;\
text-align:left;vertical-align:top}th{background:#eee}td.n{text-align:right}code{font-size:12px;word-break:break-all}\
.failed,.denied{color:#a00;font-weight:600}.succeeded{color:#060}\
@media print{body{margin:0;font-size:10pt}tr{break-inside:avoid}h2{break-after:avoid}}";

#[derive(Default)]
struct Summary {
    entries: u64,
    first_time: String,
    last_time: String,
    requested: BTreeMap<String, u64>,
    outcomes: BTreeMap<String, u64>,
    by_actor: BTreeMap<String, u64>,
    detections: u64,
    decisions: BTreeMap<String, u64>,
    events: BTreeMap<String, u64>,
    prev_hash: String,
    last_hash: String,
}

pub(super) async fn write(
    store: &dyn Store,
    key: &AuditKey,
    window: &Window,
    sink: &mut Sink,
) -> Result<()> {
    let summary = summarise(store, window).await?;
    head(window, &summary, sink);
    actions(store, window, sink).await?;
    timeline(store, window, sink).await?;
    verification(key, window, &summary, sink)?;
    sink.buffer().extend_from_slice(b"</body></html>\n");
    Ok(())
}

async fn summarise(store: &dyn Store, window: &Window) -> Result<Summary> {
    let mut s = Summary::default();
    let mut rows = super::rows(store, window);
    let mut open = OpenActions::default();
    while let Some(row) = rows.try_next().await? {
        let f = Facts::read(&row, &mut open);
        if s.entries == 0 {
            s.first_time = f.time.clone();
            s.prev_hash = f.raw["prev_hash"].as_str().unwrap_or_default().to_owned();
        }
        s.entries += 1;
        s.last_time = f.time.clone();
        s.last_hash = row.hash.clone();
        *s.events.entry(f.event.clone()).or_default() += 1;
        match f.event.as_str() {
            "action_requested" => {
                *s.requested.entry(f.operation.clone()).or_default() += 1;
                *s.by_actor.entry(f.actor.clone()).or_default() += 1;
            }
            "action_outcome" => *s.outcomes.entry(f.outcome.clone()).or_default() += 1,
            "detection_received" => s.detections += 1,
            "detection_decided" => *s.decisions.entry(f.outcome.clone()).or_default() += 1,
            _ => {}
        }
    }
    Ok(s)
}

fn period(window: &Window) -> String {
    let from = window
        .from
        .map(|t| t.to_string())
        .unwrap_or_else(|| "the beginning".to_owned());
    let to = window
        .to
        .map(|t| t.to_string())
        .unwrap_or_else(|| window.exported_at.to_string());
    format!("{from} to {to}")
}

fn counts(title: &str, map: &BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return format!("<tr><th>{}</th><td>none</td></tr>", escape(title));
    }
    let items: Vec<String> = map
        .iter()
        .map(|(k, v)| format!("{}: {v}", escape(if k.is_empty() { "unknown" } else { k })))
        .collect();
    format!(
        "<tr><th>{}</th><td>{}</td></tr>",
        escape(title),
        items.join(", ")
    )
}

fn head(window: &Window, s: &Summary, sink: &mut Sink) {
    let title = format!("Audit report: {} ({})", window.customer_name, window.chain);
    let requested: u64 = s.requested.values().sum();
    let html = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <style>{STYLE}</style></head><body><h1>{title}</h1>\
         <p>Period: {period}. Exported {exported}. Entries {range}.</p>\
         <h2>Summary</h2><table>\
         <tr><th>Entries in this period</th><td>{entries}</td></tr>\
         <tr><th>Actions requested</th><td>{requested}</td></tr>{by_operation}{outcomes}{by_actor}\
         <tr><th>Falcon detections received</th><td>{detections}</td></tr>{decisions}{events}</table>",
        title = escape(&title),
        period = escape(&period(window)),
        exported = escape(&window.exported_at.to_string()),
        range = match window.seqs {
            Some((first, last)) => format!("{first} to {last}"),
            None => "none".to_owned(),
        },
        entries = s.entries,
        by_operation = counts("Requested, by operation", &s.requested),
        outcomes = counts("Outcomes", &s.outcomes),
        by_actor = counts("Requested, by whom", &s.by_actor),
        detections = s.detections,
        decisions = counts("Detection decisions", &s.decisions),
        events = counts("Entries, by event", &s.events),
    );
    sink.buffer().extend_from_slice(html.as_bytes());
}

fn action_row(f: &Facts, finished: bool) -> String {
    let cells = [
        if f.requested_at.is_empty() {
            &f.time
        } else {
            &f.requested_at
        },
        if f.requested_by.is_empty() {
            &f.actor
        } else {
            &f.requested_by
        },
        &f.operation,
        &f.account,
        &f.reason,
        &f.ticket,
        &f.mfa,
    ];
    let mut row = String::from("<tr>");
    for cell in cells {
        row.push_str("<td>");
        row.push_str(&escape(cell));
        row.push_str("</td>");
    }
    let outcome = if finished {
        f.outcome.as_str()
    } else {
        "no outcome in this period"
    };
    row.push_str(&format!(
        "<td class=\"{class}\">{outcome}{detail}</td><td><code>{request}</code></td><td><code>{id}</code></td></tr>",
        class = escape(&f.outcome),
        outcome = escape(outcome),
        detail = if f.detail.is_empty() { String::new() } else { format!("<br>{}", escape(&f.detail)) },
        request = escape(&f.graph_request_id),
        id = escape(&f.action_id),
    ));
    row
}

async fn actions(store: &dyn Store, window: &Window, sink: &mut Sink) -> Result<()> {
    sink.buffer().extend_from_slice(
        b"<h2>Actions</h2><table><thead><tr><th>Requested</th><th>By</th><th>Operation</th><th>Account</th>\
          <th>Reason</th><th>Ticket</th><th>MFA evidence</th><th>Result</th><th>Graph request-id</th>\
          <th>Action</th></tr></thead><tbody>",
    );
    let mut rows = super::rows(store, window);
    let mut open = OpenActions::default();
    while let Some(row) = rows.try_next().await? {
        if row.event != "action_requested" && row.event != "action_outcome" {
            continue;
        }
        let f = Facts::read(&row, &mut open);
        if f.event == "action_outcome" {
            sink.buffer()
                .extend_from_slice(action_row(&f, true).as_bytes());
            sink.maybe_flush().await?;
        }
    }
    for f in open.into_unfinished() {
        sink.buffer()
            .extend_from_slice(action_row(&f, false).as_bytes());
        sink.maybe_flush().await?;
    }
    sink.buffer().extend_from_slice(b"</tbody></table>");
    Ok(())
}

async fn timeline(store: &dyn Store, window: &Window, sink: &mut Sink) -> Result<()> {
    sink.buffer().extend_from_slice(
        b"<h2>Timeline</h2><table><thead><tr><th>Seq</th><th>Time</th><th>Who</th><th>Event</th>\
          <th>Account</th><th>Outcome</th><th>Details</th></tr></thead><tbody>",
    );
    let mut rows = super::rows(store, window);
    let mut open = OpenActions::default();
    while let Some(row) = rows.try_next().await? {
        let f = Facts::read(&row, &mut open);
        let details = [&f.operation, &f.reason, &f.detail]
            .into_iter()
            .filter(|s| !s.is_empty())
            .map(|s| escape(s))
            .collect::<Vec<_>>()
            .join("<br>");
        let line = format!(
            "<tr><td class=\"n\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td></tr>",
            f.seq,
            escape(&f.time),
            escape(&f.actor),
            escape(&f.event),
            escape(&f.account),
            escape(&f.outcome),
            escape(&f.outcome),
            details
        );
        sink.buffer().extend_from_slice(line.as_bytes());
        sink.maybe_flush().await?;
    }
    sink.buffer().extend_from_slice(b"</tbody></table>");
    Ok(())
}

fn verification(key: &AuditKey, window: &Window, s: &Summary, sink: &mut Sink) -> Result<()> {
    let public = key.public_key();
    let mut html = format!(
        "<h2>Verification data</h2><p>This report is for reading. To check it, ask for the JSON Lines export of the \
         same period and run <code>killswitch audit verify FILE --public-key KEY</code> (or your own verifier, \
         following docs/audit-format.md): its entries must end at the hash below.</p><table>\
         <tr><th>Chain</th><td><code>{chain}</code></td></tr>\
         <tr><th>Entries</th><td>{range}</td></tr>\
         <tr><th>First entry chains from</th><td><code>{prev}</code></td></tr>\
         <tr><th>Hash of the last entry</th><td><code>{last}</code></td></tr>\
         <tr><th>Signing key id</th><td><code>{key_id}</code></td></tr>\
         <tr><th>Ed25519 public key (base64)</th><td><code>{public}</code></td></tr></table>",
        chain = escape(&window.chain),
        range = match window.seqs {
            Some((first, last)) => format!("{first} to {last} ({} entries)", s.entries),
            None => "none".to_owned(),
        },
        prev = escape(&s.prev_hash),
        last = escape(&s.last_hash),
        key_id = escape(public.key_id.as_str()),
        public = escape(&public.to_base64()),
    );
    if !window.checkpoints.is_empty() {
        html.push_str(
            "<p>Signed checkpoints in this period:</p><table><thead><tr><th>Seq</th><th>Hash</th><th>Time</th>\
             <th>Key id</th><th>Signature</th></tr></thead><tbody>",
        );
        for cp in &window.checkpoints {
            html.push_str(&format!(
                "<tr><td class=\"n\">{}</td><td><code>{}</code></td><td>{}</td><td><code>{}</code></td><td><code>{}</code></td></tr>",
                cp.seq,
                escape(&cp.hash),
                escape(&cp.time),
                escape(&cp.key_id),
                escape(&cp.signature)
            ));
        }
        html.push_str("</tbody></table>");
    }
    sink.buffer().extend_from_slice(html.as_bytes());
    Ok(())
}
