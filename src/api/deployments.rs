//! Deployments: uploading components (read to a bound, then validated and stored by the engine)
//! and listing versions.
//!
//! A deploy's body is one component's bytes (any content type but `multipart/form-data`), or a
//! `multipart/form-data` body whose every part is a component, named by its file name: the
//! components become one version together.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use bytes::Bytes;
use serde_json::json;

use super::{ApiError, ApiState, Authed, dto, multipart};
use crate::deploy::{MAX_COMPONENTS, Upload};

/// Bytes a multipart body may have besides its components: each part's boundary and headers
/// (bounded by the parser) for every component a version may have.
const MULTIPART_OVERHEAD: usize = MAX_COMPONENTS * (10 << 10);

pub(super) async fn deploy(
    State(state): State<ApiState>,
    Authed(env): Authed,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<(StatusCode, Json<dto::DeploymentDto>), ApiError> {
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
    let deployment = state.engine.deploy_components(&env, uploads).await?;
    Ok((
        StatusCode::CREATED,
        Json(dto::DeploymentDto::from(&deployment)),
    ))
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
