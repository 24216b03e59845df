//! Deployments: uploading components (read to a bound, then compiled, validated and stored by the
//! engine in the background), following such a deploy, and listing versions.
//!
//! A deploy's body is one component's bytes (any content type but `multipart/form-data`), or a
//! `multipart/form-data` body whose every part is a component, named by its file name: the
//! components become one version together.

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::json;

use super::{ApiError, ApiState, Authed, dto, multipart};
use crate::deploy::{MAX_COMPONENTS, Upload};
use crate::engine::DeployState;

/// Bytes a multipart body may have besides its components: each part's boundary and headers
/// (bounded by the parser) for every component a version may have.
const MULTIPART_OVERHEAD: usize = MAX_COMPONENTS * (10 << 10);

/// Longest a deploy with `?wait=true` holds its request; one still compiling then answers 202
/// with how it stands, to follow at `GET /api/v1/deploys/{id}`.
pub const MAX_DEPLOY_WAIT: Duration = Duration::from_secs(10 * 60);

/// `POST /api/v1/deployments[?wait=true]`: the upload passes its cheap checks, then compiles in
/// the background. It answers 202 with the deploy (`Location: /api/v1/deploys/{id}`), or, with
/// `wait=true`, 201 with the deployment once it is stored, or the error that refused it.
pub(super) async fn deploy(
    State(state): State<ApiState>,
    Authed(env): Authed,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let wait = match query.get("wait").map(String::as_str) {
        None | Some("false" | "0") => false,
        Some("true" | "1" | "") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "wait: `{other}` is not a boolean; send wait=true to hold the request until the deploy ends, or leave it out to follow it at GET /api/v1/deploys/{{id}}"
            )));
        }
    };
    if let Some(field) = query.keys().find(|k| *k != "wait") {
        return Err(ApiError::bad_request(format!(
            "unknown query parameter `{field}`; a deploy takes only `wait`"
        )));
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let uploads = match multipart::form_data_boundary(content_type) {
        None => {
            let limit = state.max_component_bytes;
            let bytes = read_upload(body, limit, || {
                format!(
                    "the component is larger than the limit of {limit} bytes; shrink it (opt-level \"s\", lto, strip) or raise the host's --max-component-bytes"
                )
            })
            .await?;
            vec![Upload::unnamed(bytes)]
        }
        Some(Err(e)) => return Err(ApiError::bad_request(e)),
        Some(Ok(boundary)) => components(body, &boundary, state.max_deploy_bytes).await?,
    };
    let mut view = state.engine.start_deploy(&env, uploads)?;
    if wait {
        view = state
            .engine
            .wait_deploy(&env, &view.id, MAX_DEPLOY_WAIT)
            .await
            .unwrap_or(view);
    }
    Ok(match &view.state {
        DeployState::Deployed(d) if wait => {
            (StatusCode::CREATED, Json(dto::DeploymentDto::from(&**d))).into_response()
        }
        DeployState::Failed(e) if wait => ApiError::of_engine(e).into_response(),
        _ => (
            StatusCode::ACCEPTED,
            [(header::LOCATION, format!("/api/v1/deploys/{}", view.id))],
            Json(dto::deploy_json(&view)),
        )
            .into_response(),
    })
}

/// `GET /api/v1/deploys/{id}`: how a deploy stands (see [`dto::deploy_json`]).
pub(super) async fn deploy_status(
    State(state): State<ApiState>,
    Authed(env): Authed,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let view = state.engine.deploy_status(&env, &id).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "deploy `{id}` not found: a deploy is kept for an hour after it ends, and one under way is lost when its host stops (deploy again); the versions are at GET /api/v1/deployments"
            ),
        )
    })?;
    Ok(Json(dto::deploy_json(&view)))
}

/// The components of a `multipart/form-data` deploy, each named by its part's file name.
async fn components(
    body: axum::body::Body,
    boundary: &str,
    limit: usize,
) -> Result<Vec<Upload>, ApiError> {
    let bytes = read_upload(body, limit.saturating_add(MULTIPART_OVERHEAD), || {
        format!(
            "the components are larger than the limit of {limit} bytes together; deploy fewer or smaller components, or raise the host's --max-deploy-bytes"
        )
    })
    .await?;
    let parts = multipart::parts(&Bytes::from(bytes), boundary, MAX_COMPONENTS).map_err(|e| {
        ApiError::bad_request(format!(
            "cannot read the multipart body: {e} (send each component as a part, at most {MAX_COMPONENTS})"
        ))
    })?;
    Ok(parts
        .into_iter()
        .map(|p| Upload {
            name: p.file_name,
            bytes: p.body.to_vec(),
        })
        .collect())
}

/// Reads an upload of at most `limit` bytes. A larger one is refused with 413 and the message
/// `too_large` makes, but only after reading (and dropping) the rest of it, up to a bound:
/// answering while the client still sends would close the connection under it, and it would see
/// a reset instead of the message.
pub(super) async fn read_upload(
    body: axum::body::Body,
    limit: usize,
    too_large: impl FnOnce() -> String,
) -> Result<Vec<u8>, ApiError> {
    use futures_util::StreamExt;
    let drain_limit = limit.saturating_mul(4).max(16 << 20);
    let mut stream = body.into_data_stream();
    let (mut bytes, mut seen) = (Vec::new(), 0usize);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
        seen = seen.saturating_add(chunk.len());
        if seen <= limit {
            bytes.extend_from_slice(&chunk);
        } else if seen > drain_limit {
            break;
        }
    }
    if seen > limit {
        return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, too_large()));
    }
    Ok(bytes)
}

pub(super) async fn list_deployments(
    State(state): State<ApiState>,
    Authed(env): Authed,
) -> Result<Json<serde_json::Value>, ApiError> {
    let deployments = state.engine.deployments(&env).await?;
    let data: Vec<dto::DeploymentDto> = deployments.iter().map(dto::DeploymentDto::from).collect();
    Ok(Json(json!({ "data": data })))
}

pub(super) async fn latest_deployment(
    State(state): State<ApiState>,
    Authed(env): Authed,
) -> Result<Json<dto::DeploymentDto>, ApiError> {
    let deployment = state.engine.latest_deployment(&env).await?;
    Ok(Json(dto::DeploymentDto::from(&deployment)))
}
