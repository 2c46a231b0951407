//! A notice as people and programs read it: a headline, labelled facts, and (for a customer)
//! the witness of its audit log. One structure, rendered as plain text, as HTML (every value
//! escaped) and as JSON data for webhooks, so the three always say the same thing.

use serde::{Deserialize, Serialize};

use crate::html::escape;

/// A rendered message, stored with the notification and sent as it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub subject: String,
    pub text: String,
    pub html: String,
    /// The facts as JSON, the `data` of a webhook.
    pub data: serde_json::Value,
}

/// What a notice says, before it is rendered.
#[derive(Debug, Clone, Default)]
pub struct Notice {
    pub subject: String,
    /// One sentence a tired reader cannot misread.
    pub headline: String,
    /// Labelled facts, in reading order; empty values are left out.
    pub facts: Vec<(&'static str, String)>,
    pub witness: Option<WitnessBlock>,
    /// Where to see more (the console page), if anywhere.
    pub link: Option<String>,
    /// The facts for programs (webhook `data`).
    pub data: serde_json::Value,
}

/// The customer's witness: the chain's position after the entry, signed.
#[derive(Debug, Clone)]
pub struct WitnessBlock {
    pub chain: String,
    pub seq: u64,
    pub hash: String,
    /// The witness as one line of JSON, to keep.
    pub line: String,
}

impl WitnessBlock {
    pub fn of(witness: &crate::audit::witness::Witness) -> crate::error::Result<WitnessBlock> {
        Ok(WitnessBlock {
            chain: witness.chain.clone(),
            seq: witness.seq,
            hash: witness.hash.to_hex(),
            line: witness.to_line()?,
        })
    }
}

/// How a customer keeps and uses the witness, in one line.
pub const WITNESS_HOWTO: &str = "Keep this line as witness.json; later, `killswitch audit verify export.jsonl --witness witness.json` (or docs/verify_export.py) refuses any export of your log that does not hold this exact entry, so a log rewritten after today cannot pass.";

impl Notice {
    pub fn fact(mut self, label: &'static str, value: impl Into<String>) -> Notice {
        let value = value.into();
        if !value.trim().is_empty() {
            self.facts.push((label, value));
        }
        self
    }

    pub fn render(self) -> Message {
        let text = self.text();
        let html = self.html();
        let mut data = self.data;
        if let (Some(w), Some(map)) = (&self.witness, data.as_object_mut()) {
            let witness: serde_json::Value =
                serde_json::from_str(&w.line).unwrap_or(serde_json::Value::Null);
            map.insert("witness".to_owned(), witness);
        }
        Message {
            subject: self.subject,
            text,
            html,
            data,
        }
    }

    fn text(&self) -> String {
        let mut out = format!("{}\n\n", self.headline);
        let width = self.facts.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
        for (label, value) in &self.facts {
            out.push_str(&format!("{label:<width$}  {}\n", one_line(value)));
        }
        if let Some(link) = &self.link {
            out.push_str(&format!("\nDetails: {link}\n"));
        }
        if let Some(w) = &self.witness {
            out.push_str(&format!(
                "\nWitness of your audit log: entry {} of chain `{}` has hash {}.\n{}\n{}\n",
                w.seq, w.chain, w.hash, w.line, WITNESS_HOWTO
            ));
        }
        out
    }

    fn html(&self) -> String {
        let mut out = format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title></head><body>\
             <p><strong>{}</strong></p><table>",
            escape(&self.subject),
            escape(&self.headline)
        );
        for (label, value) in &self.facts {
            out.push_str(&format!(
                "<tr><th scope=\"row\" align=\"left\">{}</th><td>{}</td></tr>",
                escape(label),
                escape(value)
            ));
        }
        out.push_str("</table>");
        if let Some(link) = &self.link {
            out.push_str(&format!("<p><a href=\"{}\">Details</a></p>", escape(link)));
        }
        if let Some(w) = &self.witness {
            out.push_str(&format!(
                "<h2>Witness of your audit log</h2><p>Entry {} of chain <code>{}</code> has hash <code>{}</code>.</p>\
                 <pre>{}</pre><p>{}</p>",
                w.seq,
                escape(&w.chain),
                escape(&w.hash),
                escape(&w.line),
                escape(WITNESS_HOWTO)
            ));
        }
        out.push_str("</body></html>");
        out
    }
}

/// Values come from requests and Graph: a line break in one must not forge another line.
fn one_line(value: &str) -> String {
    value
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_is_escaped_in_html_and_kept_on_its_line_in_text() {
        let message = Notice {
            subject: "Disabled <b>".to_owned(),
            headline: "x".to_owned(),
            data: serde_json::json!({}),
            ..Notice::default()
        }
        .fact("Reason", "<script>alert(1)</script>\nForged: line")
        .render();
        assert!(!message.html.contains("<script>"));
        assert!(message.html.contains("&lt;script&gt;"));
        assert!(!message.html.contains("<b>"));
        assert!(
            message
                .text
                .contains("<script>alert(1)</script> Forged: line")
        );
    }
}
