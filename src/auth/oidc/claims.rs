//! Whom a verified token names, the same for the console's ID tokens and the API's bearer
//! JWTs: one rule, so that signing in and calling the API can never disagree on who it is.

use super::TokenRefusal;

/// A verified token's claims, as JSON.
pub(super) type Claims = serde_json::Map<String, serde_json::Value>;

/// Some providers send `email_verified` as the string "true"; that is as good as the boolean.
fn truthy(value: &serde_json::Value) -> Option<bool> {
    match value {
        serde_json::Value::Bool(b) => Some(*b),
        serde_json::Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        serde_json::Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

/// A token meant for several audiences must have been issued to killswitch (`azp`), or any of
/// those audiences could replay it here (OpenID Connect Core 3.1.3.7, steps 4 and 5).
pub(super) fn authorized_party(claims: &Claims, client_id: &str) -> Result<(), TokenRefusal> {
    let several = matches!(claims.get("aud"), Some(serde_json::Value::Array(a)) if a.len() > 1);
    if !several {
        return Ok(());
    }
    match claims.get("azp").and_then(serde_json::Value::as_str) {
        Some(azp) if azp == client_id => Ok(()),
        Some(_) => Err(TokenRefusal::IssuedToAnotherParty),
        None => Err(TokenRefusal::NoAuthorizedParty),
    }
}

/// Who a verified token names: the `identity_claim`; `email` only when `email_verified` is
/// true. Never the subject in its place. Refusal reasons do not repeat the claim's value.
pub(super) fn identity(claims: &Claims, identity_claim: &str) -> Result<String, TokenRefusal> {
    let value = claims
        .get(identity_claim)
        .and_then(serde_json::Value::as_str)
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| TokenRefusal::MissingClaim(identity_claim.to_owned()))?;
    if identity_claim == "email" {
        match claims.get("email_verified").and_then(truthy) {
            Some(true) => {}
            Some(false) => return Err(TokenRefusal::EmailNotVerified),
            None => return Err(TokenRefusal::EmailVerificationMissing),
        }
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn the_identity_is_the_configured_claim_and_a_verified_email_at_that() {
        let claims = |v: Value| v.as_object().cloned().unwrap_or_default();
        let verified = claims(json!({"sub": "s", "email": "a@b.example", "email_verified": true}));
        assert_eq!(
            identity(&verified, "email").ok(),
            Some("a@b.example".to_owned())
        );
        for unverified in [
            json!({"sub": "s", "email": "a@b.example", "email_verified": false}),
            json!({"sub": "s", "email": "a@b.example"}),
            json!({"sub": "a@b.example"}),
        ] {
            assert!(identity(&claims(unverified), "email").is_err());
        }
        let entra = claims(json!({"sub": "s", "preferred_username": "a@b.example"}));
        assert_eq!(
            identity(&entra, "preferred_username").ok(),
            Some("a@b.example".to_owned())
        );
        let several = |azp: Option<&str>| {
            let mut c = claims(json!({"aud": ["killswitch", "other"]}));
            if let Some(azp) = azp {
                c.insert("azp".into(), json!(azp));
            }
            authorized_party(&c, "killswitch")
        };
        assert!(several(None).is_err());
        assert!(several(Some("other")).is_err());
        assert!(several(Some("killswitch")).is_ok());
        assert!(
            authorized_party(
                &claims(json!({"aud": "killswitch", "azp": "cli"})),
                "killswitch"
            )
            .is_ok()
        );
    }
}
