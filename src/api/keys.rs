//! The admin's keys: make an environment's secret key (shown once), list keys, revoke one.

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use bytes::Bytes;
use serde_json::json;

use super::{Admin, ApiError, ApiState, body_bytes, dto, json_object, required};
use crate::keys;

pub(super) async fn create_key(
    State(state): State<ApiState>,
    _admin: Admin,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let body = json_object(&body_bytes(body)?)?;
    let slug = |field: &str| -> Result<String, ApiError> {
        let value = required(&body, field, "a name of lowercase letters, digits and `-`")?;
        value
            .as_str()
            .filter(|s| keys::valid_slug(s))
            .map(str::to_owned)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "`{field}` must be 1–32 lowercase letters, digits and `-`, starting with a letter"
                ))
            })
    };
    let (project, environment) = (slug("project")?, slug("environment")?);
    let key = keys::environment_key(&environment);
    let secret = key.plaintext.clone();
    let info = state.engine.create_key(&project, &environment, key).await?;
    let mut shown = dto::key_json(&info);
    shown["key"] = json!(secret);
    Ok((StatusCode::CREATED, Json(shown)))
}

pub(super) async fn list_keys(
    State(state): State<ApiState>,
    _admin: Admin,
) -> Result<Json<serde_json::Value>, ApiError> {
    let keys = state.engine.list_keys().await?;
    let data: Vec<serde_json::Value> = keys.iter().map(dto::key_json).collect();
    Ok(Json(json!({ "data": data })))
}

pub(super) async fn revoke_key(
    State(state): State<ApiState>,
    _admin: Admin,
    Path(key_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let info =
        state.engine.revoke_key(&key_id).await?.ok_or_else(|| {
            ApiError::new(StatusCode::NOT_FOUND, format!("key `{key_id}` not found"))
        })?;
    Ok(Json(dto::key_json(&info)))
}
