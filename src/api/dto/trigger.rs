//! Trigger requests: the body of a trigger or a batch item, with Trigger.dev's options parsed and
//! validated (durations, dates, tags, priority, superjson that carries plain JSON), and the answer.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::engine::{
    InvalidOption, MAX_IDEMPOTENCY_KEY_LEN, check_concurrency_key, check_idempotency_key,
    check_metadata, check_queue_name, check_tags,
};
use crate::model::{
    Delay, IdempotencyKeyOptions, IdempotencyScope, MAX_ATTEMPTS_CAP, Machine, TriggerOptions,
    parse_duration, parse_timestamp,
};

/// `POST /api/v1/tasks/{id}/trigger` body, parsed and validated.
#[derive(Debug)]
pub struct TriggerRequest {
    /// The payload as JSON text (`null` when absent).
    pub payload: String,
    pub options: TriggerOptions,
}

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

/// Trigger.dev options kiln does not implement: refused by name rather than ignored.
pub(crate) const UNSUPPORTED: &[&str] = &[
    "parentRunId",
    "resumeParentOnCompletion",
    "externalDeploymentId",
    "debounce",
    "region",
    "bulkActionId",
    "gates",
    "concurrency",
    "dependentAttempt",
    "parentAttempt",
    "dependentBatch",
];

pub(crate) const SUPPORTED: &str = "delay, ttl, priority, idempotencyKey, idempotencyKeyTTL, idempotencyKeyOptions, tags, maxAttempts, maxDuration, machine, queue, concurrencyKey, metadata, lockToVersion, payloadType, metadataType, payloadSize, test";

/// Largest |priority|, in seconds: a year of head start (or of holding back) is plenty.
pub(crate) const MAX_PRIORITY_SECONDS: f64 = 365.0 * 24.0 * 3600.0;

/// Trigger.dev's SDK sends values as `application/super+json`: a string holding
/// `{"json": value, "meta": …}`. kiln takes it where it carries plain JSON (no `meta` types).
pub(crate) const SUPERJSON: &str = "application/super+json";

/// The plain JSON a superjson string carries; an error naming `field` if it carries more.
pub(crate) fn plain_superjson(v: &Value, field: &str) -> Result<Value, String> {
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
pub(crate) fn unwrap_payload(
    payload: String,
    options: Option<&Value>,
    field: &str,
) -> Result<String, String> {
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

/// Trigger.dev's `idempotencyKeyOptions`: `{key, scope}`, both required.
pub(crate) fn key_options(v: &Value, field: &str) -> Result<IdempotencyKeyOptions, String> {
    let scopes = || {
        IdempotencyScope::ALL
            .iter()
            .map(|s| format!("\"{}\"", s.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Value::Object(map) = v else {
        return Err(format!(
            "{field} must be {{\"key\": \"…\", \"scope\": …}} with scope one of {}",
            scopes()
        ));
    };
    let key = map
        .get("key")
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty() && k.chars().count() <= MAX_IDEMPOTENCY_KEY_LEN)
        .ok_or_else(|| {
            format!("{field}.key must be a string of 1 to {MAX_IDEMPOTENCY_KEY_LEN} characters")
        })?;
    let scope = map
        .get("scope")
        .and_then(Value::as_str)
        .and_then(IdempotencyScope::parse)
        .ok_or_else(|| format!("{field}.scope must be one of {}", scopes()))?;
    if let Some(other) = map.keys().find(|k| *k != "key" && *k != "scope") {
        return Err(format!(
            "{field}: unknown field `{other}`; it takes key and scope"
        ));
    }
    Ok(IdempotencyKeyOptions {
        key: key.to_owned(),
        scope,
    })
}

pub(crate) fn duration_or_seconds(v: &Value, field: &str) -> Result<Duration, String> {
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

/// An option the engine refused, named as the body names it.
fn named(field: &str, e: InvalidOption) -> String {
    format!("{field} {}", e.message)
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
        if !tags.contains(tag) {
            tags.push(tag.clone());
        }
    }
    check_tags(&tags).map_err(|e| format!("{field}: {}", e.message))?;
    Ok(tags)
}

pub(crate) fn string<'a>(v: &'a Value, field: &str) -> Result<&'a str, String> {
    v.as_str()
        .ok_or_else(|| format!("{field} must be a string"))
}

/// Validates Trigger.dev's `options` object into [`TriggerOptions`]; every error names the field.
pub(crate) fn parse_options(options: Option<Value>, at: &str) -> Result<TriggerOptions, String> {
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
                check_idempotency_key(k).map_err(|e| named(field, e))?;
                o.idempotency_key = Some(k.to_owned());
            }
            "idempotencyKeyTTL" => o.idempotency_key_ttl = Some(duration_or_seconds(v, field)?),
            "idempotencyKeyOptions" => o.idempotency_key_options = Some(key_options(v, field)?),
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
                check_queue_name(name).map_err(|e| named(field, e))?;
                o.queue = Some(name.to_owned());
            }
            "concurrencyKey" => {
                let k = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    _ => return Err(format!("{field} must be a string or a number")),
                };
                check_concurrency_key(&k).map_err(|e| named(field, e))?;
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
                check_metadata(&text).map_err(|e| named(field, e))?;
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
    // The options describe the key; without one there is nothing to describe.
    if o.idempotency_key.is_none() {
        o.idempotency_key_options = None;
    }
    Ok(o)
}

/// The fields of Trigger.dev's `ReplayRunRequestBody` (a strict object).
const REPLAY_FIELDS: [&str; 16] = [
    "payload",
    "payloadType",
    "metadata",
    "tags",
    "queue",
    "concurrencyKey",
    "machine",
    "version",
    "region",
    "delay",
    "ttl",
    "idempotencyKey",
    "idempotencyKeyTTL",
    "maxAttempts",
    "maxDuration",
    "priority",
];

/// `POST /api/v1/runs/{id}/replay` body: what the replay changes from the original run. Every
/// field is optional; an empty body replays the run as it was. `region` is taken and ignored
/// (kiln has one region).
pub fn parse_replay(
    mut body: serde_json::Map<String, Value>,
) -> Result<crate::engine::ReplayChanges, String> {
    if let Some(other) = body.keys().find(|k| !REPLAY_FIELDS.contains(&k.as_str())) {
        return Err(format!(
            "unknown field `{other}`; a replay takes {}",
            REPLAY_FIELDS.join(", ")
        ));
    }
    let payload_type = match body.remove("payloadType") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) if t == SUPERJSON || t == "application/json" => Some(t),
        Some(_) => {
            return Err(format!(
                "payloadType must be \"application/json\" or \"{SUPERJSON}\""
            ));
        }
    };
    let payload = match body.remove("payload") {
        None => None,
        Some(p) if payload_type.as_deref() == Some(SUPERJSON) => {
            Some(plain_superjson(&p, "payload")?.to_string())
        }
        Some(p) => Some(p.to_string()),
    };
    let tags = match body.remove("tags") {
        None | Some(Value::Null) => None,
        Some(t) => Some(parse_tags(&t, "tags")?),
    };
    body.remove("region");
    if let Some(version) = body.remove("version") {
        body.insert("lockToVersion".into(), version);
    }
    let options = parse_options(Some(Value::Object(body)), "body")?;
    Ok(crate::engine::ReplayChanges {
        payload,
        tags,
        options,
    })
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TriggerResponse {
    pub id: String,
    pub is_cached: bool,
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
    fn the_sdks_idempotency_key_options_are_kept_with_the_hashed_key() {
        let r = TriggerRequest::parse(
            br#"{"options":{"idempotencyKey":"5e78","idempotencyKeyTTL":"1h","idempotencyKeyOptions":{"key":"my-key","scope":"global"}}}"#,
        )
        .unwrap();
        assert_eq!(r.options.idempotency_key.as_deref(), Some("5e78"));
        assert_eq!(
            r.options.idempotency_key_options,
            Some(IdempotencyKeyOptions {
                key: "my-key".into(),
                scope: IdempotencyScope::Global
            })
        );
        let keyless = TriggerRequest::parse(
            br#"{"options":{"idempotencyKeyOptions":{"key":"my-key","scope":"run"}}}"#,
        )
        .unwrap();
        assert_eq!(keyless.options.idempotency_key_options, None);
    }

    #[test]
    fn a_replay_body_overrides_the_fields_it_names() {
        let body = |v: Value| match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        };
        let changes = parse_replay(body(serde_json::json!({
            "payload": "{\"json\":{\"name\":\"N\"}}",
            "payloadType": SUPERJSON,
            "tags": ["r"],
            "version": "20260101.1",
            "region": "eu",
            "delay": "1h",
        })))
        .unwrap();
        assert_eq!(changes.payload.as_deref(), Some(r#"{"name":"N"}"#));
        assert_eq!(changes.tags, Some(vec!["r".to_owned()]));
        assert_eq!(
            changes.options.lock_to_version.as_deref(),
            Some("20260101.1")
        );
        assert!(changes.options.delay.is_some());
        let plain = parse_replay(body(serde_json::json!({ "payload": { "a": 1 } }))).unwrap();
        assert_eq!(plain.payload.as_deref(), Some(r#"{"a":1}"#));
        assert_eq!(plain.tags, None);
        let unknown = parse_replay(body(serde_json::json!({ "debounce": {} }))).unwrap_err();
        assert!(unknown.contains("unknown field `debounce`"), "{unknown}");
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
            (
                r#"{"idempotencyKey":"k","idempotencyKeyOptions":{"key":"k","scope":"team"}}"#,
                "options.idempotencyKeyOptions.scope must be one of",
            ),
            (
                r#"{"idempotencyKey":"k","idempotencyKeyOptions":{"scope":"run"}}"#,
                "options.idempotencyKeyOptions.key",
            ),
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
}
