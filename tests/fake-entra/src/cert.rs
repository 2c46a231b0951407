//! Certificates and client assertions.
//!
//! Entra identifies the certificate that signed a client assertion by the `x5t#S256` header
//! (base64url SHA-256 of the certificate's DER), then checks the signature with that
//! certificate's public key. The fake keeps, per registered certificate, exactly those two
//! things.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use sha2::{Digest as _, Sha256};
use x509_cert::der::Decode as _;

/// OID of `rsaEncryption` (PKCS#1), the only key type Entra accepts for client assertions.
const RSA_ENCRYPTION_OID: &str = "1.2.840.113549.1.1.1";

/// A certificate registered on the app: what the token endpoint needs to verify assertions.
#[derive(Clone)]
pub(crate) struct RegisteredCert {
    /// base64url-no-pad SHA-256 of the certificate DER: the `x5t#S256` a client must send.
    pub(crate) x5t_s256: String,
    pub(crate) key: DecodingKey,
}

impl std::fmt::Debug for RegisteredCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisteredCert")
            .field("x5t_s256", &self.x5t_s256)
            .finish_non_exhaustive()
    }
}

/// Returns the decoded DER of the first PEM block with `label` (e.g. `CERTIFICATE`).
///
/// Written by hand because the fixtures hold a certificate *and* its key in one file, and the
/// usual single-block PEM decoders only look at the first block.
pub(crate) fn pem_block_der(pem: &str, label: &str) -> Option<Vec<u8>> {
    let text = pem_block_text(pem, label)?;
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .flat_map(|l| l.chars())
        .filter(|c| !c.is_whitespace())
        .collect();
    STANDARD.decode(body).ok()
}

/// Returns the first PEM block with `label`, armour lines included.
pub(crate) fn pem_block_text(pem: &str, label: &str) -> Option<String> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin)?;
    let stop = pem[start..].find(&end)? + start + end.len();
    Some(format!("{}\n", &pem[start..stop]))
}

/// base64url-no-pad SHA-256 of the certificate found in `pem` (the `x5t#S256` JOSE header).
pub fn x5t_s256(pem: &str) -> Option<String> {
    let der = pem_block_der(pem, "CERTIFICATE")?;
    Some(URL_SAFE_NO_PAD.encode(Sha256::digest(&der)))
}

/// Parses the certificate in `pem` (which may also hold a private key) into what the token
/// endpoint needs. Only RSA keys are accepted, as in Entra.
pub(crate) fn parse_certificate(pem: &str) -> Result<RegisteredCert, String> {
    let der = pem_block_der(pem, "CERTIFICATE")
        .ok_or_else(|| "no -----BEGIN CERTIFICATE----- block found".to_owned())?;
    let cert =
        x509_cert::Certificate::from_der(&der).map_err(|e| format!("bad certificate DER: {e}"))?;
    let spki = cert.tbs_certificate().subject_public_key_info();
    if spki.algorithm.oid.to_string() != RSA_ENCRYPTION_OID {
        return Err(format!(
            "certificate key is not RSA (algorithm {})",
            spki.algorithm.oid
        ));
    }
    // The SPKI bit string of an RSA key is the PKCS#1 RSAPublicKey DER, which is exactly
    // what `DecodingKey::from_rsa_der` expects.
    let pkcs1 = spki
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| "certificate public key bit string has unused bits".to_owned())?;
    Ok(RegisteredCert {
        x5t_s256: URL_SAFE_NO_PAD.encode(Sha256::digest(&der)),
        key: DecodingKey::from_rsa_der(pkcs1),
    })
}

/// Signs a client assertion the way a confidential client does for Entra's
/// `private_key_jwt` authentication: RS256, header `x5t#S256` of the certificate in `pem`,
/// claims `aud`, `iss` = `sub` = `client_id`, a fresh `jti`, `iat` = `nbf` = now and
/// `exp` = now + `lifetime_secs` (negative gives an already expired assertion).
///
/// `pem` must contain both the certificate and its PKCS#8 (or PKCS#1) private key, like the
/// fixtures [`crate::TEST_CERT_PEM`] and [`crate::OTHER_CERT_PEM`].
///
/// # Panics
/// If `pem` lacks the certificate or an RSA private key: this is a test helper, and a broken
/// fixture should fail the test loudly.
pub fn sign_client_assertion(
    pem: &str,
    client_id: &str,
    audience: &str,
    lifetime_secs: i64,
) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = serde_json::json!({
        "aud": audience,
        "iss": client_id,
        "sub": client_id,
        "jti": uuid::Uuid::new_v4().to_string(),
        "iat": now,
        "nbf": now,
        "exp": now + lifetime_secs,
    });
    sign_jwt(pem, pem, Algorithm::RS256, &claims)
}

/// Signs arbitrary `claims` with the private key in `key_pem`, announcing the certificate of
/// `x5t_cert_pem` in `x5t#S256`. Lets tests build deliberately wrong assertions.
///
/// # Panics
/// As [`sign_client_assertion`].
pub fn sign_jwt(
    key_pem: &str,
    x5t_cert_pem: &str,
    alg: Algorithm,
    claims: &serde_json::Value,
) -> String {
    let key_text = pem_block_text(key_pem, "PRIVATE KEY")
        .or_else(|| pem_block_text(key_pem, "RSA PRIVATE KEY"))
        .unwrap_or_else(|| panic!("sign_jwt: no private key block in the PEM"));
    let key = EncodingKey::from_rsa_pem(key_text.as_bytes())
        .unwrap_or_else(|e| panic!("sign_jwt: unusable RSA private key: {e}"));
    let mut header = Header::new(alg);
    header.x5t_s256 = Some(
        x5t_s256(x5t_cert_pem)
            .unwrap_or_else(|| panic!("sign_jwt: no certificate block in the PEM")),
    );
    jsonwebtoken::encode(&header, claims, &key)
        .unwrap_or_else(|e| panic!("sign_jwt: signing failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprint_matches_openssl() {
        // `openssl x509 -in fixtures/remediation-app.pem -outform DER | openssl dgst -sha256 -binary | base64url`
        assert_eq!(
            x5t_s256(crate::TEST_CERT_PEM).as_deref(),
            Some("7hAomJCzSFsqnX-CSVCB-JG0UldBiI7CnkVR5SGr_3U")
        );
    }

    #[test]
    fn certificate_is_found_after_or_before_the_key() {
        let cert = pem_block_text(crate::TEST_CERT_PEM, "CERTIFICATE").unwrap();
        let key = pem_block_text(crate::TEST_CERT_PEM, "PRIVATE KEY").unwrap();
        let swapped = format!("{key}{cert}");
        let a = parse_certificate(crate::TEST_CERT_PEM).unwrap();
        let b = parse_certificate(&swapped).unwrap();
        assert_eq!(a.x5t_s256, b.x5t_s256);
        assert!(parse_certificate(&key).is_err());
    }
}
