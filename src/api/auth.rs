//! Bearer-key auth: [`Authed`] resolves an environment's secret key (by its SHA-256 digest) and is
//! the only way a handler gets an environment; [`Admin`] takes only a host admin key.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};

use super::{ApiError, ApiState};
use crate::keys;
use crate::model::Environment;

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

/// A request made with the host's admin key (`<data-dir>/admin.key`).
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

impl FromRequestParts<ApiState> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState,
    ) -> Result<Self, Self::Rejection> {
        let key = bearer(parts, "secret key; the dev key is in <data-dir>/dev.key")?;
        // Keys are looked up by their hash, so no comparison ever runs over the plaintext.
        let env = state
            .engine
            .environment_for_key(keys::hash(key))
            .await?
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "invalid API key: it is unknown or revoked",
                )
            })?;
        Ok(Authed(env))
    }
}
