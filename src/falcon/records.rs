//! Detections as stored and listed, defined with the other values every layer shares
//! (`domain::detection`).

pub use crate::domain::detection::{DetectionFilter, DetectionRecord, DetectionState};
