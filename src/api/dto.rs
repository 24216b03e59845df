//! Wire shapes, following `@trigger.dev/core`'s `v3/schemas/api.ts` where Trigger.dev has the
//! endpoint. Domain types are converted here; they never serialize themselves.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::engine::metadata::{MAX_METADATA_BYTES, MetadataOp};
use crate::engine::{MAX_IDEMPOTENCY_KEY_LEN, MAX_TAG_LEN, MAX_TAGS};
use crate::model::{
    Attempt, Delay, Deployment, Environment, LogLine, MAX_ATTEMPTS_CAP, Machine, Millis, Run,
    RunError, RunStatus, TaskDefinition, TriggerOptions, WaitingFor, parse_duration,
    parse_timestamp,
};
use crate::store::{KeyInfo, RunPage};

/// A duration in Trigger.dev's string form, e.g. `1h30m`, `45s`.
fn format_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

pub(super) fn iso(ms: Millis) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// Stored JSON text, sent as JSON without re-parsing. Stored values were validated on the way in;
/// anything unreadable is sent as a JSON string rather than failing the request.
fn raw(text: &str) -> Box<RawValue> {
    RawValue::from_string(text.to_owned()).unwrap_or_else(|_| {
        RawValue::from_string(serde_json::Value::String(text.to_owned()).to_string())
            .unwrap_or_else(|_| RawValue::from_string("null".into()).unwrap_or_default())
    })
}

/// `POST /api/v1/tasks/{id}/trigger` body, parsed and validated.
#[derive(Debug)]
pub struct TriggerRequest {
    /// The payload as JSON text (`null` when absent).
    pub payload: String,
    pub options: TriggerOptions,
}

/// Trigger.dev options kiln does not implement: refused by name rather than ignored.
const UNSUPPORTED: &[&str] = &[
    "parentRunId",
    "resumeParentOnCompletion",
    "externalDeploymentId",
    "idempotencyKeyOptions",
    "debounce",
    "region",
    "bulkActionId",
    "gates",
    "concurrency",
    "dependentAttempt",
    "parentAttempt",
    "dependentBatch",
];

const SUPPORTED: &str = "delay, ttl, priority, idempotencyKey, idempotencyKeyTTL, tags, maxAttempts, maxDuration, machine, queue, concurrencyKey, metadata, lockToVersion, payloadType, metadataType, payloadSize, test";

/// Largest |priority|, in seconds: a year of head start (or of holding back) is plenty.
const MAX_PRIORITY_SECONDS: f64 = 365.0 * 24.0 * 3600.0;

impl TriggerRequest {
    pub fn parse(body: &[u8]) -> Result<TriggerRequest, String> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(TriggerRequest {
                payload: "null".into(),
                options: TriggerOptions::default(),
            });
        }
        #[derive(Deserialize)]
        struct Body<'a> {
            #[serde(borrow)]
            payload: Option<&'a RawValue>,
            #[serde(default)]
            options: Option<Value>,
        }
        let parsed: Body<'_> = serde_json::from_slice(body).map_err(|e| {
            format!(
                "the body is not valid JSON of the form {{\"payload\": …, \"options\": {{…}}}}: {e}"
            )
        })?;
        let payload = parsed
            .payload
            .map_or_else(|| "null".into(), |p| p.get().to_owned());
        let payload = unwrap_payload(payload, parsed.options.as_ref(), "payload")?;
        Ok(TriggerRequest {
            payload,
            options: parse_options(parsed.options, "options")?,
        })
    }

    /// One item of a batch body (`task` present when the batch spans several tasks).
    pub fn from_item(
        item: Value,
        index: usize,
        need_task: bool,
    ) -> Result<(Option<String>, TriggerRequest), String> {
        let Value::Object(mut map) = item else {
            return Err(format!(
                "items[{index}] must be an object with `payload` and `options`"
            ));
        };
        let task = match map.remove("task") {
            Some(Value::String(t)) => Some(t),
            Some(_) => return Err(format!("items[{index}].task must be a string")),
            None if need_task => return Err(format!("items[{index}].task is required")),
            None => None,
        };
        map.remove("context");
        let payload = map.remove("payload").unwrap_or(Value::Null).to_string();
        let options = map.remove("options");
        let payload = unwrap_payload(
            payload,
            options.as_ref(),
            &format!("items[{index}].payload"),
        )?;
        let options = parse_options(options, &format!("items[{index}].options"))?;
        if let Some(k) = map.keys().next() {
            return Err(format!("items[{index}]: unknown field `{k}`"));
        }
        Ok((task, TriggerRequest { payload, options }))
    }
}

/// Trigger.dev's SDK sends values as `application/super+json`: a string holding
/// `{"json": value, "meta": …}`. kiln takes it where it carries plain JSON (no `meta` types).
const SUPERJSON: &str = "application/super+json";

/// The plain JSON a superjson string carries; an error naming `field` if it carries more.
fn plain_superjson(v: &Value, field: &str) -> Result<Value, String> {
    let Value::String(text) = v else {
        return Err(format!(
            "{field} must be a string of superjson when its type is {SUPERJSON}"
        ));
    };
    let mut outer: serde_json::Map<String, Value> = serde_json::from_str(text)
        .map_err(|e| format!("{field} is not superjson (`{{\"json\": …}}`): {e}"))?;
    let meta_is_plain = match outer.get("meta") {
        None | Some(Value::Null) => true,
        Some(Value::Object(m)) => m.values().all(|v| match v {
            Value::Object(o) => o.is_empty(),
            Value::Array(a) => a.is_empty(),
            _ => false,
        }),
        Some(_) => false,
    };
    if !meta_is_plain {
        return Err(format!(
            "{field} carries superjson types (`meta`: dates, maps, sets, bigints…) that kiln does not take; send plain JSON (`application/json`)"
        ));
    }
    Ok(outer.remove("json").unwrap_or(Value::Null))
}

/// The payload as plain JSON text, unwrapped when `options.payloadType` is superjson.
fn unwrap_payload(payload: String, options: Option<&Value>, field: &str) -> Result<String, String> {
    let superjson = options
        .and_then(|o| o.get("payloadType"))
        .and_then(Value::as_str)
        == Some(SUPERJSON);
    if !superjson {
        return Ok(payload);
    }
    let value: Value = serde_json::from_str(&payload).map_err(|e| format!("{field}: {e}"))?;
    Ok(plain_superjson(&value, field)?.to_string())
}

fn duration_or_seconds(v: &Value, field: &str) -> Result<Duration, String> {
    match v {
        Value::String(s) => parse_duration(s)
            .ok_or_else(|| format!("{field}: `{s}` is not a duration; use forms like \"30s\", \"15m\", \"1h30m\", \"2d\"")),
        Value::Number(n) => n
            .as_u64()
            .map(Duration::from_secs)
            .ok_or_else(|| format!("{field}: {n} must be a whole, non-negative number of seconds")),
        _ => Err(format!("{field} must be a duration string like \"1h\" or a number of seconds")),
    }
}

/// A delay: a duration string, or an ISO 8601 date (a past date means no delay).
pub fn parse_delay(v: &Value, field: &str) -> Result<Delay, String> {
    let Value::String(s) = v else {
        return Err(format!(
            "{field} must be a string: a duration like \"1h\" or an ISO 8601 date"
        ));
    };
    parse_duration(s)
        .map(Delay::For)
        .or_else(|| parse_timestamp(s).map(Delay::Until))
        .ok_or_else(|| format!("{field}: `{s}` is neither a duration like \"30s\" or \"1h30m\" nor an ISO 8601 date like \"2026-12-01T09:00:00Z\""))
}

/// Tags: a string or an array of strings; 1–128 characters each, at most 10, repeats dropped.
pub fn parse_tags(v: &Value, field: &str) -> Result<Vec<String>, String> {
    let list: Vec<&Value> = match v {
        Value::Array(items) => items.iter().collect(),
        one => vec![one],
    };
    let mut tags: Vec<String> = Vec::new();
    for item in list {
        let Value::String(tag) = item else {
            return Err(format!("{field} must be a string or an array of strings"));
        };
        let len = tag.chars().count();
        if len == 0 || len > MAX_TAG_LEN {
            return Err(format!(
                "{field}: each tag must be 1 to {MAX_TAG_LEN} characters; one has {len}"
            ));
        }
        if !tags.contains(tag) {
            tags.push(tag.clone());
        }
    }
    if tags.len() > MAX_TAGS {
        return Err(format!(
            "{field}: at most {MAX_TAGS} tags per run; got {}",
            tags.len()
        ));
    }
    Ok(tags)
}

fn string<'a>(v: &'a Value, field: &str) -> Result<&'a str, String> {
    v.as_str()
        .ok_or_else(|| format!("{field} must be a string"))
}

/// Validates Trigger.dev's `options` object into [`TriggerOptions`]; every error names the field.
fn parse_options(options: Option<Value>, at: &str) -> Result<TriggerOptions, String> {
    let map = match options {
        None | Some(Value::Null) => return Ok(TriggerOptions::default()),
        Some(Value::Object(map)) => map,
        Some(_) => return Err(format!("{at} must be an object")),
    };
    let mut o = TriggerOptions::default();
    for (key, v) in &map {
        let field = format!("{at}.{key}");
        let field = field.as_str();
        if v.is_null() {
            continue;
        }
        match key.as_str() {
            "delay" => o.delay = Some(parse_delay(v, field)?),
            "ttl" => o.ttl = Some(duration_or_seconds(v, field)?),
            "priority" => {
                let p = v.as_f64().filter(|p| p.is_finite() && p.abs() <= MAX_PRIORITY_SECONDS).ok_or_else(|| {
                    format!("{field} must be a number of seconds between -{MAX_PRIORITY_SECONDS} and {MAX_PRIORITY_SECONDS}")
                })?;
                o.priority_ms = (p * 1000.0).round() as i64;
            }
            "idempotencyKey" => {
                let k = string(v, field)?;
                if k.is_empty() || k.chars().count() > MAX_IDEMPOTENCY_KEY_LEN {
                    return Err(format!(
                        "{field} must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} characters"
                    ));
                }
                o.idempotency_key = Some(k.to_owned());
            }
            "idempotencyKeyTTL" => o.idempotency_key_ttl = Some(duration_or_seconds(v, field)?),
            "tags" => o.tags = parse_tags(v, field)?,
            "maxAttempts" => {
                let n = v
                    .as_u64()
                    .filter(|n| (1..=u64::from(MAX_ATTEMPTS_CAP)).contains(n))
                    .ok_or_else(|| {
                        format!("{field} must be a whole number from 1 to {MAX_ATTEMPTS_CAP}")
                    })?;
                o.max_attempts = Some(n as u32);
            }
            "maxDuration" => {
                let secs = v
                    .as_f64()
                    .filter(|s| s.is_finite() && *s >= 5.0 && *s <= f64::from(i32::MAX))
                    .ok_or_else(|| format!("{field} must be a number of seconds, at least 5"))?;
                o.max_duration = Some(Duration::from_secs_f64(secs));
            }
            "machine" => {
                let name = string(v, field)?;
                let names: Vec<&str> = Machine::ALL.iter().map(|m| m.as_str()).collect();
                o.machine = Some(Machine::parse(name).ok_or_else(|| {
                    format!(
                        "{field}: `{name}` is not a machine preset (use one of {})",
                        names.join(", ")
                    )
                })?);
            }
            "queue" => {
                let name = match v {
                    Value::String(name) => name.as_str(),
                    Value::Object(q) => q
                        .get("name")
                        .and_then(Value::as_str)
                        .ok_or_else(|| format!("{field}.name must be a string"))?,
                    _ => return Err(format!("{field} must be {{\"name\": \"…\"}}")),
                };
                let ok = !name.is_empty()
                    && name.len() <= 128
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
                if !ok {
                    return Err(format!(
                        "{field}: queue names are 1–128 characters of letters, digits, `-`, `_`, `.` and `/`"
                    ));
                }
                o.queue = Some(name.to_owned());
            }
            "concurrencyKey" => {
                let k = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    _ => return Err(format!("{field} must be a string or a number")),
                };
                if k.is_empty() || k.len() > 1024 {
                    return Err(format!("{field} must be 1 to 1024 characters"));
                }
                o.concurrency_key = Some(k);
            }
            "metadata" => {
                let unwrapped;
                let v = if map.get("metadataType").and_then(Value::as_str) == Some(SUPERJSON) {
                    unwrapped = plain_superjson(v, field)?;
                    &unwrapped
                } else {
                    v
                };
                if !v.is_object() {
                    return Err(format!("{field} must be a JSON object"));
                }
                let text = v.to_string();
                if text.len() > MAX_METADATA_BYTES {
                    return Err(format!(
                        "{field} is {} bytes; the limit is {MAX_METADATA_BYTES} bytes",
                        text.len()
                    ));
                }
                o.metadata = Some(text);
            }
            "lockToVersion" => o.lock_to_version = Some(string(v, field)?.to_owned()),
            "payloadType" | "metadataType" => {
                let t = string(v, field)?;
                if t != "application/json" && t != SUPERJSON {
                    return Err(format!(
                        "{field}: `{t}` is not supported; send `application/json` (or `{SUPERJSON}` carrying plain JSON)"
                    ));
                }
            }
            "payloadSize" | "test" => {}
            other if UNSUPPORTED.contains(&other) => {
                return Err(format!("{field} is not supported by kiln yet; remove it"));
            }
            other => {
                return Err(format!(
                    "unknown option `{other}` in {at}; kiln supports {SUPPORTED}"
                ));
            }
        }
    }
    Ok(o)
}

/// `PUT /api/v1/runs/{id}/metadata` body (Trigger.dev's `FlushedRunMetadata`): `metadata`
/// replaces the object, then `operations` apply in order.
pub fn parse_metadata_body(
    mut body: serde_json::Map<String, Value>,
) -> Result<Vec<MetadataOp>, String> {
    let mut ops = Vec::new();
    match body.remove("metadata") {
        None | Some(Value::Null) => {}
        Some(Value::Object(value)) => ops.push(MetadataOp::Update { value }),
        Some(_) => return Err("`metadata` must be a JSON object".into()),
    }
    match body.remove("operations") {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) => {
            for (i, op) in list.into_iter().enumerate() {
                ops.push(parse_metadata_op(op).map_err(|e| format!("operations[{i}]: {e}"))?);
            }
        }
        Some(_) => return Err("`operations` must be an array".into()),
    }
    for key in ["parentOperations", "rootOperations"] {
        if body
            .remove(key)
            .is_some_and(|v| v.as_array().is_some_and(|a| !a.is_empty()))
        {
            return Err(format!(
                "`{key}` is not supported until kiln has child runs"
            ));
        }
    }
    if let Some(k) = body.keys().next() {
        return Err(format!(
            "unknown field `{k}`; send `metadata` and/or `operations`"
        ));
    }
    Ok(ops)
}

fn parse_metadata_op(op: Value) -> Result<MetadataOp, String> {
    let Value::Object(mut op) = op else {
        return Err("each operation must be an object with a `type`".into());
    };
    let kind = op
        .remove("type")
        .and_then(|t| t.as_str().map(str::to_owned))
        .unwrap_or_default();
    let key = || match op.get("key") {
        Some(Value::String(k)) if !k.is_empty() => Ok(k.clone()),
        _ => Err(format!("`{kind}` needs a non-empty string `key`")),
    };
    let value = || {
        op.get("value")
            .cloned()
            .ok_or_else(|| format!("`{kind}` needs a `value`"))
    };
    Ok(match kind.as_str() {
        "set" => MetadataOp::Set {
            key: key()?,
            value: value()?,
        },
        "delete" => MetadataOp::Delete { key: key()? },
        "append" => MetadataOp::Append {
            key: key()?,
            value: value()?,
        },
        "remove" => MetadataOp::Remove {
            key: key()?,
            value: value()?,
        },
        "increment" => MetadataOp::Increment {
            key: key()?,
            by: value()?
                .as_f64()
                .ok_or("`increment` needs a number `value`")?,
        },
        "update" => match value()? {
            Value::Object(value) => MetadataOp::Update { value },
            _ => return Err("`update` needs an object `value`".into()),
        },
        other => {
            return Err(format!(
                "unknown operation type `{other}`; use set, delete, append, remove, increment or update"
            ));
        }
    })
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TriggerResponse {
    pub id: String,
    pub is_cached: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDto {
    message: String,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    stack_trace: Option<String>,
    /// kiln's machine-readable code (Trigger.dev's internal error codes where they exist).
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<String>,
}

impl From<&RunError> for ErrorDto {
    fn from(e: &RunError) -> ErrorDto {
        ErrorDto {
            message: e.message.clone(),
            name: e.name.clone(),
            stack_trace: e.stack.clone(),
            code: e.code.clone(),
        }
    }
}

/// The fields every run shape shares (Trigger.dev's `CommonRunFields`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CommonRunFields {
    id: String,
    status: &'static str,
    task_identifier: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    is_queued: bool,
    is_executing: bool,
    is_waiting: bool,
    is_completed: bool,
    is_success: bool,
    is_failed: bool,
    is_cancelled: bool,
    is_test: bool,
    created_at: String,
    updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finished_at: Option<String>,
    tags: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    idempotency_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delayed_until: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expired_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Box<RawValue>>,
    cost_in_cents: f64,
    base_cost_in_cents: f64,
    duration_ms: u64,
}

impl CommonRunFields {
    fn new(run: &Run) -> CommonRunFields {
        use RunStatus as S;
        let s = run.status;
        CommonRunFields {
            id: run.id.clone(),
            status: s.as_str(),
            task_identifier: run.task_id.clone(),
            version: run.version.clone(),
            is_queued: matches!(s, S::Queued | S::Delayed | S::PendingVersion),
            is_executing: matches!(s, S::Dequeued | S::Executing),
            is_waiting: s == S::Waiting,
            is_completed: s.is_final(),
            is_success: s == S::Completed,
            is_failed: s.is_failure(),
            is_cancelled: s == S::Canceled,
            is_test: false,
            created_at: iso(run.created_at),
            updated_at: iso(run.updated_at),
            started_at: run.started_at.map(iso),
            finished_at: run.finished_at.map(iso),
            tags: run.tags.clone(),
            idempotency_key: run.idempotency_key.clone(),
            delayed_until: run.delay_until.map(iso),
            ttl: run.ttl.map(format_duration),
            expired_at: run.expired_at.map(iso),
            metadata: run.metadata.as_deref().map(raw),
            cost_in_cents: 0.0,
            base_cost_in_cents: 0.0,
            duration_ms: run.compute_ms,
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageDto {
    /// Wasm fuel consumed (roughly one unit per instruction).
    fuel: u64,
    compute_ms: u64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AttemptDto {
    number: u32,
    status: &'static str,
    started_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    completed_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorDto>,
    usage: UsageDto,
}

/// `GET /api/v3/runs/{id}`: Trigger.dev's `RetrieveRunResponse` plus kiln's `attempts`, `usage`,
/// `queue` and `machine`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunDto {
    #[serde(flatten)]
    common: CommonRunFields,
    depth: u32,
    /// kiln's: the run that triggered this one, and the root of the tree.
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_run_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    root_run_id: Option<String>,
    trigger_function: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    batch_id: Option<String>,
    priority: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    concurrency_key: Option<String>,
    payload: Box<RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorDto>,
    related_runs: serde_json::Value,
    attempt_count: u32,
    attempts: Vec<AttemptDto>,
    usage: UsageDto,
    queue: String,
    machine: &'static str,
    /// kiln's: what a WAITING run waits for.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    waitpoints: Vec<serde_json::Value>,
}

fn waiting_json(w: &WaitingFor) -> serde_json::Value {
    match w {
        WaitingFor::DateTime { id, completes_at } => {
            serde_json::json!({ "id": id, "type": "DATETIME", "completesAt": iso(*completes_at) })
        }
        WaitingFor::Token { id, timeout_at } => serde_json::json!({
            "id": id,
            "type": "MANUAL",
            "timeoutAt": timeout_at.map(iso),
        }),
        WaitingFor::Run { id } => serde_json::json!({ "type": "RUN", "runId": id }),
    }
}

impl RunDto {
    /// Whether the run has finished.
    pub fn is_completed(&self) -> bool {
        self.common.is_completed
    }

    pub fn new(run: &Run, attempts: &[Attempt], waiting: &[WaitingFor]) -> RunDto {
        RunDto {
            common: CommonRunFields::new(run),
            depth: run.depth,
            parent_run_id: run.parent_run_id.clone(),
            root_run_id: run.root_run_id.clone(),
            trigger_function: if run.batch_id.is_some() {
                "batchTrigger"
            } else {
                "trigger"
            },
            batch_id: run.batch_id.clone(),
            priority: run.priority_ms as f64 / 1000.0,
            concurrency_key: run.concurrency_key.clone(),
            payload: raw(&run.payload),
            output: run.output.as_deref().map(raw),
            error: run.error.as_ref().map(ErrorDto::from),
            related_runs: serde_json::json!({}),
            attempt_count: run.attempt_count,
            attempts: attempts
                .iter()
                .map(|a| AttemptDto {
                    number: a.number,
                    status: a.status.as_str(),
                    started_at: iso(a.started_at),
                    completed_at: a.finished_at.map(iso),
                    error: a.error.as_ref().map(ErrorDto::from),
                    usage: UsageDto {
                        fuel: a.fuel_used,
                        compute_ms: a.compute_ms,
                    },
                })
                .collect(),
            usage: UsageDto {
                fuel: run.fuel_used,
                compute_ms: run.compute_ms,
            },
            queue: run.queue.clone(),
            machine: run.machine.as_str(),
            waitpoints: waiting.iter().map(waiting_json).collect(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct EnvDto {
    id: String,
    name: String,
}

#[derive(Debug, Serialize)]
pub struct ListRunItem {
    #[serde(flatten)]
    common: CommonRunFields,
    env: EnvDto,
}

#[derive(Debug, Serialize)]
pub struct Pagination {
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    previous: Option<String>,
}

/// `GET /api/v1/runs`: Trigger.dev's `ListRunResponse`.
#[derive(Debug, Serialize)]
pub struct ListRunsResponse {
    data: Vec<ListRunItem>,
    pagination: Pagination,
}

impl ListRunsResponse {
    pub fn new(page: &RunPage, env: &Environment) -> ListRunsResponse {
        ListRunsResponse {
            data: page
                .runs
                .iter()
                .map(|r| ListRunItem {
                    common: CommonRunFields::new(r),
                    env: EnvDto {
                        id: env.id.clone(),
                        name: env.slug.clone(),
                    },
                })
                .collect(),
            pagination: Pagination {
                next: page.next.clone(),
                previous: page.previous.clone(),
            },
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskDto {
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    queue: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    machine: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_duration_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_attempts: Option<u32>,
    /// The declared cron schedule: `{cron, timezone}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    schedule: Option<Value>,
}

impl From<&TaskDefinition> for TaskDto {
    fn from(t: &TaskDefinition) -> TaskDto {
        TaskDto {
            id: t.id.clone(),
            description: t.description.clone(),
            queue: t.queue.as_ref().map(|q| q.name.clone()),
            machine: t.machine.map(|m| m.as_str()),
            max_duration_ms: t
                .max_duration
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            max_attempts: t.retry.max_attempts,
            schedule: t
                .schedule
                .as_ref()
                .map(|s| serde_json::json!({ "cron": s.cron, "timezone": s.timezone })),
        }
    }
}

/// kiln's deployment shape (Trigger.dev deploys through its own build service instead).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentDto {
    id: String,
    version: String,
    content_hash: String,
    created_at: String,
    tasks: Vec<TaskDto>,
}

impl From<&Deployment> for DeploymentDto {
    fn from(d: &Deployment) -> DeploymentDto {
        DeploymentDto {
            id: d.id.clone(),
            version: d.version.clone(),
            content_hash: d.component_digest.clone(),
            created_at: iso(d.created_at),
            tasks: d.tasks.iter().map(TaskDto::from).collect(),
        }
    }
}

/// A key as the admin API shows it: never the secret (creation adds it once).
pub fn key_json(k: &KeyInfo) -> Value {
    serde_json::json!({
        "id": k.id,
        "project": k.project,
        "environment": k.environment,
        "prefix": k.prefix,
        "createdAt": iso(k.created_at),
        "revokedAt": k.revoked_at.map(iso),
    })
}

#[derive(Debug, Serialize)]
pub struct LogDto {
    id: i64,
    attempt: u32,
    at: String,
    level: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    attributes: Option<Box<RawValue>>,
}

impl LogDto {
    pub fn new(id: i64, line: &LogLine) -> LogDto {
        LogDto {
            id,
            attempt: line.attempt,
            at: iso(line.at),
            level: line.level.as_str(),
            message: line.message.clone(),
            attributes: line.attributes.as_deref().map(raw),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_body_shapes() {
        assert_eq!(TriggerRequest::parse(b"").unwrap().payload, "null");
        let p = |body: &[u8]| TriggerRequest::parse(body).unwrap();
        assert_eq!(p(br#"{"payload":{"a":1}}"#).payload, r#"{"a":1}"#);
        assert_eq!(p(br#"{"payload":1,"options":{}}"#).payload, "1");
        let o = p(br#"{"payload":1,"options":{"delay":"1h","priority":10,"tags":"a","ttl":0}}"#)
            .options;
        assert_eq!(o.delay, Some(Delay::For(Duration::from_secs(3600))));
        assert_eq!(o.priority_ms, 10_000);
        assert_eq!(o.tags, ["a"]);
        assert_eq!(o.ttl, Some(Duration::ZERO));
        let o =
            p(br#"{"options":{"delay":"2026-12-01T00:00:00Z","payloadType":"application/json"}}"#)
                .options;
        assert!(matches!(o.delay, Some(Delay::Until(_))));
        assert!(
            TriggerRequest::parse(b"{not json")
                .unwrap_err()
                .contains("not valid JSON")
        );
    }

    #[test]
    fn superjson_carrying_plain_json_is_unwrapped() {
        let r = TriggerRequest::parse(br#"{"payload":"{\"json\":{\"name\":\"Ada\"}}","options":{"payloadType":"application/super+json","metadataType":"application/super+json","metadata":"{\"json\":{\"step\":1},\"meta\":{\"values\":{}}}"}}"#).unwrap();
        assert_eq!(r.payload, r#"{"name":"Ada"}"#);
        assert_eq!(r.options.metadata.as_deref(), Some(r#"{"step":1}"#));
        let dated = TriggerRequest::parse(
            br#"{"payload":"{\"json\":{\"at\":\"2026-01-01T00:00:00.000Z\"},\"meta\":{\"values\":{\"at\":[\"Date\"]}}}","options":{"payloadType":"application/super+json"}}"#,
        )
        .unwrap_err();
        assert!(dated.contains("payload carries superjson types"), "{dated}");
        let not_a_string = TriggerRequest::parse(
            br#"{"payload":{"json":1},"options":{"payloadType":"application/super+json"}}"#,
        )
        .unwrap_err();
        assert!(
            not_a_string.contains("must be a string of superjson"),
            "{not_a_string}"
        );
    }

    #[test]
    fn bad_options_name_their_field() {
        let cases = [
            (r#"{"delay":"soon"}"#, "options.delay"),
            (r#"{"delay":5}"#, "options.delay"),
            (r#"{"ttl":"1y"}"#, "options.ttl"),
            (r#"{"ttl":-1}"#, "options.ttl"),
            (r#"{"priority":-1e12}"#, "options.priority"),
            (
                r#"{"tags":["a","b","c","d","e","f","g","h","i","j","k"]}"#,
                "at most 10 tags",
            ),
            (r#"{"tags":[""]}"#, "options.tags"),
            (r#"{"maxAttempts":0}"#, "options.maxAttempts"),
            (r#"{"maxDuration":1}"#, "options.maxDuration"),
            (r#"{"machine":"huge"}"#, "options.machine"),
            (r#"{"metadata":[1]}"#, "options.metadata"),
            (r#"{"debounce":{}}"#, "options.debounce is not supported"),
            (r#"{"nope":1}"#, "unknown option `nope`"),
            (r#"{"payloadType":"text/plain"}"#, "options.payloadType"),
        ];
        for (options, needle) in cases {
            let body = format!(r#"{{"payload":1,"options":{options}}}"#);
            let err = TriggerRequest::parse(body.as_bytes()).unwrap_err();
            assert!(err.contains(needle), "{options}: {err}");
        }
        let long_key = format!(
            r#"{{"options":{{"idempotencyKey":"{}"}}}}"#,
            "k".repeat(2049)
        );
        assert!(
            TriggerRequest::parse(long_key.as_bytes())
                .unwrap_err()
                .contains("idempotencyKey")
        );
    }

    #[test]
    fn durations_print_like_trigger_dev() {
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_secs(90_061)), "1d1h1m1s");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }
}
