//! Environment variable endpoints (Trigger.dev's `/api/v1/projects/{ref}/envvars/{env}…`). The
//! project and environment in the path must be the secret key's own: a key reads and writes the
//! variables of its environment only. These are the only responses that carry values.

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use bytes::Bytes;
use serde_json::{Value, json};

use super::{ApiError, ApiState, Authed, body_bytes, json_object, required};
use crate::model::Environment;

/// The key's environment, if the path names it; a 404 otherwise (another environment's
/// variables do not exist for this key).
fn same_environment(env: Environment, project: &str, slug: &str) -> Result<Environment, ApiError> {
    if env.project_slug == project && env.slug == slug {
        Ok(env)
    } else {
        Err(ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            format!(
                "environment `{project}/{slug}` not found for this key (it belongs to `{}/{}`)",
                env.project_slug, env.slug
            ),
        ))
    }
}

fn string_field(
    body: &serde_json::Map<String, Value>,
    field: &str,
    what: &str,
) -> Result<String, ApiError> {
    required(body, field, what)?
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| ApiError::bad_request(format!("`{field}` must be a string: {what}")))
}

fn no_other_fields(
    body: &serde_json::Map<String, Value>,
    allowed: &[&str],
) -> Result<(), ApiError> {
    match body.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(other) => Err(ApiError::bad_request(format!(
            "unknown field `{other}`; expected {}",
            allowed.join(", ")
        ))),
        None => Ok(()),
    }
}

/// The key's environment (named by the path) and the request's JSON object with only `allowed`
/// fields.
fn environment_and_body(
    env: Environment,
    (project, slug): (&str, &str),
    body: Result<Bytes, BytesRejection>,
    allowed: &[&str],
) -> Result<(Environment, serde_json::Map<String, Value>), ApiError> {
    let env = same_environment(env, project, slug)?;
    let body = json_object(&body_bytes(body)?)?;
    no_other_fields(&body, allowed)?;
    Ok((env, body))
}

fn success() -> Json<Value> {
    Json(json!({ "success": true }))
}

/// `GET …/envvars/{env}`: `[{name, value}]`, by name.
pub(super) async fn list(
    State(state): State<ApiState>,
    Authed(env): Authed,
    Path((project, slug)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let env = same_environment(env, &project, &slug)?;
    let vars = state.engine.env_vars(&env).await?;
    Ok(Json(Value::from(
        vars.into_iter()
            .map(|(name, value)| json!({ "name": name, "value": value }))
            .collect::<Vec<_>>(),
    )))
}

/// `POST …/envvars/{env}` with `{name, value}`: creates a variable (409 if it exists).
pub(super) async fn create(
    State(state): State<ApiState>,
    Authed(env): Authed,
    Path((project, slug)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let (env, body) = environment_and_body(env, (&project, &slug), body, &["name", "value"])?;
    let name = string_field(&body, "name", "the variable's name")?;
    let value = string_field(&body, "value", "the variable's value")?;
    state.engine.create_env_var(&env, name, value).await?;
    Ok(success())
}

/// `POST …/envvars/{env}/import` with `{variables: {NAME: value, …}, override?}`: sets many in
/// one transaction; without `override`, existing names keep their values.
pub(super) async fn import(
    State(state): State<ApiState>,
    Authed(env): Authed,
    Path((project, slug)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let (env, body) =
        environment_and_body(env, (&project, &slug), body, &["variables", "override"])?;
    let what = "an object of names to string values";
    let variables = required(&body, "variables", what)?
        .as_object()
        .ok_or_else(|| ApiError::bad_request(format!("`variables` must be {what}")))?;
    let overwrite = match body.get("override") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::bad_request("`override` must be true or false")),
    };
    let mut vars = Vec::with_capacity(variables.len());
    for (name, value) in variables {
        let value = value
            .as_str()
            .ok_or_else(|| ApiError::bad_request(format!("`variables.{name}` must be a string")))?;
        vars.push((name.clone(), value.to_owned()));
    }
    let kept = state.engine.put_env_vars(&env, vars, overwrite).await?;
    Ok(Json(json!({ "success": true, "kept": kept })))
}

/// `GET …/envvars/{env}/{name}`: `{value}`.
pub(super) async fn retrieve(
    State(state): State<ApiState>,
    Authed(env): Authed,
    Path((project, slug, name)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    let env = same_environment(env, &project, &slug)?;
    let value = state.engine.env_var(&env, &name).await?;
    Ok(Json(json!({ "value": value })))
}

/// `PUT …/envvars/{env}/{name}` with `{value}`: changes an existing variable (404 if none).
pub(super) async fn update(
    State(state): State<ApiState>,
    Authed(env): Authed,
    Path((project, slug, name)): Path<(String, String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let (env, body) = environment_and_body(env, (&project, &slug), body, &["value"])?;
    let value = string_field(&body, "value", "the variable's new value")?;
    state.engine.update_env_var(&env, name, value).await?;
    Ok(success())
}

/// `DELETE …/envvars/{env}/{name}`.
pub(super) async fn delete(
    State(state): State<ApiState>,
    Authed(env): Authed,
    Path((project, slug, name)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    let env = same_environment(env, &project, &slug)?;
    state.engine.delete_env_var(&env, &name).await?;
    Ok(success())
}
