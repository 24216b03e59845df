//! Deployments: uploading a component (read to a bound, then validated and stored by the engine)
//! and listing versions.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::json;

use super::{ApiError, ApiState, Authed, dto};

pub(super) async fn deploy(
    State(state): State<ApiState>,
    Authed(env): Authed,
    body: axum::body::Body,
) -> Result<(StatusCode, Json<dto::DeploymentDto>), ApiError> {
    let body = read_upload(body, state.max_component_bytes).await?;
    let deployment = state.engine.deploy(&env, body).await?;
    Ok((
        StatusCode::CREATED,
        Json(dto::DeploymentDto::from(&deployment)),
    ))
}

/// Reads an upload of at most `limit` bytes. A larger one is refused with 413, but only after
/// reading (and dropping) the rest of it, up to a bound: answering while the client still sends
/// would close the connection under it, and it would see a reset instead of the message.
pub(super) async fn read_upload(body: axum::body::Body, limit: usize) -> Result<Vec<u8>, ApiError> {
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
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the component is larger than the limit of {limit} bytes; shrink it (opt-level \"s\", lto, strip) or raise the host's --max-component-bytes"
            ),
        ));
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
