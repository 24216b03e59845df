//! Error answers: a status and Trigger.dev's `{"error": "…"}` body, from every error a handler
//! meets (engine, deploy, store), each mapped to the status a client can act on.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::deploy::DeployError;
use crate::engine::EngineError;
use crate::metadata::MetadataError;
use crate::store::StoreError;

/// An error answer: a status and Trigger.dev's `{"error": "…"}` body.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    /// Fields beside `error` (Trigger.dev's `code`, `param`, `type` on authorization errors).
    extra: serde_json::Map<String, serde_json::Value>,
    /// Tells the SDK not to retry a refusal it would otherwise retry (`x-should-retry: false`
    /// on a final 409).
    final_answer: bool,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            extra: serde_json::Map::new(),
            final_answer: false,
        }
    }

    /// The same error, marked so the SDK does not retry it.
    pub(super) fn final_answer(mut self) -> ApiError {
        self.final_answer = true;
        self
    }

    /// The same error with another field in its body.
    pub(super) fn with(mut self, field: &str, value: &str) -> ApiError {
        self.extra.insert(field.to_owned(), json!(value));
        self
    }

    pub(super) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub(super) fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = self.extra;
        body.insert("error".into(), json!(self.message));
        let mut response = (self.status, Json(serde_json::Value::Object(body))).into_response();
        if self.final_answer {
            response.headers_mut().insert(
                "x-should-retry",
                axum::http::HeaderValue::from_static("false"),
            );
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        tracing::error!(error = %e, "store error");
        let status = store_status(&e);
        let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
            format!("internal error: {e}")
        } else {
            e.to_string()
        };
        ApiError::new(status, message)
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> ApiError {
        ApiError::of_engine(&e)
    }
}

impl From<DeployError> for ApiError {
    fn from(e: DeployError) -> ApiError {
        ApiError::new(deploy_status(&e), e.to_string())
    }
}

impl ApiError {
    /// The answer to an engine error the caller keeps (a background deploy's, read again and
    /// again).
    pub(super) fn of_engine(e: &EngineError) -> ApiError {
        let status = engine_status(e);
        if status.is_server_error() {
            tracing::error!(error = %e, "engine error");
        }
        let error = ApiError::new(status, e.to_string());
        // The SDK retries a 409 for ~9 s unless told not to; a name that exists stays taken.
        if matches!(e, EngineError::EnvVarExists(_)) {
            error.final_answer()
        } else {
            error
        }
    }
}

/// The status an engine error answers with.
pub(super) fn engine_status(e: &EngineError) -> StatusCode {
    match e {
        EngineError::Deploy(d) => deploy_status(d),
        EngineError::NothingDeployed
        | EngineError::RunNotFound(_)
        | EngineError::QueueNotFound(_)
        | EngineError::TokenNotFound(_)
        | EngineError::EnvVarNotFound(_) => StatusCode::NOT_FOUND,
        EngineError::EnvVarExists(_) => StatusCode::CONFLICT,
        EngineError::InvalidEnvVar(_) => StatusCode::BAD_REQUEST,
        EngineError::Secrets(_) => StatusCode::INTERNAL_SERVER_ERROR,
        EngineError::UnknownVersion(_)
        | EngineError::TaskNotInVersion { .. }
        | EngineError::NotDelayed(_)
        | EngineError::TooManyTags(_)
        | EngineError::BatchSize(_)
        | EngineError::BatchRunCount(_)
        | EngineError::LimitAboveEnvironment { .. }
        | EngineError::InvalidToken(_)
        | EngineError::InvalidTrigger { .. } => StatusCode::BAD_REQUEST,
        EngineError::Metadata(MetadataError::TooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
        EngineError::Metadata(_) => StatusCode::BAD_REQUEST,
        EngineError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        EngineError::Contended => StatusCode::CONFLICT,
        EngineError::TooManyDeploys { .. } => StatusCode::TOO_MANY_REQUESTS,
        EngineError::Store(e) => store_status(e),
    }
}

/// A component's error in a deploy of several answers as it would alone.
fn deploy_status(e: &DeployError) -> StatusCode {
    match e.innermost() {
        DeployError::Empty | DeployError::NoComponents | DeployError::TooManyComponents { .. } => {
            StatusCode::BAD_REQUEST
        }
        DeployError::TooLarge { .. } | DeployError::TooLargeTogether { .. } => {
            StatusCode::PAYLOAD_TOO_LARGE
        }
        DeployError::Store(e) => store_status(e),
        DeployError::Compile(_)
        | DeployError::Definitions(_)
        | DeployError::InvalidTasks(_)
        | DeployError::SameComponentTwice { .. }
        | DeployError::TaskInTwoComponents { .. }
        | DeployError::InComponent { .. } => StatusCode::UNPROCESSABLE_ENTITY,
    }
}

/// The status a store failure answers with: 400 for a text the database cannot hold, 507 when
/// the disk is full (the client may retry once
/// space returns), 503 when the store is not running, its database is unreachable or gave the
/// write up for another (the client may retry), 500 otherwise.
pub(super) fn store_status(e: &StoreError) -> StatusCode {
    match e {
        StoreError::Storage(_) => StatusCode::INSUFFICIENT_STORAGE,
        StoreError::InvalidText(_) => StatusCode::BAD_REQUEST,
        StoreError::Closed | StoreError::Unavailable(_) | StoreError::Busy(_) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}
