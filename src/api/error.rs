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
}

impl ApiError {
    pub(super) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
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
        (self.status, Json(json!({ "error": self.message }))).into_response()
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
        let e = match e {
            EngineError::Deploy(d) => return d.into(),
            other => other,
        };
        let status = match &e {
            EngineError::Deploy(_) => StatusCode::UNPROCESSABLE_ENTITY,
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
            | EngineError::LimitAboveEnvironment { .. }
            | EngineError::InvalidToken(_)
            | EngineError::InvalidTrigger { .. } => StatusCode::BAD_REQUEST,
            EngineError::Metadata(MetadataError::TooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
            EngineError::Metadata(_) => StatusCode::BAD_REQUEST,
            EngineError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            EngineError::Contended => StatusCode::CONFLICT,
            EngineError::Store(e) => store_status(e),
        };
        if status.is_server_error() {
            tracing::error!(error = %e, "engine error");
        }
        ApiError::new(status, e.to_string())
    }
}

impl From<DeployError> for ApiError {
    fn from(e: DeployError) -> ApiError {
        let status = match &e {
            DeployError::Empty => StatusCode::BAD_REQUEST,
            DeployError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            DeployError::Store(e) => store_status(e),
            DeployError::Compile(_)
            | DeployError::Definitions(_)
            | DeployError::InvalidTasks(_) => StatusCode::UNPROCESSABLE_ENTITY,
        };
        ApiError::new(status, e.to_string())
    }
}

/// The status a store failure answers with: 507 when the disk is full (the client may retry once
/// space returns), 503 when the store is not running, 500 otherwise.
pub(super) fn store_status(e: &StoreError) -> StatusCode {
    match e {
        StoreError::Storage(_) => StatusCode::INSUFFICIENT_STORAGE,
        StoreError::Closed => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}
