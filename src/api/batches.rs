//! Trigger.dev's two-phase batch API, which the SDK's `batchTrigger` calls use: `POST
//! /api/v3/batches` makes a batch with its run count, `POST /api/v3/batches/{id}/items` streams
//! its items as NDJSON (read line by line as they arrive, added in chunks, each index once, the
//! batch sealed when the stream ends with every index in), `GET /api/v2/batches/{id}` reads it.

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde_json::{Map, Value, json};

use super::scopes::Resource;
use super::{Access, ApiError, ApiState, body_bytes, dto, json_object};
use crate::engine::batches::{
    BatchError, BatchItem, BatchRequest, ChunkAdded, MAX_BATCH_RUNS, too_large,
};
use crate::engine::{MAX_IDEMPOTENCY_KEY_LEN, MAX_PAYLOAD_BYTES, TriggerItem};
use crate::model::{Batch, BatchStatus};

/// Longest line of an items stream kiln reads; a longer one is a failed item (its payload is
/// over the limit anyway), not a failed stream.
const MAX_LINE: usize = 2 * MAX_PAYLOAD_BYTES + (64 << 10);

/// Items added per transaction, and the bytes of payloads a chunk may hold before it is added.
const CHUNK_ITEMS: usize = 100;
const CHUNK_BYTES: usize = 16 << 20;

/// The fields of Trigger.dev's `CreateBatchRequestBody`.
const CREATE_FIELDS: [&str; 6] = [
    "runCount",
    "taskIdentifiers",
    "parentRunId",
    "resumeParentOnCompletion",
    "idempotencyKey",
    "idempotencyKeyOptions",
];

fn unprocessable(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message)
}

/// How long the token a batch is answered with reads it (Trigger.dev's).
const BATCH_TOKEN_SECS: i64 = 3_600;

/// What a batch-trigger token must reach to trigger `task` in a batch.
fn batch_trigger(access: &Access, task: &str) -> Result<(), ApiError> {
    access.allow(
        "batchTrigger",
        &[
            Resource::of("tasks", task),
            Resource::all("tasks"),
            Resource::all("batch"),
        ],
    )
}

/// `POST /api/v3/batches` with `{runCount, taskIdentifiers?, idempotencyKey?,
/// idempotencyKeyOptions?}`: 202 with the batch (or, for a live idempotency key, the earlier
/// batch, `isCached`, whose items the SDK then does not send).
pub(super) async fn create(
    State(state): State<ApiState>,
    access: Access,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = json_object(&body_bytes(body)?)?;
    let request = parse_create(&body)?;
    // A token must reach every task the batch names (or every task).
    match body.get("taskIdentifiers").and_then(Value::as_array) {
        Some(tasks) => {
            for task in tasks.iter().filter_map(Value::as_str) {
                batch_trigger(&access, task)?;
            }
        }
        None => access.allow(
            "batchTrigger",
            &[Resource::all("tasks"), Resource::all("batch")],
        )?,
    }
    if let Some(digest) = access.one_time()
        && !state.engine.use_token(&access.env, digest, "batch").await?
    {
        return Err(unprocessable(
            "Cannot trigger a batch with a one-time use token as it has already been used.",
        ));
    }
    let (batch, cached) = state.engine.create_batch(&access.env, request).await?;
    let mut answer = json!({ "id": batch.id, "runCount": batch.run_count, "isCached": cached });
    if let Some(key) = &batch.idempotency_key {
        answer["idempotencyKey"] = json!(key);
    }
    let headers = access
        .token_headers(
            &state,
            vec![format!("read:batch:{}", batch.id)],
            BATCH_TOKEN_SECS,
        )
        .await?;
    Ok((StatusCode::ACCEPTED, headers, Json(answer)).into_response())
}

fn parse_create(body: &Map<String, Value>) -> Result<BatchRequest, ApiError> {
    if let Some(other) = body.keys().find(|k| !CREATE_FIELDS.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!(
            "unknown field `{other}`; a batch takes {}",
            CREATE_FIELDS.join(", ")
        )));
    }
    let run_count = body
        .get("runCount")
        .and_then(Value::as_u64)
        .filter(|n| *n > 0)
        .ok_or_else(|| ApiError::bad_request("`runCount` must be a whole number above 0"))?;
    let run_count = u32::try_from(run_count).unwrap_or(u32::MAX);
    if run_count > MAX_BATCH_RUNS {
        return Err(ApiError::bad_request(format!(
            "Batch runCount of {run_count} exceeds maximum allowed of {MAX_BATCH_RUNS}."
        )));
    }
    match body.get("taskIdentifiers") {
        None | Some(Value::Null) => {}
        Some(Value::Array(ids))
            if !ids.is_empty()
                && ids
                    .iter()
                    .all(|t| t.as_str().is_some_and(|t| !t.is_empty())) => {}
        Some(_) => {
            return Err(ApiError::bad_request(
                "`taskIdentifiers` must be a non-empty array of task ids",
            ));
        }
    }
    for field in ["parentRunId", "resumeParentOnCompletion"] {
        if body
            .get(field)
            .is_some_and(|v| !v.is_null() && v != &Value::Bool(false))
        {
            return Err(ApiError::bad_request(format!(
                "`{field}` is for batches a run triggers; a kiln task triggers children through its tasks interface"
            )));
        }
    }
    let idempotency_key = match body.get("idempotencyKey") {
        None | Some(Value::Null) => None,
        Some(Value::String(k)) if !k.is_empty() && k.chars().count() <= MAX_IDEMPOTENCY_KEY_LEN => {
            Some(k.clone())
        }
        Some(_) => {
            return Err(ApiError::bad_request(format!(
                "`idempotencyKey` must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} characters"
            )));
        }
    };
    let idempotency_key_options = match body.get("idempotencyKeyOptions") {
        None | Some(Value::Null) => None,
        Some(v) => {
            Some(dto::key_options(v, "idempotencyKeyOptions").map_err(ApiError::bad_request)?)
        }
    };
    Ok(BatchRequest {
        run_count,
        idempotency_key_options: idempotency_key_options.filter(|_| idempotency_key.is_some()),
        idempotency_key,
    })
}

/// A line of an items stream.
enum Line {
    Text(Vec<u8>),
    /// A line over [`MAX_LINE`]: its first bytes (where the SDK puts `index`).
    TooLong(Vec<u8>),
}

/// Splits a byte stream into lines without holding more than one line (bounded) at a time.
struct Lines<S> {
    body: S,
    buffer: Vec<u8>,
    /// Set while skipping the rest of a line over the limit: its first bytes.
    skipping: Option<Vec<u8>>,
    done: bool,
}

impl<S, E> Lines<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    fn new(body: S) -> Lines<S> {
        Lines {
            body,
            buffer: Vec::new(),
            skipping: None,
            done: false,
        }
    }

    async fn next(&mut self) -> Result<Option<Line>, ApiError> {
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let mut line: Vec<u8> = self.buffer.drain(..=end).collect();
                line.pop();
                if let Some(start) = self.skipping.take() {
                    return Ok(Some(Line::TooLong(start)));
                }
                if line.len() > MAX_LINE {
                    line.truncate(256);
                    return Ok(Some(Line::TooLong(line)));
                }
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Ok(Some(Line::Text(line)));
            }
            if self.buffer.len() > MAX_LINE && self.skipping.is_none() {
                self.skipping = Some(self.buffer[..256].to_vec());
            }
            if self.skipping.is_some() {
                self.buffer.clear();
            }
            if self.done {
                let rest = std::mem::take(&mut self.buffer);
                if let Some(start) = self.skipping.take() {
                    return Ok(Some(Line::TooLong(start)));
                }
                if rest.iter().all(u8::is_ascii_whitespace) {
                    return Ok(None);
                }
                return Ok(Some(Line::Text(rest)));
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buffer.extend_from_slice(&chunk),
                Some(Err(e)) => {
                    return Err(ApiError::bad_request(format!(
                        "the items stream broke: {e}"
                    )));
                }
                None => self.done = true,
            }
        }
    }
}

/// The `index` of a line from its first bytes (`{"index":12,…`).
fn index_in(start: &[u8]) -> Option<u32> {
    let text = String::from_utf8_lossy(start);
    let at = text.find("\"index\"")? + "\"index\"".len();
    let rest = text[at..].trim_start().strip_prefix(':')?.trim_start();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// One line as a batch item (Trigger.dev's `BatchItemNDJSON`), which a token must be allowed.
fn allowed_item(access: &Access, line: &[u8], run_count: u32) -> Result<BatchItem, ApiError> {
    let item = item(line, run_count)?;
    batch_trigger(access, &item.task_id)?;
    Ok(item)
}

/// One line as a batch item (Trigger.dev's `BatchItemNDJSON`).
fn item(line: &[u8], run_count: u32) -> Result<BatchItem, ApiError> {
    let value: Value = serde_json::from_slice(line)
        .map_err(|e| unprocessable(format!("Invalid item: not a JSON object: {e}")))?;
    let Value::Object(mut map) = value else {
        return Err(unprocessable(
            "Invalid item: each line must be a JSON object",
        ));
    };
    let index = map
        .remove("index")
        .and_then(|i| i.as_u64())
        .and_then(|i| u32::try_from(i).ok())
        .ok_or_else(|| unprocessable("Invalid item: `index` must be a whole number from 0"))?;
    if index >= run_count {
        return Err(unprocessable(format!(
            "Item index {index} exceeds batch runCount {run_count}"
        )));
    }
    let (task, request) = dto::TriggerRequest::from_item(Value::Object(map), index as usize, true)
        .map_err(|reason| unprocessable(format!("Invalid item at index {index}: {reason}")))?;
    let task_id = task.unwrap_or_default();
    Ok(BatchItem {
        index,
        task_id: task_id.clone(),
        trigger: Ok(TriggerItem {
            task_id,
            payload: request.payload,
            options: request.options,
        }),
    })
}

fn is_ndjson(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            let ct = ct.to_ascii_lowercase();
            ct.contains("application/x-ndjson") || ct.contains("application/ndjson")
        })
}

fn batch_error(e: BatchError) -> ApiError {
    match e {
        BatchError::NotFound(_) | BatchError::InvalidItem { .. } => unprocessable(e.to_string()),
        BatchError::Engine(e) => e.into(),
    }
}

/// `POST /api/v3/batches/{id}/items`: the items as NDJSON; answers how many were taken and
/// whether the batch is sealed (if not, the SDK sends the whole stream again).
pub(super) async fn stream_items(
    State(state): State<ApiState>,
    access: Access,
    Path(batch_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let env = &access.env;
    if !is_ndjson(&headers) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the items as `application/x-ndjson`: one JSON object a line",
        ));
    }
    let batch = state
        .engine
        .batch(env, &batch_id)
        .await?
        .ok_or_else(|| unprocessable(format!("Batch {batch_id} not found")))?;
    let sealed_answer = || {
        Json(json!({ "id": batch_id, "itemsAccepted": 0, "itemsDeduplicated": 0, "sealed": true }))
    };
    if batch.sealed {
        return Ok(sealed_answer());
    }
    if batch.status(state.engine.now()) == BatchStatus::Aborted {
        return Err(unprocessable(format!(
            "Batch {batch_id} was not sealed within 30 minutes of being made and is aborted"
        )));
    }
    let mut lines = Lines::new(body.into_data_stream());
    let (mut chunk, mut bytes, mut read) = (Vec::new(), 0usize, 0usize);
    let mut total = ChunkAdded::default();
    loop {
        let line = lines.next().await?;
        let end = line.is_none();
        if let Some(line) = line {
            read += 1;
            if read > 2 * batch.run_count as usize + 10 {
                return Err(unprocessable(format!(
                    "the stream has far more lines than batch {batch_id} has items ({})",
                    batch.run_count
                )));
            }
            let item = match line {
                Line::Text(text) => {
                    bytes += text.len();
                    allowed_item(&access, &text, batch.run_count)?
                }
                Line::TooLong(start) => {
                    let index = index_in(&start)
                        .filter(|i| *i < batch.run_count)
                        .ok_or_else(|| unprocessable(format!(
                            "Invalid item: a line is over {MAX_LINE} bytes and its index cannot be read"
                        )))?;
                    BatchItem {
                        index,
                        task_id: String::new(),
                        trigger: Err(too_large(index, "", MAX_LINE, MAX_PAYLOAD_BYTES)),
                    }
                }
            };
            chunk.push(item);
        }
        if !chunk.is_empty() && (end || chunk.len() >= CHUNK_ITEMS || bytes >= CHUNK_BYTES) {
            let added = state
                .engine
                .add_batch_items(env, &batch_id, std::mem::take(&mut chunk))
                .await
                .map_err(batch_error)?;
            if added.sealed {
                return Ok(sealed_answer());
            }
            total.accepted += added.accepted;
            total.deduplicated += added.deduplicated;
            bytes = 0;
        }
        if end {
            break;
        }
    }
    let sealing = state
        .engine
        .seal_batch(env, &batch_id)
        .await
        .map_err(batch_error)?;
    let mut answer = json!({
        "id": batch_id,
        "itemsAccepted": total.accepted,
        "itemsDeduplicated": total.deduplicated,
        "sealed": sealing.sealed,
    });
    if !sealing.sealed {
        answer["enqueuedCount"] = json!(sealing.enqueued);
        answer["expectedCount"] = json!(sealing.expected);
    }
    Ok(Json(answer))
}

/// A batch as Trigger.dev's `RetrieveBatchV2Response` shows it.
pub(super) fn batch_json(batch: &Batch, now: crate::model::Millis) -> Value {
    let mut v = json!({
        "id": batch.id,
        "status": batch.status(now).as_str(),
        "createdAt": dto::iso(batch.created_at),
        "updatedAt": dto::iso(batch.updated_at),
        "runCount": batch.run_count,
        "runs": batch.runs,
        "processing": {
            "errors": batch.errors.iter().map(|e| {
                let mut error = json!({ "index": e.index, "taskIdentifier": e.task_id, "error": e.message });
                if let Some(code) = &e.code {
                    error["errorCode"] = json!(code);
                }
                error
            }).collect::<Vec<_>>(),
        },
    });
    if let Some(at) = batch.sealed_at {
        v["processing"]["completedAt"] = json!(dto::iso(at));
    }
    let key = batch
        .idempotency_key_options
        .as_ref()
        .map(|o| o.key.clone())
        .or_else(|| batch.idempotency_key.clone());
    if let Some(key) = key {
        v["idempotencyKey"] = json!(key);
    }
    v
}

/// `GET /api/v2/batches/{id}` (a token needs `read:batch:<id>` or `read:runs`).
pub(super) async fn retrieve(
    State(state): State<ApiState>,
    access: Access,
    Path(batch_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let batch = state
        .engine
        .batch(&access.env, &batch_id)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("batch `{batch_id}` not found"),
            )
        })?;
    access.allow(
        "read",
        &[Resource::of("batch", &batch_id), Resource::all("runs")],
    )?;
    Ok(Json(batch_json(&batch, state.engine.now())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_split_across_chunks_and_an_oversized_line_is_skipped_with_its_start() {
        let big = format!(
            "{{\"index\":7,\"payload\":\"{}\"}}\n",
            "x".repeat(MAX_LINE + 10)
        );
        let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(Bytes::from_static(b"{\"index\":0}\n{\"ind")),
            Ok(Bytes::from_static(b"ex\":1}\n\n")),
            Ok(Bytes::from(big.clone())),
            Ok(Bytes::from(big[..MAX_LINE / 2].to_owned())),
            Ok(Bytes::from(big[MAX_LINE / 2..].to_owned())),
            Ok(Bytes::from_static(b"{\"index\":2}")),
        ];
        let mut lines = Lines::new(futures_util::stream::iter(chunks));
        let mut seen = Vec::new();
        while let Some(line) = lines.next().await.unwrap() {
            seen.push(match line {
                Line::Text(t) if t.len() > 100 => format!("{} bytes", t.len()),
                Line::Text(t) => String::from_utf8(t).unwrap(),
                Line::TooLong(start) => format!("too long: {:?}", index_in(&start)),
            });
        }
        assert_eq!(
            seen,
            [
                "{\"index\":0}",
                "{\"index\":1}",
                "too long: Some(7)",
                "too long: Some(7)",
                "{\"index\":2}"
            ]
        );
    }

    #[test]
    fn an_item_past_the_run_count_or_without_a_task_is_refused() {
        assert!(item(br#"{"index":0,"task":"hello","payload":{"a":1}}"#, 1).is_ok());
        let past = item(br#"{"index":1,"task":"hello"}"#, 1).unwrap_err();
        assert!(
            format!("{past:?}").contains("exceeds batch runCount 1"),
            "{past:?}"
        );
        let taskless = item(br#"{"index":0,"payload":1}"#, 1).unwrap_err();
        assert!(
            format!("{taskless:?}").contains("Invalid item at index 0"),
            "{taskless:?}"
        );
    }
}
