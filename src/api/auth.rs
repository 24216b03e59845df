//! Who is calling: [`Authed`] takes an environment's secret key (looked up by its SHA-256
//! digest) and is the only way a secret-key route gets an environment; [`Access`] also takes a
//! public access token (an HS256 JWT the key signed, with scopes) on the routes a browser calls,
//! and each such handler asks [`Access::allow`] for what it touches; [`Admin`] takes only a host
//! admin key.
//!
//! Refusals are Trigger.dev's: 401 for a missing, unknown, revoked or altered credential, an
//! expired token, or a token on a route that takes none; 403 for a token whose scopes do not
//! reach the resource (found first, so a missing one is still a 404).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::jwt::{self, Refusal, Unverified};
use super::scopes::{Resource, Scope, allows};
use super::{ApiError, ApiState};
use crate::keys;
use crate::model::Environment;
use crate::store::ApiKey;

/// The environment of the request's secret key (`Authorization: Bearer <key>`).
pub struct Authed(pub Environment);

/// The bearer token of a request, or a 401 saying what is expected.
pub(super) fn bearer<'a>(parts: &'a Parts, which: &str) -> Result<&'a str, ApiError> {
    let unauthorized = |m: String| ApiError::new(StatusCode::UNAUTHORIZED, m);
    let header = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| unauthorized(format!("missing `Authorization: Bearer <{which}>` header")))?;
    header
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            unauthorized(format!(
                "the Authorization header must be `Bearer <{which}>`"
            ))
        })
}

const KEY_HINT: &str = "secret key; the dev key is in <data-dir>/dev.key";

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, message)
}

const INVALID_TOKEN: &str = "Public Access Token is invalid. See https://trigger.dev/docs/frontend/overview#authentication for more information.";

const EXPIRED_TOKEN: &str = "Public Access Token has expired. See https://trigger.dev/docs/frontend/overview#authentication for more information.";

const UNSEALED_KEY: &str = "Public Access Token cannot be checked: the secret key that signed it was made before kiln kept keys sealed. Use the key once to ask for claims (POST /api/v1/auth/jwt/claims; auth.createPublicToken does) or make a new key, then sign the token again";

/// A host admin key's request (`<data-dir>/admin.key`).
pub struct Admin;

impl FromRequestParts<ApiState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState,
    ) -> Result<Self, Self::Rejection> {
        let key = bearer(parts, "admin key")?;
        if state.engine.is_admin_key(keys::hash(key)).await? {
            Ok(Admin)
        } else {
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid admin key: the admin API takes the key in <data-dir>/admin.key",
            ))
        }
    }
}

/// The active key of a secret-key bearer.
async fn key_of(state: &ApiState, bearer: &str) -> Result<ApiKey, ApiError> {
    if jwt::looks_like_jwt(bearer) {
        return Err(unauthorized(
            "Public JWT API keys are not allowed for this request",
        ));
    }
    // Keys are looked up by their hash, so no comparison ever runs over the plaintext.
    state
        .engine
        .api_key(bearer)
        .await?
        .ok_or_else(|| unauthorized("invalid API key: it is unknown or revoked"))
}

impl FromRequestParts<ApiState> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState,
    ) -> Result<Self, Self::Rejection> {
        let bearer = bearer(parts, KEY_HINT)?;
        Ok(Authed(key_of(state, bearer).await?.environment))
    }
}

/// A request made with a secret key or a public access token.
pub struct Access {
    pub env: Environment,
    credential: Credential,
}

enum Credential {
    Key {
        key: ApiKey,
        plaintext: String,
    },
    Token {
        scopes: Vec<Scope>,
        /// The key that signed it, which signs the tokens this request is answered with.
        key_id: String,
        secret: String,
        /// SHA-256 of the whole token, for a one-time token.
        one_time: Option<[u8; 32]>,
        skip_columns: Option<Vec<String>>,
    },
}

impl Access {
    /// Whether the request was made with a public access token.
    pub(super) fn is_token(&self) -> bool {
        matches!(self.credential, Credential::Token { .. })
    }

    /// `Ok` if the credential may do `action` on any of `resources` (a secret key may do all);
    /// Trigger.dev's 403 otherwise.
    pub(super) fn allow(&self, action: &str, resources: &[Resource<'_>]) -> Result<(), ApiError> {
        match &self.credential {
            Credential::Key { .. } => Ok(()),
            Credential::Token { scopes, .. } if allows(scopes, action, resources) => Ok(()),
            Credential::Token { .. } => Err(ApiError::new(StatusCode::FORBIDDEN, "Unauthorized")
                .with("code", "unauthorized")
                .with("param", "access_token")
                .with("type", "authorization")),
        }
    }

    /// The digest of a one-time token (`otu`), which may make one run or batch.
    pub(super) fn one_time(&self) -> Option<[u8; 32]> {
        match &self.credential {
            Credential::Token { one_time, .. } => *one_time,
            Credential::Key { .. } => None,
        }
    }

    /// Columns a token says realtime must leave out (`realtime.skipColumns`).
    pub(super) fn skip_columns(&self) -> Option<&[String]> {
        match &self.credential {
            Credential::Token { skip_columns, .. } => skip_columns.as_deref(),
            Credential::Key { .. } => None,
        }
    }

    /// Trigger.dev's claims for tokens of this environment, with the key that signs them.
    pub(super) async fn claims(&self, state: &ApiState) -> Result<Map<String, Value>, ApiError> {
        let key_id = match &self.credential {
            Credential::Key { key, plaintext } => {
                // A key made before keys were kept sealed is sealed now: tokens it signs are
                // checked later.
                state.engine.seal_if_unsealed(key, plaintext).await?;
                &key.id
            }
            Credential::Token { key_id, .. } => key_id,
        };
        let mut claims = Map::new();
        claims.insert("sub".into(), json!(self.env.id));
        claims.insert("pub".into(), json!(true));
        claims.insert("keyId".into(), json!(key_id));
        Ok(claims)
    }

    /// `x-trigger-jwt` (a token with `scopes`, valid `ttl_secs`) and `x-trigger-jwt-claims`, as
    /// Trigger.dev answers a trigger, a batch or a wait token; the SDK hands the token out as
    /// the handle's `publicAccessToken`.
    pub(super) async fn token_headers(
        &self,
        state: &ApiState,
        scopes: Vec<String>,
        ttl_secs: i64,
    ) -> Result<HeaderMap, ApiError> {
        let claims = self.claims(state).await?;
        let secret = match &self.credential {
            Credential::Key { plaintext, .. } => plaintext,
            Credential::Token { secret, .. } => secret,
        };
        let mut signed = claims.clone();
        signed.insert("scopes".into(), json!(scopes));
        let token = jwt::sign(signed, secret, state.engine.now() / 1000, ttl_secs);
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("x-trigger-jwt", token),
            ("x-trigger-jwt-claims", Value::Object(claims).to_string()),
        ] {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        }
        Ok(headers)
    }
}

/// The environment and scopes of a public access token, once checked.
async fn token_access(state: &ApiState, bearer: &str) -> Result<Access, ApiError> {
    let token = Unverified::parse(bearer).map_err(|_| unauthorized(INVALID_TOKEN))?;
    let subject = token.subject().ok_or_else(|| unauthorized(INVALID_TOKEN))?;
    let keys = state
        .engine
        .signing_keys(subject, token.key_id().map(str::to_owned))
        .await?;
    let env = keys
        .environment
        .ok_or_else(|| unauthorized(INVALID_TOKEN))?;
    let Some((key_id, secret)) = keys.keys.into_iter().find(|(_, s)| token.signed_by(s)) else {
        return Err(unauthorized(if keys.unsealed > 0 {
            UNSEALED_KEY
        } else {
            INVALID_TOKEN
        }));
    };
    let claims = token
        .verify(&secret, state.engine.now() / 1000)
        .map_err(|r| {
            unauthorized(match r {
                Refusal::Expired => EXPIRED_TOKEN,
                Refusal::Invalid(_) => INVALID_TOKEN,
            })
        })?;
    if claims.get("pub") != Some(&Value::Bool(true)) {
        return Err(unauthorized(INVALID_TOKEN));
    }
    let scopes = claims
        .get("scopes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter_map(Scope::parse)
        .collect();
    let one_time = (claims.get("otu") == Some(&Value::Bool(true)))
        .then(|| Sha256::digest(bearer.as_bytes()).into());
    let skip_columns = claims
        .get("realtime")
        .and_then(|r| r.get("skipColumns"))
        .and_then(Value::as_array)
        .map(|cols| {
            cols.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        });
    Ok(Access {
        env,
        credential: Credential::Token {
            scopes,
            key_id,
            secret,
            one_time,
            skip_columns,
        },
    })
}

impl FromRequestParts<ApiState> for Access {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState,
    ) -> Result<Self, Self::Rejection> {
        let bearer = bearer(parts, KEY_HINT)?;
        if jwt::looks_like_jwt(bearer) {
            return token_access(state, bearer).await;
        }
        let key = key_of(state, bearer).await?;
        Ok(Access {
            env: key.environment.clone(),
            credential: Credential::Key {
                key,
                plaintext: bearer.to_owned(),
            },
        })
    }
}

/// An environment's secret key, and not a token: for the claims endpoint, which hands out what
/// tokens carry.
pub struct KeyAccess(pub Access);

impl FromRequestParts<ApiState> for KeyAccess {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState,
    ) -> Result<Self, Self::Rejection> {
        let bearer = bearer(parts, KEY_HINT)?;
        let key = key_of(state, bearer).await?;
        Ok(KeyAccess(Access {
            env: key.environment.clone(),
            credential: Credential::Key {
                key,
                plaintext: bearer.to_owned(),
            },
        }))
    }
}
