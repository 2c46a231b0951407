//! The detection a Falcon Fusion workflow posts, in the template documented in docs/falcon.md,
//! parsed strictly: an unknown field, a missing one or a wrong type is refused with its name.

use serde::Deserialize;

use crate::domain::AccountRef;
pub use crate::domain::detection::Severity;
use crate::error::{Error, Result};

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum SeverityValue {
    Score(u64),
    Name(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Template {
    composite_id: Option<String>,
    detection_id: Option<String>,
    severity: Option<SeverityValue>,
    tactic: Option<String>,
    technique: Option<String>,
    source_account_upn: Option<String>,
    source_account_object_sid: Option<String>,
    source_account_domain: Option<String>,
    falcon_host_link: Option<String>,
    cid: Option<String>,
    timestamp: Option<String>,
}

/// A validated detection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detection {
    pub composite_id: String,
    pub detection_id: Option<String>,
    pub severity: Severity,
    pub tactic: Option<String>,
    pub technique: Option<String>,
    pub account_upn: Option<AccountRef>,
    pub account_sid: Option<String>,
    pub account_domain: Option<String>,
    pub falcon_host_link: Option<String>,
    pub cid: Option<String>,
    pub timestamp: Option<String>,
}

fn text(field: &str, value: Option<String>, max: usize) -> Result<Option<String>> {
    match value {
        None => Ok(None),
        Some(v) if v.trim().is_empty() => Ok(None),
        Some(v) => Ok(crate::domain::one_line_text(field, &v, max).map(Some)?),
    }
}

/// `S-1-5-21-…`: an on-premises security identifier, as Graph's `onPremisesSecurityIdentifier`.
fn sid(value: Option<String>) -> Result<Option<String>> {
    let Some(value) = text("source_account_object_sid", value, 200)? else {
        return Ok(None);
    };
    let mut parts = value.split('-');
    let valid = parts.next() == Some("S")
        && value.split('-').count() >= 3
        && parts.all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if !valid {
        return Err(Error::InvalidInput(
            "`source_account_object_sid` is not a security identifier (S-1-5-21-…)".to_owned(),
        ));
    }
    Ok(Some(value))
}

impl Detection {
    /// Parses a webhook body; the error names the field at fault.
    pub fn parse(body: &[u8]) -> Result<Detection> {
        let mut json = serde_json::Deserializer::from_slice(body);
        let template: Template = serde_path_to_error::deserialize(&mut json).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            Error::InvalidInput(match inner.classify() {
                serde_json::error::Category::Data if path != "." => {
                    format!("`{path}` does not match the template: {inner}")
                }
                serde_json::error::Category::Data => {
                    format!("the detection does not match the template: {inner}")
                }
                _ => format!("the body is not JSON: {inner}"),
            })
        })?;
        let composite_id = text("composite_id", template.composite_id, 500)?.ok_or_else(|| {
            Error::InvalidInput(
                "`composite_id` is missing: Falcon's unique id of the detection".to_owned(),
            )
        })?;
        let severity = match template.severity {
            None => {
                return Err(Error::InvalidInput(
                    "`severity` is missing: a name (low … critical) or a score 0–100".to_owned(),
                ));
            }
            Some(SeverityValue::Score(score)) => Severity::from_score(score).ok_or_else(|| {
                Error::InvalidInput(format!("`severity` {score} is not between 0 and 100"))
            })?,
            Some(SeverityValue::Name(name)) => match name.trim().parse::<u64>() {
                Ok(score) => Severity::from_score(score),
                Err(_) => Severity::from_name(&name),
            }
            .ok_or_else(|| {
                Error::InvalidInput(format!(
                    "`severity` `{name}` is neither low, medium, high, critical nor 0–100"
                ))
            })?,
        };
        let account_upn = text("source_account_upn", template.source_account_upn, 113)?
            .map(|upn| upn.parse::<AccountRef>())
            .transpose()
            .map_err(|_| {
                Error::InvalidInput(
                    "`source_account_upn` is not a userPrincipalName (name@domain)".to_owned(),
                )
            })?;
        let account_sid = sid(template.source_account_object_sid)?;
        if account_upn.is_none() && account_sid.is_none() {
            return Err(Error::InvalidInput(
                "`source_account_upn` and `source_account_object_sid` are both missing: name the account".to_owned(),
            ));
        }
        Ok(Detection {
            composite_id,
            detection_id: text("detection_id", template.detection_id, 500)?,
            severity,
            tactic: text("tactic", template.tactic, 200)?,
            technique: text("technique", template.technique, 200)?,
            account_upn,
            account_sid,
            account_domain: text("source_account_domain", template.source_account_domain, 255)?,
            falcon_host_link: text("falcon_host_link", template.falcon_host_link, 2000)?,
            cid: text("cid", template.cid, 100)?,
            timestamp: text("timestamp", template.timestamp, 64)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(extra: &str) -> Vec<u8> {
        format!(r#"{{"composite_id":"cid:ind:123","severity":"High","source_account_upn":"Bob@Contoso.onmicrosoft.com"{extra}}}"#).into_bytes()
    }

    #[test]
    fn the_template_parses_with_names_or_scores() {
        let d = Detection::parse(&body("")).unwrap();
        assert_eq!(
            (d.severity, d.account_upn.unwrap().to_string()),
            (Severity::High, "bob@contoso.onmicrosoft.com".to_owned())
        );
        for (score, expected) in [
            (95, Severity::Critical),
            (80, Severity::Critical),
            (79, Severity::High),
            (50, Severity::Medium),
            (10, Severity::Low),
        ] {
            let raw = format!(
                r#"{{"composite_id":"x","severity":{score},"source_account_object_sid":"S-1-5-21-1-2-3-1105"}}"#
            );
            assert_eq!(
                Detection::parse(raw.as_bytes()).unwrap().severity,
                expected,
                "{score}"
            );
        }
        assert_eq!(
            Detection::parse(
                br#"{"composite_id":"x","severity":"70","source_account_upn":"a@b.c"}"#
            )
            .unwrap()
            .severity,
            Severity::High
        );
    }

    #[test]
    fn each_fault_names_its_field() {
        for (raw, field) in [
            (&br#"{"severity":"high","source_account_upn":"a@b.c"}"#[..], "composite_id"),
            (br#"{"composite_id":"x","source_account_upn":"a@b.c"}"#, "severity"),
            (br#"{"composite_id":"x","severity":"dire","source_account_upn":"a@b.c"}"#, "severity"),
            (br#"{"composite_id":"x","severity":101,"source_account_upn":"a@b.c"}"#, "severity"),
            (br#"{"composite_id":"x","severity":"high"}"#, "source_account_upn"),
            (br#"{"composite_id":"x","severity":"high","source_account_upn":"nobody"}"#, "source_account_upn"),
            (br#"{"composite_id":"x","severity":"high","source_account_object_sid":"S-1-x"}"#, "source_account_object_sid"),
            (br#"{"composite_id":"x","severity":"high","source_account_upn":"a@b.c","surprise":1}"#, "surprise"),
            (br#"{"composite_id":7,"severity":"high","source_account_upn":"a@b.c"}"#, "composite_id"),
        ] {
            let error = Detection::parse(raw).unwrap_err().to_string();
            assert!(error.contains(field), "{}: {error}", String::from_utf8_lossy(raw));
        }
        assert!(
            Detection::parse(b"{not json")
                .unwrap_err()
                .to_string()
                .contains("not JSON")
        );
    }
}
