//! Electric's HTTP shape protocol, as the Trigger.dev SDK speaks it on `/realtime/v1/…`: a
//! long-poll of a "shape" (a run, runs with tags, a batch's runs) by `offset`, answered with a
//! JSON array of row messages that always ends with `up-to-date`, and `electric-*` headers.
//!
//! A request without `live` (the first, `offset=-1`, or a resume after a reconnect) gets the whole
//! shape now, as `insert`s, with `electric-schema`. A `live=true` request gets the rows that
//! changed after its offset, as full-row `update`s, at once if there are any, or is held until
//! one changes or [`HOLD`] passes (then only `up-to-date`), with `electric-cursor`. Offsets are
//! `<hub position>_<boot>`: opaque to the client, and an offset from another process (or one the
//! hub can no longer serve) is answered with the whole shape again, which is always correct.
//!
//! Rows follow Trigger.dev's `SubscribeRunRawShape`: every value a string in Postgres text form
//! (or null), declared in the schema header; timestamps without a zone suffix; the status as
//! Trigger.dev's database names it; errors in a shape the SDK's schema accepts.

use std::collections::HashMap;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::hub::{Hub, Since};
use crate::api::ApiError;
use crate::api::dto::{format_duration, iso};
use crate::model::{Millis, Run, RunError, RunStatus};

/// How long a live request is held when nothing it watches changes (Trigger.dev's 20 s).
pub(super) const HOLD: Duration = Duration::from_secs(20);

/// Columns the SDK needs and Trigger.dev never omits.
const REQUIRED: [&str; 5] = ["id", "taskIdentifier", "friendlyId", "status", "createdAt"];

/// Every column, with its Postgres type (`dims` 1: an array).
const COLUMNS: [(&str, &str, bool); 27] = [
    ("id", "text", false),
    ("taskIdentifier", "text", false),
    ("createdAt", "timestamp", false),
    ("updatedAt", "timestamp", false),
    ("startedAt", "timestamp", false),
    ("delayUntil", "timestamp", false),
    ("queuedAt", "timestamp", false),
    ("expiredAt", "timestamp", false),
    ("completedAt", "timestamp", false),
    ("friendlyId", "text", false),
    ("number", "int4", false),
    ("isTest", "bool", false),
    ("status", "text", false),
    ("usageDurationMs", "int4", false),
    ("costInCents", "float8", false),
    ("baseCostInCents", "float8", false),
    ("ttl", "text", false),
    ("payload", "text", false),
    ("payloadType", "text", false),
    ("metadata", "text", false),
    ("metadataType", "text", false),
    ("output", "text", false),
    ("outputType", "text", false),
    ("runTags", "text", true),
    ("error", "jsonb", false),
    ("realtimeStreams", "text", true),
    ("idempotencyKey", "text", false),
];

/// Where a request starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Offset {
    /// `-1`: the whole shape.
    Start,
    /// A position this host (or another process) gave out.
    At { position: u64, boot: u64 },
}

/// The shape protocol's query parameters that matter to the server.
#[derive(Debug, Clone)]
pub(super) struct ShapeQuery {
    pub(super) offset: Offset,
    pub(super) live: bool,
    pub(super) handle: Option<String>,
    pub(super) skip: Vec<String>,
}

impl ShapeQuery {
    /// Reads `offset`, `live`, `handle` and `skipColumns`; the rest (`cursor`, `log`,
    /// `expired_handle`) are the client's own.
    pub(super) fn parse(query: &HashMap<String, String>) -> Result<ShapeQuery, ApiError> {
        let offset = match query.get("offset").map(String::as_str) {
            None | Some("-1") => Offset::Start,
            Some(text) => text
                .split_once('_')
                .and_then(|(p, b)| Some((p.parse().ok()?, b.parse().ok()?)))
                .map(|(position, boot)| Offset::At { position, boot })
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "offset `{text}` is not -1 nor an electric-offset this host sent"
                    ))
                })?,
        };
        let live = match query.get("live").map(String::as_str) {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => return Err(ApiError::bad_request("live must be true or false")),
        };
        let skip = query
            .get("skipColumns")
            .map(|s| {
                s.split(',')
                    .map(str::trim)
                    .filter(|c| !c.is_empty() && !REQUIRED.contains(c))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        Ok(ShapeQuery {
            offset,
            live,
            handle: query.get("handle").cloned(),
            skip,
        })
    }
    /// Skips these columns instead of the query's (a token's `realtime.skipColumns`).
    pub(super) fn skip_only(&mut self, columns: &[String]) {
        self.skip = columns
            .iter()
            .filter(|c| !REQUIRED.contains(&c.as_str()))
            .cloned()
            .collect();
    }
}

/// A timestamp as Trigger.dev's rows carry it: UTC, no zone suffix (the SDK adds `Z`).
fn timestamp(ms: Millis) -> Value {
    Value::String(iso(ms).trim_end_matches('Z').to_owned())
}

fn opt_timestamp(ms: Option<Millis>) -> Value {
    ms.map_or(Value::Null, timestamp)
}

/// Trigger.dev's database name of a status, which the SDK maps back to the public one.
fn db_status(status: RunStatus) -> &'static str {
    match status {
        RunStatus::Queued => "PENDING",
        RunStatus::Waiting => "WAITING_TO_RESUME",
        RunStatus::Completed => "COMPLETED_SUCCESSFULLY",
        RunStatus::Failed => "COMPLETED_WITH_ERRORS",
        other => other.as_str(),
    }
}

/// A Postgres text array literal: `{"a","b"}`.
fn pg_array(items: &[String]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|t| format!("\"{}\"", t.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("{{{}}}", quoted.join(","))
}

/// An error in the shape the SDK's `TaskRunError` takes: kiln's codes are not all Trigger.dev's
/// internal ones, so every error is a built-in error named as kiln names it.
fn error_json(e: &RunError) -> String {
    json!({
        "type": "BUILT_IN_ERROR",
        "name": e.name,
        "message": e.message,
        "stackTrace": e.stack.clone().unwrap_or_default(),
    })
    .to_string()
}

fn text(s: impl Into<String>) -> Value {
    Value::String(s.into())
}

/// A run as a row of the shape, without the skipped columns.
pub(super) fn row(run: &Run, skip: &[String]) -> Map<String, Value> {
    let json_type = || text("application/json");
    let finished = run.status.is_final();
    let mut row = Map::new();
    let mut put = |k: &str, v: Value| {
        row.insert(k.to_owned(), v);
    };
    put("id", text(&run.id));
    put("friendlyId", text(&run.id));
    put("taskIdentifier", text(&run.task_id));
    put("status", text(db_status(run.status)));
    put("createdAt", timestamp(run.created_at));
    put("updatedAt", timestamp(run.updated_at));
    put("startedAt", opt_timestamp(run.started_at));
    put("delayUntil", opt_timestamp(run.delay_until));
    put("queuedAt", Value::Null);
    put("expiredAt", opt_timestamp(run.expired_at));
    // The SDK ends a run's subscription on the first row with `completedAt`: every final status
    // has one (a canceled or expired run too).
    put(
        "completedAt",
        if finished {
            timestamp(run.finished_at.unwrap_or(run.updated_at))
        } else {
            Value::Null
        },
    );
    put("number", text("0"));
    put("isTest", text("f"));
    put("usageDurationMs", text(run.compute_ms.to_string()));
    put("costInCents", text("0"));
    put("baseCostInCents", text("0"));
    put(
        "ttl",
        run.ttl.map_or(Value::Null, |t| text(format_duration(t))),
    );
    put("payload", text(&run.payload));
    put("payloadType", json_type());
    put(
        "metadata",
        run.metadata.as_deref().map_or(Value::Null, text),
    );
    put(
        "metadataType",
        run.metadata.as_ref().map_or(Value::Null, |_| json_type()),
    );
    put("output", run.output.as_deref().map_or(Value::Null, text));
    put(
        "outputType",
        run.output.as_ref().map_or(Value::Null, |_| json_type()),
    );
    put(
        "runTags",
        if run.tags.is_empty() {
            Value::Null
        } else {
            text(pg_array(&run.tags))
        },
    );
    put(
        "error",
        run.error
            .as_ref()
            .map_or(Value::Null, |e| text(error_json(e))),
    );
    put("realtimeStreams", text("{}"));
    put(
        "idempotencyKey",
        run.idempotency_key_options
            .as_ref()
            .map(|o| o.key.clone())
            .or_else(|| run.idempotency_key.clone())
            .map_or(Value::Null, text),
    );
    for column in skip {
        row.remove(column);
    }
    row
}

/// The `electric-schema` header: every column sent, with its type.
fn schema(skip: &[String]) -> String {
    let mut columns = Map::new();
    for (name, kind, array) in COLUMNS {
        if skip.iter().any(|s| s == name) {
            continue;
        }
        let mut column = json!({ "type": kind });
        if array {
            column["dims"] = json!(1);
        }
        columns.insert(name.to_owned(), column);
    }
    Value::Object(columns).to_string()
}

fn message(run: &Run, operation: &str, skip: &[String]) -> Value {
    json!({
        "key": format!("\"public\".\"TaskRun\"/\"{}\"", run.id),
        "headers": { "operation": operation },
        "value": row(run, skip),
    })
}

/// What one shape is and how to read it whole.
pub(super) struct Shape<F> {
    /// The `electric-handle`.
    pub(super) handle: String,
    /// Whether a run belongs to the shape.
    pub(super) matches: F,
}

/// An answer of the shape protocol.
struct Answer<'a> {
    handle: &'a str,
    position: u64,
    boot: u64,
    /// `Some` for a non-live answer.
    schema: Option<String>,
    rows: Vec<Value>,
}

impl IntoResponse for Answer<'_> {
    fn into_response(self) -> Response {
        let mut rows = self.rows;
        rows.push(json!({ "headers": { "control": "up-to-date" } }));
        let mut response = (StatusCode::OK, axum::Json(Value::Array(rows))).into_response();
        let headers = response.headers_mut();
        let mut set = |name: &'static str, value: &str| {
            if let Ok(v) = HeaderValue::from_str(value) {
                headers.insert(name, v);
            }
        };
        set("electric-handle", self.handle);
        set(
            "electric-offset",
            &format!("{}_{}", self.position, self.boot),
        );
        match &self.schema {
            Some(schema) => set("electric-schema", schema),
            // Changes with each answer, as the client's cache-busting expects.
            None => set("electric-cursor", &self.position.to_string()),
        }
        set("electric-up-to-date", "");
        set("cache-control", "no-store");
        response
    }
}

/// Answers one request of the shape protocol. `read` reads the whole shape (`None`: the thing
/// the shape follows does not exist in the caller's environment, a 404).
pub(super) async fn answer<F, R, Fut>(
    hub: &Hub,
    shape: Shape<F>,
    query: ShapeQuery,
    read: R,
) -> Result<Response, ApiError>
where
    F: Fn(&Run) -> bool,
    R: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Option<Vec<Run>>, ApiError>>,
{
    let position = hub.touch();
    let whole = |position: u64, operation: &'static str| {
        let read = &read;
        let shape = &shape;
        let query = &query;
        async move {
            let runs = read()
                .await?
                .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not found"))?;
            Ok::<Response, ApiError>(
                Answer {
                    handle: &shape.handle,
                    position,
                    boot: hub.boot(),
                    schema: (operation == "insert" && !query.live).then(|| schema(&query.skip)),
                    rows: runs
                        .iter()
                        .map(|r| message(r, operation, &query.skip))
                        .collect(),
                }
                .into_response(),
            )
        }
    };
    let after = match query.offset {
        Offset::At { position, boot } if query.live && boot == hub.boot() => position,
        // The first request, a resume, or an offset another process gave: the whole shape.
        _ => return whole(position, "insert").await,
    };
    let deadline = tokio::time::Instant::now() + HOLD;
    let mut after = after;
    loop {
        match hub.since(after, &shape.matches) {
            Since::Unknown(now) => return whole(now, "insert").await,
            Since::Runs(runs, now) if !runs.is_empty() => {
                return Ok(Answer {
                    handle: &shape.handle,
                    position: now,
                    boot: hub.boot(),
                    schema: None,
                    rows: runs
                        .iter()
                        .map(|r| message(r, "update", &query.skip))
                        .collect(),
                }
                .into_response());
            }
            Since::Runs(_, now) => {
                if hub.is_closing() || !hub.wait_past(now, deadline).await {
                    return Ok(Answer {
                        handle: &shape.handle,
                        position: now,
                        boot: hub.boot(),
                        schema: None,
                        rows: Vec::new(),
                    }
                    .into_response());
                }
                after = now;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_a_postgres_array_and_statuses_trigger_devs_database_names() {
        assert_eq!(
            pg_array(&["a".into(), "user:42".into(), "q\"\\".into()]),
            r#"{"a","user:42","q\"\\"}"#
        );
        assert_eq!(db_status(RunStatus::Queued), "PENDING");
        assert_eq!(db_status(RunStatus::Completed), "COMPLETED_SUCCESSFULLY");
        assert_eq!(db_status(RunStatus::Canceled), "CANCELED");
        assert_eq!(
            timestamp(1_764_646_982_936),
            json!("2025-12-02T03:43:02.936")
        );
    }

    #[test]
    fn offsets_are_minus_one_or_a_position_and_boot() {
        let q = |pairs: &[(&str, &str)]| {
            ShapeQuery::parse(
                &pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        };
        assert_eq!(q(&[("offset", "-1")]).unwrap().offset, Offset::Start);
        let live = q(&[
            ("offset", "12_99"),
            ("live", "true"),
            ("skipColumns", "payload,id"),
        ])
        .unwrap();
        assert_eq!(
            live.offset,
            Offset::At {
                position: 12,
                boot: 99
            }
        );
        assert!(live.live);
        assert_eq!(live.skip, ["payload"], "id is never skipped");
        assert!(q(&[("offset", "nonsense")]).is_err());
    }
}
