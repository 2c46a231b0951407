//! Whether an analyst may act at all.

use std::str::FromStr;

use serde::Serialize;

use super::InvalidValue;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AnalystStatus {
    Active,
    Disabled,
}

impl AnalystStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AnalystStatus::Active => "active",
            AnalystStatus::Disabled => "disabled",
        }
    }
}

impl FromStr for AnalystStatus {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        match s {
            "active" => Ok(AnalystStatus::Active),
            "disabled" => Ok(AnalystStatus::Disabled),
            other => Err(InvalidValue::Stored(format!(
                "stored analyst status `{other}`"
            ))),
        }
    }
}
