//! Bearer JWTs sent to the API: the provider's ID tokens or JWT access tokens, checked with
//! `jsonwebtoken` against the key set discovery fetched. Only asymmetric signatures by a key
//! the provider publishes are accepted, never `alg: none` nor HMAC.

use jsonwebtoken::jwk::{AlgorithmParameters, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};

use super::claims::{Claims, authorized_party, identity};
use super::discovery::Keys;
use super::{LEEWAY_SECS, OidcProvider, TokenRefusal};

/// The `typ` values of a token meant as a credential; other JWTs the provider signs (logout
/// tokens, say) are not.
const CREDENTIAL_TYPES: [&str; 4] = ["jwt", "at+jwt", "application/jwt", "application/at+jwt"];

impl OidcProvider {
    /// The identity (see the module documentation) of a bearer JWT this provider issued for
    /// killswitch: signed by a key it publishes (the key set is fetched again, rate-limited, for
    /// an unknown `kid`), `iss` the provider, `aud` the client id or `oidc.audience` (and with
    /// several audiences, `azp` the client id), and within `exp` and `nbf` give or take a minute.
    pub async fn verify_bearer(&self, token: &str) -> Result<String, TokenRefusal> {
        let header = jsonwebtoken::decode_header(token).map_err(TokenRefusal::NotAJwt)?;
        accepted_header(&header)?;
        let found = self
            .discovered()
            .await
            .map_err(TokenRefusal::ProviderUnavailable)?;
        let mut keys = found.keys();
        if candidates(&keys, &header).next().is_none() {
            keys = self
                .refresh_keys(&found)
                .await
                .map_err(TokenRefusal::KeySetUnavailable)?;
        }
        let validation = self.validation(header.alg, found.issuer());
        let mut refusal = TokenRefusal::NoMatchingKey {
            kid: header.kid.clone(),
        };
        for key in candidates(&keys, &header) {
            match jsonwebtoken::decode::<Claims>(token, key, &validation) {
                Ok(data) => {
                    authorized_party(&data.claims, &self.client_id)?;
                    return identity(&data.claims, &self.identity_claim);
                }
                // Without a `kid`, several keys may fit; try the next.
                Err(e) if *e.kind() == jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                    refusal = TokenRefusal::BadSignature;
                }
                Err(e) => return Err(refusal_for(e)),
            }
        }
        Err(refusal)
    }

    /// The provider as issuer, killswitch as audience, and a minute of clock skew.
    fn validation(&self, alg: Algorithm, issuer: &str) -> Validation {
        let mut validation = Validation::new(alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_issuer(&[issuer]);
        validation.set_audience(&self.audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation
    }
}

/// Refuses, before any key is looked at, a token signed with a shared secret or typed as
/// something other than a credential.
fn accepted_header(header: &Header) -> Result<(), TokenRefusal> {
    if !asymmetric(header.alg) {
        return Err(TokenRefusal::SharedSecretAlgorithm(header.alg));
    }
    if let Some(typ) = header.typ.as_deref()
        && !CREDENTIAL_TYPES.contains(&typ.to_ascii_lowercase().as_str())
    {
        return Err(TokenRefusal::NotACredential(typ.to_owned()));
    }
    Ok(())
}

fn asymmetric(alg: Algorithm) -> bool {
    !matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

/// Published keys that may have signed a token with this header: the same `kid` (when the token
/// names one), meant for signatures, of the algorithm's key type and, if the key names an
/// algorithm, that one.
fn candidates<'k>(
    keys: &'k Keys,
    header: &'k Header,
) -> impl Iterator<Item = &'k DecodingKey> + 'k {
    let alg = format!("{:?}", header.alg);
    keys.jwt
        .iter()
        .filter(move |(jwk, _)| {
            let kid_fits = match &header.kid {
                Some(kid) => jwk.common.key_id.as_deref() == Some(kid.as_str()),
                None => true,
            };
            let use_fits = !matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption));
            let alg_fits = jwk
                .common
                .key_algorithm
                .is_none_or(|named| named.to_string() == alg);
            let type_fits = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => alg.starts_with("RS") || alg.starts_with("PS"),
                AlgorithmParameters::EllipticCurve(_) => alg.starts_with("ES"),
                AlgorithmParameters::OctetKeyPair(_) => alg == "EdDSA",
                _ => false,
            };
            kid_fits && use_fits && alg_fits && type_fits
        })
        .map(|(_, key)| key)
}

/// The refusal for a check `jsonwebtoken` failed, named by the check.
fn refusal_for(error: jsonwebtoken::errors::Error) -> TokenRefusal {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::ExpiredSignature => TokenRefusal::Expired,
        ErrorKind::ImmatureSignature => TokenRefusal::NotYetValid,
        ErrorKind::InvalidIssuer => TokenRefusal::OtherIssuer,
        ErrorKind::InvalidAudience => TokenRefusal::OtherAudience,
        ErrorKind::InvalidSignature => TokenRefusal::BadSignature,
        ErrorKind::MissingRequiredClaim(claim) => TokenRefusal::MissingClaim(claim.clone()),
        _ => TokenRefusal::Invalid(error),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use serde_json::{Value, json};
    use url::Url;

    use super::super::test_provider::*;
    use super::super::{OidcProvider, TokenRefusal};

    #[tokio::test]
    async fn a_token_signed_by_a_published_key_yields_its_verified_email_and_never_the_subject() {
        let stub = stub(json!({"keys": [jwk(PEM, "k1")]})).await;
        let oidc = provider(&stub.issuer, None).await;
        let token = sign(&claims_for(&stub), "k1", PEM);
        assert_eq!(
            oidc.verify_bearer(&token).await.ok(),
            Some("night.shift@provider.example".to_owned())
        );
        // Without an e-mail, nothing: an e-mail-shaped subject is not taken for one.
        let mut claims = claims_for(&stub);
        claims.as_object_mut().map(|c| c.remove("email"));
        claims["sub"] = json!("night.shift@provider.example");
        let refused = oidc.verify_bearer(&sign(&claims, "k1", PEM)).await;
        assert!(refused.is_err_and(|r| r.to_string().contains("`email`")));
        // Without `email_verified`, the e-mail is not taken either.
        let mut claims = claims_for(&stub);
        claims.as_object_mut().map(|c| c.remove("email_verified"));
        let refused = oidc.verify_bearer(&sign(&claims, "k1", PEM)).await;
        assert!(refused.is_err_and(|r| r.to_string().contains("not verified")));
    }

    #[tokio::test]
    async fn another_identity_claim_is_trusted_as_the_provider_sends_it() {
        let stub = stub(json!({"keys": [jwk(PEM, "k1")]})).await;
        let mut settings = settings(&stub.issuer, None);
        settings.identity_claim = "preferred_username".to_owned();
        let public = Url::parse("https://killswitch.example").unwrap_or_else(|e| panic!("{e}"));
        let oidc = OidcProvider::discover(&settings, &public, Duration::from_secs(3600))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut claims = claims_for(&stub);
        let object = claims
            .as_object_mut()
            .unwrap_or_else(|| panic!("an object"));
        object.remove("email");
        object.remove("email_verified");
        object.insert(
            "preferred_username".into(),
            json!("night.shift@provider.example"),
        );
        assert_eq!(
            oidc.verify_bearer(&sign(&claims, "k1", PEM)).await.ok(),
            Some("night.shift@provider.example".to_owned())
        );
        object_without(&mut claims, "preferred_username");
        assert!(oidc.verify_bearer(&sign(&claims, "k1", PEM)).await.is_err());
    }

    /// Why a token was refused, as logs and problem details say it; empty if it was accepted.
    fn reason(verified: Result<String, TokenRefusal>) -> String {
        verified.err().map(|e| e.to_string()).unwrap_or_default()
    }

    fn object_without(claims: &mut Value, name: &str) {
        claims.as_object_mut().map(|c| c.remove(name));
    }

    #[tokio::test]
    async fn expiry_and_not_before_allow_a_minute_of_skew() {
        let stub = stub(json!({"keys": [jwk(PEM, "k1")]})).await;
        let oidc = provider(&stub.issuer, None).await;
        let with = |field: &str, value: i64| {
            let mut claims = claims_for(&stub);
            claims[field] = json!(value);
            sign(&claims, "k1", PEM)
        };
        assert!(oidc.verify_bearer(&with("exp", now() - 30)).await.is_ok());
        let expired = oidc.verify_bearer(&with("exp", now() - 90)).await;
        assert_eq!(reason(expired), "the token has expired");
        assert!(oidc.verify_bearer(&with("nbf", now() + 30)).await.is_ok());
        let early = oidc.verify_bearer(&with("nbf", now() + 90)).await;
        assert_eq!(reason(early), "the token is not valid yet (nbf)");
    }

    #[tokio::test]
    async fn issuer_audience_and_required_claims_are_checked() {
        let stub = stub(json!({"keys": [jwk(PEM, "k1")]})).await;
        let oidc = provider(&stub.issuer, Some("api://killswitch")).await;
        let with = |field: &str, value: Value| {
            let mut claims = claims_for(&stub);
            claims[field] = value;
            sign(&claims, "k1", PEM)
        };
        assert!(reason(oidc.verify_bearer(&with("iss", json!(ISSUER))).await).contains("issuer"));
        assert!(
            reason(oidc.verify_bearer(&with("aud", json!("other-app"))).await).contains("audience")
        );
        // Several audiences: only when killswitch is the authorized party.
        let refused_azp = |r: Result<String, TokenRefusal>| reason(r).contains("azp");
        assert!(refused_azp(
            oidc.verify_bearer(&with("aud", json!(["other-app", CLIENT])))
                .await
        ));
        let mut several = claims_for(&stub);
        several["aud"] = json!(["other-app", CLIENT]);
        several["azp"] = json!("other-app");
        assert!(refused_azp(
            oidc.verify_bearer(&sign(&several, "k1", PEM)).await
        ));
        several["azp"] = json!(CLIENT);
        assert!(oidc.verify_bearer(&sign(&several, "k1", PEM)).await.is_ok());
        assert!(
            oidc.verify_bearer(&with("aud", json!("api://killswitch")))
                .await
                .is_ok()
        );
        let mut no_exp = claims_for(&stub);
        no_exp.as_object_mut().map(|c| c.remove("exp"));
        assert!(reason(oidc.verify_bearer(&sign(&no_exp, "k1", PEM)).await).contains("exp"));
        let unverified = oidc
            .verify_bearer(&with("email_verified", json!(false)))
            .await;
        assert!(reason(unverified).contains("not verified"));
        assert!(
            oidc.verify_bearer(&with("email_verified", json!("true")))
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn forged_tampered_unsigned_and_hmac_tokens_are_refused() {
        let stub = stub(json!({"keys": [jwk(PEM, "k1")]})).await;
        let oidc = provider(&stub.issuer, None).await;
        let claims = claims_for(&stub);

        // Signed with a key the provider does not publish, under a published kid.
        let forged = sign(&claims, "k1", OTHER_PEM);
        assert!(reason(oidc.verify_bearer(&forged).await).contains("signature"));

        // One character of the signature changed.
        let good = sign(&claims, "k1", PEM);
        let (head, signature) = good.rsplit_once('.').unwrap_or_default();
        let mut bytes = signature.as_bytes().to_vec();
        let middle = bytes.len() / 2;
        bytes[middle] = if bytes[middle] == b'A' { b'B' } else { b'A' };
        let tampered = format!("{head}.{}", String::from_utf8(bytes).unwrap_or_default());
        assert!(oidc.verify_bearer(&tampered).await.is_err());

        // The payload changed under the original signature.
        let (_, payload, _) = {
            let mut parts = good.split('.');
            (parts.next(), parts.next(), parts.next())
        };
        let mut other = claims.clone();
        other["email"] = json!("admin@provider.example");
        let forged_payload = sign(&other, "k1", PEM);
        let swapped = good.replace(
            payload.unwrap_or_default(),
            forged_payload.split('.').nth(1).unwrap_or_default(),
        );
        assert!(reason(oidc.verify_bearer(&swapped).await).contains("signature"));

        // alg: none, with and without a signature.
        use base64::Engine;
        let b64 =
            |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let none = format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "JWT"})),
            b64(&claims)
        );
        assert!(oidc.verify_bearer(&none).await.is_err());

        // HMAC, even with the client secret as the key.
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k1".to_owned());
        let hmac = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(b"s3cret"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(reason(oidc.verify_bearer(&hmac).await).contains("not accepted"));

        // Not a JWT at all, and a JWT of a type meant for something else.
        assert!(oidc.verify_bearer("not-a-jwt").await.is_err());
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("k1".to_owned());
        header.typ = Some("logout+jwt".to_owned());
        let logout = jsonwebtoken::encode(&header, &claims, &encoding_key(PEM))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(reason(oidc.verify_bearer(&logout).await).contains("type"));
    }
}
