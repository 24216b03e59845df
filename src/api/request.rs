//! Reading requests: content types, bodies with their limits, small JSON objects, required fields,
//! and Trigger.dev's cursor pagination and time parameters.

use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use bytes::Bytes;

use super::ApiError;
use crate::model::{Millis, parse_timestamp};

/// Default and largest page of the runs list (Trigger.dev's defaults).
pub(super) const DEFAULT_PAGE_SIZE: usize = 25;

pub(super) const MAX_PAGE_SIZE: usize = 100;

pub(super) fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let ct = ct.to_str().unwrap_or("");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime == "application/json" || mime.is_empty() {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("content type `{ct}` is not supported; send `application/json`"),
        ))
    }
}

/// Reads a request body; a body over the route's limit is answered in the API's error shape.
pub(super) fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|r| {
        ApiError::new(
            r.status(),
            format!("cannot read the request body: {}", r.body_text()),
        )
    })
}

/// Parses a small JSON body into a map; an empty body is an empty map.
pub(super) fn json_object(
    body: &[u8],
) -> Result<serde_json::Map<String, serde_json::Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Map::new());
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body must be a JSON object: {e}")))
}

/// A field the body must have; the error says what it should hold.
pub(super) fn required<'a>(
    body: &'a serde_json::Map<String, serde_json::Value>,
    field: &str,
    what: &str,
) -> Result<&'a serde_json::Value, ApiError> {
    body.get(field)
        .ok_or_else(|| ApiError::bad_request(format!("`{field}` is required: {what}")))
}

/// Most values all of a list's filters may hold together (each is a query parameter).
pub(super) const MAX_FILTER_VALUES: usize = 100;

pub(super) fn filter_values(count: usize) -> Result<(), ApiError> {
    if count > MAX_FILTER_VALUES {
        return Err(ApiError::bad_request(format!(
            "the filters list {count} values; at most {MAX_FILTER_VALUES} together"
        )));
    }
    Ok(())
}

/// Trigger.dev's cursor pagination: `page[size]`, `page[after]`, `page[before]`.
pub(super) struct Cursor {
    pub(super) size: usize,
    pub(super) after: Option<String>,
    pub(super) before: Option<String>,
}

impl Cursor {
    /// Takes a pagination parameter; `false` if `key` is not one.
    pub(super) fn take(&mut self, key: &str, value: &str) -> Result<bool, ApiError> {
        match key {
            "page[size]" => {
                self.size = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE_SIZE).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "page[size] must be a whole number from 1 to {MAX_PAGE_SIZE}"
                        ))
                    })?;
            }
            "page[after]" => self.after = Some(value.to_owned()),
            "page[before]" => self.before = Some(value.to_owned()),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The cursor to page by. The SDK's `getPreviousPage()` keeps the `page[after]` it came
    /// with and adds `page[before]`; Trigger.dev takes `page[before]` then, and so does kiln.
    pub(super) fn checked(mut self) -> Cursor {
        if self.before.is_some() {
            self.after = None;
        }
        self
    }
}

impl Default for Cursor {
    fn default() -> Cursor {
        Cursor {
            size: DEFAULT_PAGE_SIZE,
            after: None,
            before: None,
        }
    }
}

/// A time in a query: milliseconds since the epoch or an ISO 8601 date.
pub(super) fn time_param(key: &str, value: &str) -> Result<Millis, ApiError> {
    value
        .parse::<Millis>()
        .ok()
        .or_else(|| parse_timestamp(value))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "{key} must be an ISO 8601 date or milliseconds since 1970"
            ))
        })
}
