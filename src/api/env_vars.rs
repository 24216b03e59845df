//! Environment variable endpoints (Trigger.dev's `/api/v1/projects/{ref}/envvars/{env}…`). The
//! project and environment in the path must be the secret key's own: a key reads and writes the
//! variables of its environment only. These are the only responses that carry values.

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use bytes::Bytes;
use serde_json::{Value, json};

use super::{ApiError, ApiState, Authed, body_bytes, json_object, required};
use crate::engine::env_vars::EnvVar;
use crate::model::Environment;

/// What a secret variable's value reads as (Trigger.dev's); runs see the real value.
const REDACTED: &str = "<redacted>";

/// A variable as Trigger.dev's `EnvironmentVariableWithSecret` shows it.
fn var_json(var: EnvVar) -> Value {
    let value = if var.is_secret {
        REDACTED.to_owned()
    } else {
        var.value
    };
    json!({ "name": var.name, "value": value, "isSecret": var.is_secret })
}

/// An optional boolean field.
fn flag(body: &serde_json::Map<String, Value>, field: &str) -> Result<bool, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ApiError::bad_request(format!(
            "`{field}` must be true or false"
        ))),
    }
}

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

/// `GET …/envvars/{env}`: `[{name, value, isSecret}]`, by name; secrets redacted.
pub(super) async fn list(
    State(state): State<ApiState>,
    Authed(env): Authed,
    Path((project, slug)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let env = same_environment(env, &project, &slug)?;
    let vars = state.engine.env_vars(&env).await?;
    Ok(Json(Value::from(
        vars.into_iter().map(var_json).collect::<Vec<_>>(),
    )))
}

/// `POST …/envvars/{env}` with `{name, value, isSecret?}`: creates a variable (409 if it exists).
pub(super) async fn create(
    State(state): State<ApiState>,
    Authed(env): Authed,
    Path((project, slug)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let (env, body) =
        environment_and_body(env, (&project, &slug), body, &["name", "value", "isSecret"])?;
    let name = string_field(&body, "name", "the variable's name")?;
    let value = string_field(&body, "value", "the variable's value")?;
    let secret = flag(&body, "isSecret")?;
    state
        .engine
        .create_env_var(&env, name, value, secret)
        .await?;
    Ok(success())
}

/// `POST …/envvars/{env}/import` with `{variables: {NAME: value, …}, override?, isSecret?}`: sets
/// many in one transaction; without `override`, existing names keep their values. Trigger.dev's
/// `source` (who imported) is taken and ignored; `parentVariables` (preview branches' parents) is
/// refused, as kiln has no branches.
pub(super) async fn import(
    State(state): State<ApiState>,
    Authed(env): Authed,
    Path((project, slug)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let (env, body) = environment_and_body(
        env,
        (&project, &slug),
        body,
        &[
            "variables",
            "override",
            "isSecret",
            "source",
            "parentVariables",
        ],
    )?;
    if body
        .get("parentVariables")
        .and_then(Value::as_object)
        .is_some_and(|p| !p.is_empty())
    {
        return Err(ApiError::bad_request(
            "`parentVariables` sets a preview branch's parent environment; kiln has no branches",
        ));
    }
    let secret = flag(&body, "isSecret")?;
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
    let kept = state
        .engine
        .put_env_vars(&env, vars, overwrite, secret)
        .await?;
    Ok(Json(json!({ "success": true, "kept": kept })))
}

/// `GET …/envvars/{env}/{name}`: `{name, value, isSecret}`, a secret's value redacted.
pub(super) async fn retrieve(
    State(state): State<ApiState>,
    Authed(env): Authed,
    Path((project, slug, name)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    let env = same_environment(env, &project, &slug)?;
    let var = state.engine.env_var(&env, &name).await?;
    Ok(Json(var_json(var)))
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
