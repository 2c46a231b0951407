//! Falcon detections: authenticated webhook intake, dedupe, the auto-disable policy and the
//! approval queue.

pub mod intake;
pub mod payload;
pub mod records;
pub mod signature;
