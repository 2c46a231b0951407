//! Where a newest-first list stopped: the time and id of the last row shown. The next page is
//! what comes strictly after it in (time, id) order, so rows with equal times are neither
//! skipped nor repeated, and rows added meanwhile do not shift the pages.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use uuid::Uuid;

use super::InvalidValue;
use crate::time::{Timestamp, is_canonical_text};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListCursor {
    pub time: Timestamp,
    pub id: Uuid,
}

impl ListCursor {
    pub fn new(time: Timestamp, id: Uuid) -> ListCursor {
        ListCursor { time, id }
    }
}

/// Opaque in a URL (base64url of `time/id`), so nobody builds on its layout; read back only
/// when it is exactly what [`fmt::Display`] writes.
impl fmt::Display for ListCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(format!("{}/{}", self.time, self.id)))
    }
}

impl FromStr for ListCursor {
    type Err = InvalidValue;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || {
            InvalidValue::Input(
                "the page position `before` is not one killswitch wrote; start again from the newest page"
                    .to_owned(),
            )
        };
        let decoded = URL_SAFE_NO_PAD.decode(text).map_err(|_| invalid())?;
        let decoded = String::from_utf8(decoded).map_err(|_| invalid())?;
        let (time, id) = decoded.split_once('/').ok_or_else(invalid)?;
        if !is_canonical_text(time) {
            return Err(invalid());
        }
        let time: Timestamp = time.parse().map_err(|_| invalid())?;
        let id = Uuid::parse_str(id).map_err(|_| invalid())?;
        let cursor = ListCursor { time, id };
        // One spelling per position: anything else was not written here.
        if cursor.to_string() != text {
            return Err(invalid());
        }
        Ok(cursor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_and_nothing_else_does() {
        let cursor = ListCursor::new(
            "2026-11-27T09:40:05.123456Z".parse().unwrap(),
            Uuid::from_u128(7),
        );
        assert_eq!(cursor.to_string().parse::<ListCursor>(), Ok(cursor));
        for bad in [
            "",
            "not base64!",
            &URL_SAFE_NO_PAD.encode("2026-11-27T09:40:05Z/00000000-0000-0000-0000-000000000007"),
            &URL_SAFE_NO_PAD.encode("2026-11-27T09:40:05.123456Z/7"),
            &URL_SAFE_NO_PAD.encode("2026-11-27T09:40:05.123456Z"),
            &URL_SAFE_NO_PAD.encode([0xff, 0xfe]),
        ] {
            assert!(bad.parse::<ListCursor>().is_err(), "{bad}");
        }
    }
}
