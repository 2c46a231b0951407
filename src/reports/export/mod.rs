//! Per-customer exports of the audit log, streamed in constant memory: JSON Lines (the
//! verifiable format, see docs/audit-format.md), CSV for people, OCSF events for SIEMs, and a
//! printable HTML report.

mod csv;
mod facts;
mod form;
mod html;
pub mod jsonl;
mod ocsf;
pub mod verify;

use std::str::FromStr;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use tokio::sync::mpsc;

use crate::audit::AuditKey;
use crate::audit::event::{Actor, AuditEvent};
use crate::audit::records::{CheckpointRecord, EntryRecord};
use crate::domain::{ChainId, CustomerSlug};
use crate::error::{Error, Result};
use crate::store::Store;
use crate::time::Timestamp;
pub(crate) use facts::{Facts, OpenActions};
pub use ocsf::chain_events as ocsf_chain_events;

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
    pub const ALL: [Format; 4] = [Format::Jsonl, Format::Csv, Format::Ocsf, Format::Html];

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
    /// The customer's Entra tenant id (the OCSF export names it as the accounts' cloud).
    pub tenant_id: Option<String>,
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

/// A period bound: an RFC 3339 time, or a date meaning its midnight UTC. The header states it
/// in the export's one time form, so a bound that form cannot hold (year 0, a leap second) is
/// refused here rather than written into a file no verifier would accept.
pub fn parse_bound(text: &str) -> Result<Timestamp> {
    let time = text.parse::<Timestamp>().ok().or_else(|| {
        chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| Timestamp::from_datetime(t.and_utc()))
    });
    let Some(time) = time else {
        return Err(Error::InvalidInput(format!(
            "`{text}` is not a time (RFC 3339, e.g. 2026-11-01T00:00:00Z) or a date (2026-11-01)"
        )));
    };
    if !crate::time::is_canonical_text(&time.to_string()) {
        return Err(Error::InvalidInput(format!(
            "`{text}` cannot bound an export: use a time from year 0001 to 9999 without a leap second"
        )));
    }
    Ok(time)
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
    let tenant = customer.tenant_id.to_string();
    let window = fix_window(store.as_ref(), &request, customer.name, tenant).await?;
    record_export(store.as_ref(), &request, &window).await?;
    let body = stream(store, key, window.clone(), request.format);
    Ok(Export { window, body })
}

/// The entries and checkpoints the period holds now; an open end runs from the first entry
/// or to just after the export started.
async fn fix_window(
    store: &dyn Store,
    request: &ExportRequest,
    customer_name: String,
    tenant_id: String,
) -> Result<Window> {
    let chain = request.customer.to_string();
    let exported_at = Timestamp::now();
    let seqs = match (request.from, request.to) {
        // The whole log: the head says where it ends, no need to look at times.
        (None, None) => store
            .head(&chain)
            .await?
            .filter(|h| h.seq > 0)
            .map(|h| (1, h.seq)),
        (from, to) => {
            let from =
                from.unwrap_or_else(|| Timestamp::from_datetime(chrono::DateTime::UNIX_EPOCH));
            let to = to.unwrap_or_else(|| exported_at.after(std::time::Duration::from_secs(1)));
            store.seq_window(&chain, from, to).await?
        }
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
    Ok(Window {
        chain,
        customer_name,
        tenant_id: Some(tenant_id),
        from: request.from,
        to: request.to,
        seqs,
        checkpoints,
        exported_at,
    })
}

/// Every export is itself audited: who took which period of the log, in which format.
async fn record_export(store: &dyn Store, request: &ExportRequest, window: &Window) -> Result<()> {
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
    Ok(())
}

/// The body, written by a task of its own into a bounded channel, so a slow reader holds back
/// the writer instead of letting the export pile up in memory.
fn stream(
    store: Arc<dyn Store>,
    key: Arc<AuditKey>,
    window: Window,
    format: Format,
) -> BoxStream<'static, Result<Bytes>> {
    let (tx, rx) = mpsc::channel::<Result<Bytes>>(CHANNEL_DEPTH);
    let sink = Sink {
        tx,
        buffer: Vec::with_capacity(CHUNK),
    };
    tokio::spawn(produce(store, key, window, format, sink));
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    })
    .boxed()
}

async fn produce(
    store: Arc<dyn Store>,
    key: Arc<AuditKey>,
    window: Window,
    format: Format,
    mut sink: Sink,
) {
    let store = store.as_ref();
    let outcome = match format {
        Format::Jsonl => jsonl::write(store, &key, &window, &mut sink).await,
        Format::Csv => csv::write(store, &window, &mut sink).await,
        Format::Ocsf => ocsf::write(store, &window, &mut sink).await,
        Format::Html => html::write(store, &key, &window, &mut sink).await,
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

    /// Sends `text` as a chunk of its own after what is buffered, without copying it.
    pub(crate) async fn push_text(&mut self, text: String) -> Result<()> {
        self.flush().await?;
        if text.is_empty() {
            return Ok(());
        }
        self.tx
            .send(Ok(Bytes::from(text)))
            .await
            .map_err(|_| Error::Internal("the export's reader went away".to_owned()))
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
