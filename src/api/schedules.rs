//! The schedules API, in Trigger.dev's shapes: `/api/v1/schedules` (create, list, retrieve,
//! update, delete, activate, deactivate) and `/api/v1/timezones`. Handlers and their wire DTOs;
//! every request is scoped to the key's environment, and another environment's schedule answers
//! 404 like a missing one.

use std::collections::HashMap;

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::{ApiError, ApiState, Authed, body_bytes, json_object, require_json};
use crate::engine::schedules::{ScheduleError, ScheduleRequest};
use crate::model::Environment;
use crate::schedule::{self, CronSchedule, Schedule};

/// Default and largest page of the schedules list.
const DEFAULT_PER_PAGE: usize = 10;
const MAX_PER_PAGE: usize = 100;

/// The body fields a schedule takes.
const FIELDS: [&str; 5] = ["task", "cron", "timezone", "externalId", "deduplicationKey"];

impl From<ScheduleError> for ApiError {
    fn from(e: ScheduleError) -> ApiError {
        let status = match &e {
            ScheduleError::NotFound(_) => StatusCode::NOT_FOUND,
            ScheduleError::Spec(_)
            | ScheduleError::UnknownTask { .. }
            | ScheduleError::NothingDeployed(_)
            | ScheduleError::Declarative(_)
            | ScheduleError::BadKey(_) => StatusCode::BAD_REQUEST,
            ScheduleError::TooMany(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ScheduleError::Store(e) => {
                let status = super::error::store_status(e);
                if status == StatusCode::INTERNAL_SERVER_ERROR {
                    tracing::error!(error = %e, "store error");
                }
                status
            }
        };
        ApiError::new(status, e.to_string())
    }
}

/// Trigger.dev's `ScheduleObject`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ScheduleDto {
    id: String,
    task: String,
    #[serde(rename = "type")]
    kind: &'static str,
    active: bool,
    deduplication_key: Option<String>,
    external_id: Option<String>,
    generator: GeneratorDto,
    timezone: String,
    next_run: Option<String>,
    environments: Vec<EnvironmentDto>,
}

#[derive(Debug, Serialize)]
struct GeneratorDto {
    #[serde(rename = "type")]
    kind: &'static str,
    expression: String,
    description: String,
}

#[derive(Debug, Serialize)]
struct EnvironmentDto {
    id: String,
    #[serde(rename = "type")]
    kind: String,
}

/// Trigger.dev's environment type for an environment slug; other slugs are shown upper-cased.
fn environment_type(env: &Environment) -> String {
    match env.slug.as_str() {
        "dev" | "development" => "DEVELOPMENT".into(),
        "prod" | "production" => "PRODUCTION".into(),
        "staging" => "STAGING".into(),
        "preview" => "PREVIEW".into(),
        other => other.to_ascii_uppercase(),
    }
}

impl From<&Schedule> for ScheduleDto {
    fn from(s: &Schedule) -> ScheduleDto {
        let description = CronSchedule::parse(&s.cron, Some(&s.timezone))
            .map(|c| c.describe())
            .unwrap_or_default();
        ScheduleDto {
            id: s.id.clone(),
            task: s.task_id.clone(),
            kind: s.kind.as_str(),
            active: s.active,
            deduplication_key: s.deduplication_key.clone(),
            external_id: s.external_id.clone(),
            generator: GeneratorDto {
                kind: "CRON",
                expression: s.cron.clone(),
                description,
            },
            timezone: s.timezone.clone(),
            next_run: s.next_fire_at.filter(|_| s.active).map(schedule::iso),
            environments: vec![EnvironmentDto {
                id: s.environment.id.clone(),
                kind: environment_type(&s.environment),
            }],
        }
    }
}

/// A string field of the body; `null` counts as absent.
fn string_field(
    body: &Map<String, Value>,
    field: &str,
    required: Option<&str>,
) -> Result<Option<String>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => match required {
            Some(what) => Err(ApiError::bad_request(format!(
                "`{field}` is required: {what}"
            ))),
            None => Ok(None),
        },
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::bad_request(format!("`{field}` must be a string"))),
    }
}

/// Reads a create or update body: the request, and the deduplication key if given.
fn schedule_body(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    key_required: bool,
) -> Result<(ScheduleRequest, Option<String>), ApiError> {
    require_json(headers)?;
    let body = json_object(&body_bytes(body)?)?;
    if let Some(unknown) = body.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!(
            "unknown field `{unknown}`; a schedule takes {}",
            FIELDS.join(", ")
        )));
    }
    let request = ScheduleRequest {
        task: string_field(&body, "task", Some("the id of a deployed task"))?.unwrap_or_default(),
        cron: string_field(
            &body,
            "cron",
            Some("a 5-field cron expression such as \"0 9 * * *\""),
        )?
        .unwrap_or_default(),
        timezone: string_field(&body, "timezone", None)?,
        external_id: string_field(&body, "externalId", None)?,
    };
    let key = string_field(
        &body,
        "deduplicationKey",
        key_required.then_some("a key of your choice; creating again with it updates the schedule"),
    )?;
    Ok((request, key))
}

pub(super) async fn create(
    State(state): State<ApiState>,
    Authed(env): Authed,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ScheduleDto>, ApiError> {
    let (request, key) = schedule_body(&headers, body, true)?;
    let (schedule, _) = state
        .engine
        .create_schedule(&env, key.unwrap_or_default(), request)
        .await?;
    Ok(Json(ScheduleDto::from(&schedule)))
}

pub(super) async fn update(
    State(state): State<ApiState>,
    Authed(env): Authed,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ScheduleDto>, ApiError> {
    let (request, key) = schedule_body(&headers, body, false)?;
    if let Some(key) = key {
        let current = state.engine.schedule(&env, &id).await?;
        if current.deduplication_key.as_deref() != Some(key.as_str()) {
            return Err(ApiError::bad_request(
                "`deduplicationKey` cannot be changed; create a schedule with the new key instead",
            ));
        }
    }
    let schedule = state.engine.update_schedule(&env, &id, request).await?;
    Ok(Json(ScheduleDto::from(&schedule)))
}

pub(super) async fn retrieve(
    State(state): State<ApiState>,
    Authed(env): Authed,
    Path(id): Path<String>,
) -> Result<Json<ScheduleDto>, ApiError> {
    let schedule = state.engine.schedule(&env, &id).await?;
    Ok(Json(ScheduleDto::from(&schedule)))
}

pub(super) async fn delete(
    State(state): State<ApiState>,
    Authed(env): Authed,
    Path(id): Path<String>,
) -> Result<Json<ScheduleDto>, ApiError> {
    let schedule = state.engine.delete_schedule(&env, &id).await?;
    Ok(Json(ScheduleDto::from(&schedule)))
}

pub(super) async fn activate(
    State(state): State<ApiState>,
    Authed(env): Authed,
    Path(id): Path<String>,
) -> Result<Json<ScheduleDto>, ApiError> {
    let schedule = state.engine.set_schedule_active(&env, &id, true).await?;
    Ok(Json(ScheduleDto::from(&schedule)))
}

pub(super) async fn deactivate(
    State(state): State<ApiState>,
    Authed(env): Authed,
    Path(id): Path<String>,
) -> Result<Json<ScheduleDto>, ApiError> {
    let schedule = state.engine.set_schedule_active(&env, &id, false).await?;
    Ok(Json(ScheduleDto::from(&schedule)))
}

/// A whole number query parameter from 1 to `max`.
fn page_param(
    query: &HashMap<String, String>,
    key: &str,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    match query.get(key) {
        None => Ok(default),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(format!("{key} must be a whole number from 1 to {max}"))
            }),
    }
}

pub(super) async fn list(
    State(state): State<ApiState>,
    Authed(env): Authed,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    if let Some(unknown) = query
        .keys()
        .find(|k| !matches!(k.as_str(), "page" | "perPage"))
    {
        return Err(ApiError::bad_request(format!(
            "unknown query parameter `{unknown}`; supported: page, perPage"
        )));
    }
    let page = page_param(&query, "page", 1, u32::MAX as usize)?;
    let per_page = page_param(&query, "perPage", DEFAULT_PER_PAGE, MAX_PER_PAGE)?;
    let (schedules, count) = state.engine.list_schedules(&env, page, per_page).await?;
    let data: Vec<ScheduleDto> = schedules.iter().map(ScheduleDto::from).collect();
    let total_pages = count.div_ceil(per_page as u64);
    Ok(Json(json!({
        "data": data,
        "pagination": { "currentPage": page, "totalPages": total_pages, "count": count },
    })))
}

/// The time zones need no key: the SDK's `schedules.timezones()` sends none, as Trigger.dev's
/// route is public.
pub(super) async fn timezones(
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let exclude_utc = match query.get("excludeUtc").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(ApiError::bad_request("excludeUtc must be true or false")),
    };
    Ok(Json(
        json!({ "timezones": schedule::timezones(exclude_utc) }),
    ))
}
