//! `POST /api/v1/auth/jwt/claims`: what the SDK's `auth.createPublicToken` puts in the public
//! access tokens it signs with the secret key — the environment (`sub`), `pub: true`, and the key
//! (`keyId`) kiln checks the signature with. Only a secret key may ask.

use axum::Json;
use axum::extract::State;
use serde_json::Value;

use super::{ApiError, ApiState, KeyAccess};

pub(super) async fn claims(
    State(state): State<ApiState>,
    KeyAccess(access): KeyAccess,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(Value::Object(access.claims(&state).await?)))
}
