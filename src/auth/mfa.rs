//! TOTP (RFC 6238) as every authenticator app speaks it: SHA-1, 6 digits, 30-second steps.
//!
//! A code is accepted during its own step, the step before and the step after (`skew` 1): from
//! 30 seconds before its step begins until 60 seconds after, a 90-second window that tolerates
//! clock drift and a slow hand. Each step is accepted at most once per analyst (the store's
//! atomic update), so a code seen over a shoulder or in a log is useless once used.

use qrcode::QrCode;
use qrcode::render::unicode;
use totp_rs::{Algorithm, Builder, Totp};

use crate::error::{Error, Result};
use crate::secrets::random_bytes;

pub const ISSUER: &str = "killswitch";
pub const STEP_SECS: u64 = 30;
pub const DIGITS: u8 = 6;
pub const SKEW_STEPS: u16 = 1;
/// 160 bits, as RFC 4226 recommends.
pub const SECRET_BYTES: usize = 20;

pub fn new_secret() -> Result<[u8; SECRET_BYTES]> {
    random_bytes()
}

fn totp(secret: &[u8], account: &str) -> Result<Totp> {
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(DIGITS)
        .with_skew(SKEW_STEPS)
        .with_step_duration(STEP_SECS)
        .with_secret(secret)
        .with_issuer(Some(ISSUER))
        .with_account_name(account)
        .build()
        .map_err(|e| Error::Internal(format!("TOTP parameters rejected: {e}")))
}

/// The `otpauth://` URI an authenticator app enrolls from.
/// The parameters are spelt out even where they are the defaults: some authenticator apps
/// misread an URI that leaves them implicit.
pub fn enrollment_uri(secret: &[u8], email: &str) -> Result<String> {
    let mut uri = totp(secret, email)?
        .to_url()
        .map_err(|e| Error::Internal(format!("cannot build the enrollment URI: {e}")))?;
    for (name, value) in [("algorithm", "SHA1"), ("digits", "6"), ("period", "30")] {
        if !uri.contains(&format!("{name}=")) {
            uri.push_str(&format!("&{name}={value}"));
        }
    }
    Ok(uri)
}

/// The URI as a QR code drawn with Unicode half blocks, for a terminal.
pub fn terminal_qr(uri: &str) -> Result<String> {
    let code = QrCode::new(uri.as_bytes())
        .map_err(|e| Error::Internal(format!("cannot draw the QR code: {e}")))?;
    Ok(code
        .render::<unicode::Dense1x2>()
        .dark_color(unicode::Dense1x2::Light)
        .light_color(unicode::Dense1x2::Dark)
        .build())
}

/// The URI as a QR code in SVG, for a page: dark modules on a light ground whatever the
/// page's theme, as authenticator apps' cameras expect, with the quiet zone they need.
pub fn svg_qr(uri: &str) -> Result<String> {
    let code = QrCode::new(uri.as_bytes())
        .map_err(|e| Error::Internal(format!("cannot draw the QR code: {e}")))?;
    let svg = code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(240, 240)
        .dark_color(qrcode::render::svg::Color("#000000"))
        .light_color(qrcode::render::svg::Color("#ffffff"))
        .quiet_zone(true)
        .build();
    // Inline in HTML: no XML declaration, and named for screen readers.
    let start = svg.find("<svg").unwrap_or(0);
    Ok(svg[start..].replacen(
        "<svg",
        r#"<svg role="img" aria-label="QR code for your authenticator app""#,
        1,
    ))
}

/// The time step whose code `code` is, if it is valid at `unix_secs` (constant-time compare).
pub fn matching_step(secret: &[u8], code: &str, unix_secs: u64) -> Option<u64> {
    let code = code.trim();
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    totp(secret, "check").ok()?.check(code, unix_secs)
}

/// The code for `unix_secs` (tests and the README walkthrough's helper).
pub fn code_at(secret: &[u8], unix_secs: u64) -> Result<String> {
    Ok(totp(secret, "code")?.generate(unix_secs).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B, SHA-1 rows: the 20-byte secret "12345678901234567890", 8-digit
    /// codes; our 6-digit codes are their last six digits (RFC 4226 truncation).
    #[test]
    fn rfc_6238_appendix_b_vectors() {
        let secret = b"12345678901234567890";
        for (time, eight_digits) in [
            (59u64, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ] {
            assert_eq!(
                code_at(secret, time).unwrap(),
                eight_digits[2..],
                "T = {time}"
            );
            let full = Builder::new()
                .with_algorithm(Algorithm::SHA1)
                .with_digits(8)
                .with_step_duration(30)
                .with_secret(&secret[..])
                .build_noncompliant();
            assert_eq!(
                full.generate(time).to_string(),
                eight_digits,
                "T = {time}, 8 digits"
            );
        }
    }

    #[test]
    fn the_window_is_the_step_before_its_own_and_the_step_after() {
        let secret = new_secret().unwrap();
        let start = 1_700_000_010 / STEP_SECS * STEP_SECS; // the first second of a step
        let code = code_at(&secret, start).unwrap();
        for offset in -90i64..=90 {
            let at = (start as i64 + offset) as u64;
            let accepted = matching_step(&secret, &code, at).is_some();
            let expected = (-30..60).contains(&offset);
            assert_eq!(accepted, expected, "offset {offset:+} s");
        }
        assert_eq!(
            matching_step(&secret, &code, start),
            Some(start / STEP_SECS)
        );
    }

    #[test]
    fn malformed_codes_never_match() {
        let secret = new_secret().unwrap();
        for bad in ["", "12345", "1234567", "12a456", "１２３４５６"] {
            assert_eq!(matching_step(&secret, bad, 1_700_000_000), None, "{bad:?}");
        }
    }

    #[test]
    fn enrollment_uri_names_issuer_and_parameters() {
        let uri = enrollment_uri(&[1u8; 20], "night.shift@provider.example").unwrap();
        assert!(
            uri.starts_with("otpauth://totp/killswitch:night.shift%40provider.example?"),
            "{uri}"
        );
        for part in [
            "issuer=killswitch",
            "digits=6",
            "period=30",
            "algorithm=SHA1",
            "secret=",
        ] {
            assert!(uri.contains(part), "{uri} lacks {part}");
        }
        assert!(terminal_qr(&uri).unwrap().lines().count() > 10);
    }
}
