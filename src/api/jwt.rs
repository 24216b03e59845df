//! Public access tokens: HS256 JWTs as the Trigger.dev SDK signs them (`jose`, header
//! `{"alg":"HS256"}`, issuer `https://id.trigger.dev`, audience `https://api.trigger.dev`,
//! signed with the secret key's UTF-8 bytes), and as kiln signs the ones it hands out with a
//! trigger, a batch or a wait token. Only encoding, signing and checking live here; which key may
//! have signed a token and what its scopes allow are the caller's.
//!
//! A token is never trusted before its signature is checked: [`Unverified`] exposes only what is
//! needed to find the key (`sub`, `keyId`), and [`Unverified::verify`] gives the claims.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Map, Value, json};

use crate::keys::{hmac_sha256, same};

/// The issuer and audience the SDK puts in every token.
pub(super) const ISSUER: &str = "https://id.trigger.dev";
pub(super) const AUDIENCE: &str = "https://api.trigger.dev";

/// Whether a bearer looks like a JWT (three base64url segments) rather than a secret key.
pub(super) fn looks_like_jwt(bearer: &str) -> bool {
    bearer.starts_with("eyJ") && bearer.split('.').count() == 3
}

/// Why a token is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Refusal {
    /// Malformed, another algorithm, a bad signature, another issuer or audience.
    Invalid(&'static str),
    Expired,
}

/// A token parsed but not yet checked.
pub(super) struct Unverified<'a> {
    signed: &'a str,
    signature: Vec<u8>,
    claims: Map<String, Value>,
}

impl<'a> Unverified<'a> {
    pub(super) fn parse(token: &'a str) -> Result<Unverified<'a>, Refusal> {
        let invalid = Refusal::Invalid;
        let (signed, signature) = token.rsplit_once('.').ok_or(invalid("not a JWT"))?;
        let (header, payload) = signed.split_once('.').ok_or(invalid("not a JWT"))?;
        let decode = |part: &str| B64.decode(part).map_err(|_| invalid("not base64url"));
        let header: Value =
            serde_json::from_slice(&decode(header)?).map_err(|_| invalid("header not JSON"))?;
        if header.get("alg").and_then(Value::as_str) != Some("HS256") {
            return Err(invalid("only HS256 tokens are taken"));
        }
        let claims = match serde_json::from_slice(&decode(payload)?) {
            Ok(Value::Object(claims)) => claims,
            _ => return Err(invalid("claims not a JSON object")),
        };
        Ok(Unverified {
            signed,
            signature: decode(signature)?,
            claims,
        })
    }

    /// The environment the token names (`sub`), to find its keys by.
    pub(super) fn subject(&self) -> Option<&str> {
        self.claims.get("sub").and_then(Value::as_str)
    }

    /// The key the token names (`keyId`, which kiln's claims endpoint gives the SDK).
    pub(super) fn key_id(&self) -> Option<&str> {
        self.claims.get("keyId").and_then(Value::as_str)
    }

    /// Whether `secret` signed the token.
    pub(super) fn signed_by(&self, secret: &str) -> bool {
        same(
            &hmac_sha256(secret.as_bytes(), self.signed.as_bytes()),
            &self.signature,
        )
    }

    /// The claims, once the token was signed by `secret`, is kiln's issuer's and audience's, and
    /// has not expired at `now_secs`.
    pub(super) fn verify(self, secret: &str, now_secs: i64) -> Result<Map<String, Value>, Refusal> {
        if !self.signed_by(secret) {
            return Err(Refusal::Invalid("bad signature"));
        }
        let claims = self.claims;
        if claims.get("iss").and_then(Value::as_str) != Some(ISSUER) {
            return Err(Refusal::Invalid("another issuer"));
        }
        let audience_ok = match claims.get("aud") {
            Some(Value::String(a)) => a == AUDIENCE,
            Some(Value::Array(all)) => all.iter().any(|a| a.as_str() == Some(AUDIENCE)),
            _ => false,
        };
        if !audience_ok {
            return Err(Refusal::Invalid("another audience"));
        }
        match claims.get("exp").and_then(Value::as_f64) {
            Some(exp) if (exp as i64) > now_secs => Ok(claims),
            Some(_) => Err(Refusal::Expired),
            None => Err(Refusal::Invalid("no expiry")),
        }
    }
}

/// Signs `claims` (with kiln's issuer, audience, `iat` and `exp` added) with `secret`.
pub(super) fn sign(
    mut claims: Map<String, Value>,
    secret: &str,
    now_secs: i64,
    ttl_secs: i64,
) -> String {
    claims.insert("iss".into(), json!(ISSUER));
    claims.insert("aud".into(), json!(AUDIENCE));
    claims.insert("iat".into(), json!(now_secs));
    claims.insert("exp".into(), json!(now_secs + ttl_secs));
    let header = B64.encode(br#"{"alg":"HS256"}"#);
    let payload = B64.encode(Value::Object(claims).to_string());
    let signed = format!("{header}.{payload}");
    let signature = B64.encode(hmac_sha256(secret.as_bytes(), signed.as_bytes()));
    format!("{signed}.{signature}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_token_verifies_with_its_key_until_it_expires() {
        let token = sign(
            claims(json!({ "sub": "env_1", "pub": true, "scopes": ["read:runs"] })),
            "k",
            1_000,
            60,
        );
        assert!(looks_like_jwt(&token));
        assert!(!looks_like_jwt("tr_dev_abc"));
        let parsed = Unverified::parse(&token).unwrap();
        assert_eq!(parsed.subject(), Some("env_1"));
        let got = parsed.verify("k", 1_059).unwrap();
        assert_eq!(got["scopes"], json!(["read:runs"]));
        assert_eq!(
            Unverified::parse(&token)
                .unwrap()
                .verify("k", 1_060)
                .unwrap_err(),
            Refusal::Expired
        );
        assert!(matches!(
            Unverified::parse(&token).unwrap().verify("other", 1_000),
            Err(Refusal::Invalid(_))
        ));
    }

    #[test]
    fn altered_claims_and_other_algorithms_are_refused() {
        let token = sign(
            claims(json!({ "sub": "env_1", "scopes": ["read:runs:a"] })),
            "k",
            0,
            60,
        );
        let parts: Vec<&str> = token.split('.').collect();
        let forged = B64.encode(r#"{"sub":"env_1","scopes":["read:runs"],"iss":"https://id.trigger.dev","aud":"https://api.trigger.dev","exp":99}"#);
        let altered = format!("{}.{forged}.{}", parts[0], parts[2]);
        assert!(matches!(
            Unverified::parse(&altered).unwrap().verify("k", 0),
            Err(Refusal::Invalid("bad signature"))
        ));
        let none = format!("{}.{}.", B64.encode(r#"{"alg":"none"}"#), parts[1]);
        assert!(Unverified::parse(&none).is_err());
    }

    #[test]
    fn a_token_jose_signed_as_the_sdk_does_verifies() {
        // `new SignJWT({sub, pub, scopes}).setProtectedHeader({alg: "HS256"}).setIssuer(…)
        // .setAudience(…).setIssuedAt(1700000000).setExpirationTime(1700000900)` with the key
        // "tr_dev_test", as `@trigger.dev/core` 4.8.3 signs.
        let token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJlbnZfMSIsInB1YiI6dHJ1ZSwic2NvcGVzIjpbInJlYWQ6cnVuczpydW5fMSJdLCJpc3MiOiJodHRwczovL2lkLnRyaWdnZXIuZGV2IiwiYXVkIjoiaHR0cHM6Ly9hcGkudHJpZ2dlci5kZXYiLCJpYXQiOjE3MDAwMDAwMDAsImV4cCI6MTcwMDAwMDkwMH0.0v0XcWfArRlLgsMCsyIvB_iVJcSzrpmpjFC4Kgjenas";
        let got = Unverified::parse(token)
            .unwrap()
            .verify("tr_dev_test", 1_700_000_000)
            .unwrap();
        assert_eq!(got["scopes"], json!(["read:runs:run_1"]));
        assert!(
            Unverified::parse(token)
                .unwrap()
                .verify("tr_dev_other", 1_700_000_000)
                .is_err()
        );
    }
}
