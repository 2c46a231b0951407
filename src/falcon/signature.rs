//! Proving a webhook came from the customer's Falcon, on the raw body, before anything parses it.
//!
//! Three ways, tried in this order by what the request carries:
//! - the CrowdStrike Store "Webhook" app: an HMAC-SHA256 signature header (name configurable,
//!   `X-CS-Primary-Signature` by default) and `X-CS-Delivery-Timestamp`; public receivers disagree
//!   on the signed string, so both are supported per customer: `base64(HMAC(secret, body ‖
//!   timestamp))` (the default) or `hex(HMAC(secret, timestamp ‖ body))`;
//! - Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64>` over
//!   `id.timestamp.body`), for other senders; the key is what follows `whsec_` in the secret,
//!   base64-decoded, as the official libraries derive it;
//! - `Authorization: Bearer <secret>`: lower assurance, recorded as such, never auto-disables.
//!
//! The CrowdStrike app and the bearer scheme use the secret as pasted, `whsec_` included. A
//! secret issued before the `whsec_` form is its UTF-8 bytes in all three, as it always was.
//!
//! Signatures are compared in constant time, and a signed request's timestamp must be fresh.

use axum::http::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::time::Timestamp;

pub use crate::domain::detection::{Assurance, SignedString};

pub const TIMESTAMP_HEADER: &str = "x-cs-delivery-timestamp";

/// Why a webhook was refused: the metric label and log line; the sender only gets the status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    MissingCredentials,
    BadSignature,
    MissingTimestamp,
    MalformedTimestamp,
    StaleTimestamp,
    BadToken,
    NoSecret,
    UnknownCustomer,
}

impl Rejection {
    pub fn label(self) -> &'static str {
        match self {
            Rejection::MissingCredentials => "missing_credentials",
            Rejection::BadSignature => "bad_signature",
            Rejection::MissingTimestamp => "missing_timestamp",
            Rejection::MalformedTimestamp => "malformed_timestamp",
            Rejection::StaleTimestamp => "stale_timestamp",
            Rejection::BadToken => "bad_token",
            Rejection::NoSecret => "no_secret",
            Rejection::UnknownCustomer => "unknown_customer",
        }
    }

    /// 400 for a request that is malformed whoever sent it, 401 for failed authentication.
    pub fn status(self) -> u16 {
        match self {
            Rejection::MissingTimestamp | Rejection::MalformedTimestamp => 400,
            _ => 401,
        }
    }
}

/// What a Standard Webhooks secret starts with; the rest is the base64 of the HMAC key.
pub const STANDARD_PREFIX: &str = "whsec_";
/// The key sizes the Standard Webhooks specification allows. A `whsec_` string whose key is
/// outside them is not taken as one: its Standard Webhooks key is then the string as pasted,
/// never a key of a few bytes.
const STANDARD_KEY_BYTES: std::ops::RangeInclusive<usize> = 24..=64;

/// A customer's webhook secret: the string the sender was given, and the key Standard Webhooks
/// derives from it.
pub struct WebhookSecret {
    pasted: Vec<u8>,
    /// `None` for a secret issued before the `whsec_` form: its Standard Webhooks key is the
    /// pasted string itself, as senders were told then. (Those were 64 characters of
    /// URL-safe base64 without padding, which standard base64 never decodes, so one that
    /// happens to start with `whsec_` still lands here.)
    decoded: Option<Vec<u8>>,
}

impl WebhookSecret {
    pub fn new(pasted: Vec<u8>) -> WebhookSecret {
        let decoded = pasted
            .strip_prefix(STANDARD_PREFIX.as_bytes())
            .and_then(|encoded| BASE64.decode(encoded).ok())
            .filter(|key| STANDARD_KEY_BYTES.contains(&key.len()));
        WebhookSecret { pasted, decoded }
    }

    /// A new secret in the Standard Webhooks form: `whsec_` and the base64 of 32 random bytes.
    pub fn generate() -> crate::error::Result<secrecy::SecretString> {
        let key = zeroize::Zeroizing::new(crate::secrets::random_bytes::<32>()?);
        Ok(format!("{STANDARD_PREFIX}{}", BASE64.encode(key.as_slice())).into())
    }

    /// The key the CrowdStrike app signs with, and the bearer token: the string as pasted.
    fn pasted(&self) -> &[u8] {
        &self.pasted
    }

    /// The key a Standard Webhooks sender signs with.
    fn standard_key(&self) -> &[u8] {
        self.decoded.as_deref().unwrap_or(&self.pasted)
    }
}

pub struct Verifier<'a> {
    /// The customer's valid secrets (current, and the previous one during its grace period).
    pub secrets: &'a [WebhookSecret],
    pub signature_header: &'a str,
    pub signed_string: SignedString,
    pub tolerance_secs: i64,
    pub now: Timestamp,
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let Ok(mut mac) = <hmac::Hmac<Sha256>>::new_from_slice(key) else {
        return [0; 32];
    };
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// A timestamp as senders write it: RFC 3339, epoch seconds or epoch milliseconds.
pub fn parse_timestamp(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(n) = text.parse::<i64>() {
        // Milliseconds after 2001-09-09 have 13 digits; seconds will not for centuries.
        return Some(if n.abs() >= 1_000_000_000_000 {
            n / 1000
        } else {
            n
        });
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp())
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

impl Verifier<'_> {
    pub fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<Assurance, Rejection> {
        if self.secrets.is_empty() {
            return Err(Rejection::NoSecret);
        }
        if let Some(signature) = header(headers, self.signature_header) {
            let timestamp = header(headers, TIMESTAMP_HEADER).ok_or(Rejection::MissingTimestamp)?;
            self.fresh(timestamp)?;
            return self
                .crowdstrike(signature, timestamp, body)
                .then_some(Assurance::Signed)
                .ok_or(Rejection::BadSignature);
        }
        if let Some(signatures) = header(headers, "webhook-signature") {
            let id = header(headers, "webhook-id").ok_or(Rejection::MissingCredentials)?;
            let timestamp =
                header(headers, "webhook-timestamp").ok_or(Rejection::MissingTimestamp)?;
            self.fresh(timestamp)?;
            return self
                .standard(id, timestamp, signatures, body)
                .then_some(Assurance::Signed)
                .ok_or(Rejection::BadSignature);
        }
        if let Some(token) =
            header(headers, "authorization").and_then(|v| v.strip_prefix("Bearer "))
        {
            let known = self
                .secrets
                .iter()
                .any(|s| bool::from(s.pasted().ct_eq(token.trim().as_bytes())));
            return known
                .then_some(Assurance::Bearer)
                .ok_or(Rejection::BadToken);
        }
        Err(Rejection::MissingCredentials)
    }

    fn fresh(&self, timestamp: &str) -> Result<(), Rejection> {
        let at = parse_timestamp(timestamp).ok_or(Rejection::MalformedTimestamp)?;
        let now = self.now.as_datetime().timestamp();
        if (now - at).abs() > self.tolerance_secs {
            return Err(Rejection::StaleTimestamp);
        }
        Ok(())
    }

    fn crowdstrike(&self, signature: &str, timestamp: &str, body: &[u8]) -> bool {
        let given = match self.signed_string {
            SignedString::BodyTimestampBase64 => BASE64.decode(signature).ok(),
            SignedString::TimestampBodyHex => const_hex::decode(signature).ok(),
        };
        let Some(given) = given else { return false };
        self.secrets.iter().any(|secret| {
            let expected = match self.signed_string {
                SignedString::BodyTimestampBase64 => {
                    hmac(secret.pasted(), &[body, timestamp.as_bytes()])
                }
                SignedString::TimestampBodyHex => {
                    hmac(secret.pasted(), &[timestamp.as_bytes(), body])
                }
            };
            bool::from(expected.as_slice().ct_eq(&given))
        })
    }

    fn standard(&self, id: &str, timestamp: &str, signatures: &str, body: &[u8]) -> bool {
        let given: Vec<Vec<u8>> = signatures
            .split(' ')
            .filter_map(|s| s.strip_prefix("v1,"))
            .filter_map(|s| BASE64.decode(s).ok())
            .collect();
        self.secrets.iter().any(|secret| {
            let expected = hmac(
                secret.standard_key(),
                &[id.as_bytes(), b".", timestamp.as_bytes(), b".", body],
            );
            given
                .iter()
                .any(|g| bool::from(expected.as_slice().ct_eq(g)))
        })
    }
}

/// What a sender computes, for tests, benchmarks and docs/falcon.md's example.
pub fn sign_crowdstrike(
    secret: &[u8],
    timestamp: &str,
    body: &[u8],
    signed_string: SignedString,
) -> String {
    match signed_string {
        SignedString::BodyTimestampBase64 => {
            BASE64.encode(hmac(secret, &[body, timestamp.as_bytes()]))
        }
        SignedString::TimestampBodyHex => {
            const_hex::encode(hmac(secret, &[timestamp.as_bytes(), body]))
        }
    }
}

/// The HMAC key of a `whsec_` secret we sign outgoing Standard Webhooks with; unlike a
/// customer's intake secret, nothing but the specification's form is accepted.
pub fn standard_key(secret: &str) -> Result<zeroize::Zeroizing<Vec<u8>>, String> {
    secret
        .strip_prefix(STANDARD_PREFIX)
        .and_then(|encoded| BASE64.decode(encoded).ok())
        .filter(|key| STANDARD_KEY_BYTES.contains(&key.len()))
        .map(zeroize::Zeroizing::new)
        .ok_or_else(|| {
            "is not a Standard Webhooks secret (whsec_ and the base64 of 24 to 64 bytes)".to_owned()
        })
}

/// `key` is the HMAC key: for a `whsec_` secret, the base64-decoded part after the prefix.
pub fn sign_standard(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> String {
    format!(
        "v1,{}",
        BASE64.encode(hmac(
            key,
            &[id.as_bytes(), b".", timestamp.as_bytes(), b".", body]
        ))
    )
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-falcon";

    fn bare(secret: &[u8]) -> WebhookSecret {
        WebhookSecret::new(secret.to_vec())
    }

    fn verifier(secrets: &[WebhookSecret], signed_string: SignedString) -> Verifier<'_> {
        Verifier {
            secrets,
            signature_header: "x-cs-primary-signature",
            signed_string,
            tolerance_secs: 300,
            now: "2026-11-27T12:00:00Z".parse().unwrap(),
        }
    }

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn timestamps_in_three_spellings() {
        assert_eq!(parse_timestamp("2026-11-27T12:00:00Z"), Some(1_795_780_800));
        assert_eq!(parse_timestamp("1795780800"), Some(1_795_780_800));
        assert_eq!(parse_timestamp("1795780800123"), Some(1_795_780_800));
        assert_eq!(parse_timestamp("yesterday"), None);
    }

    #[test]
    fn both_crowdstrike_constructions_verify_and_reject_tampering() {
        let secrets = vec![bare(SECRET)];
        let body = br#"{"composite_id":"x"}"#;
        for (variant, ts) in [
            (SignedString::BodyTimestampBase64, "1795780800"),
            (SignedString::TimestampBodyHex, "2026-11-27T11:59:00Z"),
        ] {
            let v = verifier(&secrets, variant);
            let sig = sign_crowdstrike(SECRET, ts, body, variant);
            let good = headers(&[
                ("x-cs-primary-signature", sig.clone()),
                ("x-cs-delivery-timestamp", ts.to_owned()),
            ]);
            assert_eq!(v.verify(&good, body), Ok(Assurance::Signed));
            assert_eq!(
                v.verify(&good, br#"{"composite_id":"y"}"#),
                Err(Rejection::BadSignature)
            );
            let other = verifier(
                &secrets,
                if variant == SignedString::TimestampBodyHex {
                    SignedString::BodyTimestampBase64
                } else {
                    SignedString::TimestampBodyHex
                },
            );
            assert_eq!(
                other.verify(&good, body),
                Err(Rejection::BadSignature),
                "the customer's construction only"
            );
        }
    }

    #[test]
    fn timestamps_must_be_present_well_formed_and_fresh() {
        let secrets = vec![bare(SECRET)];
        let v = verifier(&secrets, SignedString::BodyTimestampBase64);
        let body = b"{}";
        let sig = |ts: &str| sign_crowdstrike(SECRET, ts, body, SignedString::BodyTimestampBase64);
        assert_eq!(
            v.verify(&headers(&[("x-cs-primary-signature", sig("1"))]), body),
            Err(Rejection::MissingTimestamp)
        );
        assert_eq!(
            v.verify(
                &headers(&[
                    ("x-cs-primary-signature", sig("soon")),
                    ("x-cs-delivery-timestamp", "soon".into())
                ]),
                body
            ),
            Err(Rejection::MalformedTimestamp)
        );
        for ts in ["1795780499", "1795781101"] {
            let h = headers(&[
                ("x-cs-primary-signature", sig(ts)),
                ("x-cs-delivery-timestamp", ts.to_owned()),
            ]);
            assert_eq!(v.verify(&h, body), Err(Rejection::StaleTimestamp), "{ts}");
        }
    }

    #[test]
    fn standard_webhooks_and_bearer_tokens() {
        let secrets = vec![bare(b"old-secret-still-in-grace-period-xx"), bare(SECRET)];
        let v = verifier(&secrets, SignedString::BodyTimestampBase64);
        let body = b"{}";
        let sig = sign_standard(SECRET, "msg_1", "1795780800", body);
        let h = headers(&[
            ("webhook-id", "msg_1".into()),
            ("webhook-timestamp", "1795780800".into()),
            ("webhook-signature", format!("v1,AAAA {sig}")),
        ]);
        assert_eq!(v.verify(&h, body), Ok(Assurance::Signed));
        let h = headers(&[
            ("webhook-id", "msg_2".into()),
            ("webhook-timestamp", "1795780800".into()),
            ("webhook-signature", sig),
        ]);
        assert_eq!(
            v.verify(&h, body),
            Err(Rejection::BadSignature),
            "the id is signed"
        );
        let bearer = headers(&[(
            "authorization",
            format!("Bearer {}", String::from_utf8_lossy(SECRET)),
        )]);
        assert_eq!(v.verify(&bearer, body), Ok(Assurance::Bearer));
        assert_eq!(
            v.verify(&headers(&[("authorization", "Bearer guess".into())]), body),
            Err(Rejection::BadToken)
        );
        assert_eq!(
            v.verify(&HeaderMap::new(), body),
            Err(Rejection::MissingCredentials)
        );
        assert_eq!(
            verifier(&[], SignedString::BodyTimestampBase64).verify(&bearer, body),
            Err(Rejection::NoSecret)
        );
    }

    fn standard_headers(key: &[u8], body: &[u8]) -> HeaderMap {
        headers(&[
            ("webhook-id", "msg_1".into()),
            ("webhook-timestamp", "1795780800".into()),
            (
                "webhook-signature",
                sign_standard(key, "msg_1", "1795780800", body),
            ),
        ])
    }

    #[test]
    fn a_whsec_string_with_a_key_outside_the_standard_sizes_is_not_read_as_one() {
        for key in [vec![7u8; 4], vec![7u8; 23], vec![7u8; 65]] {
            let pasted = format!("{STANDARD_PREFIX}{}", BASE64.encode(&key));
            let secret = WebhookSecret::new(pasted.clone().into_bytes());
            assert_eq!(
                secret.standard_key(),
                pasted.as_bytes(),
                "{} bytes",
                key.len()
            );
        }
        let fitting = format!("{STANDARD_PREFIX}{}", BASE64.encode([7u8; 24]));
        assert_eq!(
            WebhookSecret::new(fitting.into_bytes()).standard_key(),
            [7u8; 24]
        );
    }

    #[test]
    fn a_whsec_secret_is_its_decoded_key_for_standard_webhooks_and_as_pasted_otherwise() {
        let issued =
            secrecy::ExposeSecret::expose_secret(&WebhookSecret::generate().unwrap()).to_owned();
        let key = BASE64
            .decode(issued.strip_prefix(STANDARD_PREFIX).unwrap())
            .unwrap();
        assert!(key.len() >= 24, "{issued}");
        let secrets = vec![WebhookSecret::new(issued.clone().into_bytes())];
        let v = verifier(&secrets, SignedString::BodyTimestampBase64);
        let body = b"{}";
        assert_eq!(
            v.verify(&standard_headers(&key, body), body),
            Ok(Assurance::Signed)
        );
        assert_eq!(
            v.verify(&standard_headers(issued.as_bytes(), body), body),
            Err(Rejection::BadSignature),
            "the official libraries decode the key; the pasted string is not it"
        );
        let ts = "1795780800";
        let crowdstrike = headers(&[
            (
                "x-cs-primary-signature",
                sign_crowdstrike(
                    issued.as_bytes(),
                    ts,
                    body,
                    SignedString::BodyTimestampBase64,
                ),
            ),
            ("x-cs-delivery-timestamp", ts.to_owned()),
        ]);
        assert_eq!(v.verify(&crowdstrike, body), Ok(Assurance::Signed));
        let bearer = headers(&[("authorization", format!("Bearer {issued}"))]);
        assert_eq!(v.verify(&bearer, body), Ok(Assurance::Bearer));
    }

    #[test]
    fn a_secret_of_the_old_form_is_its_utf8_bytes_even_when_it_starts_like_whsec() {
        // 64 characters of URL-safe base64, as secrets were issued before the whsec_ form.
        let old = b"whsec_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_AbCdEfGhIjKlMnOpQrSt";
        assert_eq!(old.len(), 64);
        let secrets = vec![bare(old)];
        let v = verifier(&secrets, SignedString::BodyTimestampBase64);
        let body = b"{}";
        assert_eq!(
            v.verify(&standard_headers(old, body), body),
            Ok(Assurance::Signed)
        );
    }
}
