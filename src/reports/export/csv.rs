//! The export for people: RFC 4180 CSV, one row per entry, with spreadsheet formulas defused.

use futures::TryStreamExt;

use super::{Facts, OpenActions, Sink, Window};
use crate::error::{Error, Result};
use crate::store::Store;

pub(crate) const COLUMNS: [&str; 11] = [
    "seq",
    "time",
    "actor",
    "event",
    "operation",
    "account",
    "reason",
    "outcome",
    "detail",
    "graph_request_id",
    "action_id",
];

/// A cell a spreadsheet would run as a formula (OWASP "CSV injection") gets a leading `'`, which
/// Excel, LibreOffice and Google Sheets all show as text.
pub(crate) fn defuse(cell: &str) -> std::borrow::Cow<'_, str> {
    match cell.as_bytes().first() {
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r') => format!("'{cell}").into(),
        _ => cell.into(),
    }
}

pub(super) async fn write(store: &dyn Store, window: &Window, sink: &mut Sink) -> Result<()> {
    // RFC 4180: CRLF line ends, every field quoted so embedded commas, quotes and line breaks
    // stay inside their cell.
    let mut builder = csv::WriterBuilder::new();
    builder
        .terminator(csv::Terminator::CRLF)
        .quote_style(csv::QuoteStyle::Always)
        .buffer_capacity(1024);
    let record = |sink: &mut Sink, cells: &[&str]| -> Result<()> {
        let mut writer = builder.from_writer(sink.buffer());
        writer
            .write_record(cells.iter().map(|c| defuse(c).into_owned()))
            .map_err(|e| Error::Internal(format!("csv: {e}")))?;
        writer
            .flush()
            .map_err(|e| Error::Internal(format!("csv: {e}")))
    };
    record(sink, &COLUMNS)?;
    let mut rows = super::rows(store, window);
    let mut open = OpenActions::default();
    while let Some(row) = rows.try_next().await? {
        let f = Facts::read(&row, &mut open);
        let seq = f.seq.to_string();
        record(
            sink,
            &[
                &seq,
                &f.time,
                &f.actor,
                &f.event,
                &f.operation,
                &f.account,
                &f.reason,
                &f.outcome,
                &f.detail,
                &f.graph_request_id,
                &f.action_id,
            ],
        )?;
        sink.maybe_flush().await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_starts_are_defused_and_plain_text_is_not() {
        for bad in ["=1+1", "+cmd", "-2", "@SUM(A1)", "\tx", "\rx"] {
            assert_eq!(defuse(bad), format!("'{bad}"));
        }
        for fine in ["alice@contoso.com", "2026-11-27", "", "a=b", "'quoted"] {
            assert_eq!(defuse(fine), fine);
        }
    }
}
