//! Wait tokens: made by a run (`wait.create-token`) or over the API, completed over the API, the
//! CLI or their callback URL, or timed out by the timer; a run waiting for one is checkpointed
//! until then.
//!
//! A token's callback URL carries its own capability: an HMAC-SHA256 of the token id under a
//! host secret, so the URL completes that token only, needs no stored secret per token, and is
//! the same whenever it is shown (or replayed).

use super::{Engine, EngineError};
use crate::keys::{hmac_sha256, same};
use crate::model::{Environment, NewToken, WaitToken};
use crate::sandbox::TokenRequest;
use crate::store::TokenFilter;

/// Default lifetime of a token's idempotency key (Trigger.dev's).
const DEFAULT_TOKEN_KEY_TTL_MS: u64 = 30 * 24 * 3_600_000;

/// Hex characters of the callback capability in a token's URL (128 bits).
const CALLBACK_HEX: usize = 32;

/// Where tokens' callback URLs point and the key that signs them; set once the host listens.
#[derive(Debug, Clone)]
pub struct TokenUrls {
    /// The API's base URL as clients reach it, e.g. `http://127.0.0.1:3030`.
    pub base: String,
    pub secret: Vec<u8>,
}

impl Engine {
    /// Sets where tokens' callback URLs point and the key that signs them.
    pub fn set_token_urls(&self, urls: TokenUrls) {
        let _ = self.token_urls.set(urls);
    }

    fn callback_capability(&self, id: &str) -> String {
        let secret = self
            .token_urls
            .get()
            .map_or(&[][..], |u| u.secret.as_slice());
        hmac_sha256(secret, id.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()[..CALLBACK_HEX]
            .to_owned()
    }

    /// The URL that completes token `id` when POSTed JSON.
    pub fn token_url(&self, id: &str) -> String {
        let base = self.token_urls.get().map_or("", |u| u.base.as_str());
        format!(
            "{}/api/v1/waitpoints/tokens/{id}/callback/{}",
            base.trim_end_matches('/'),
            self.callback_capability(id)
        )
    }

    pub(super) fn new_token(&self, env_id: &str, request: &TokenRequest) -> NewToken {
        let now = self.now();
        let later = |ms: u64| now.saturating_add(i64::try_from(ms).unwrap_or(i64::MAX));
        NewToken {
            environment_id: env_id.to_owned(),
            timeout_at: request.timeout_ms.map(later),
            idempotency: request.idempotency_key.clone().map(|k| {
                (
                    k,
                    later(
                        request
                            .idempotency_key_ttl_ms
                            .unwrap_or(DEFAULT_TOKEN_KEY_TTL_MS),
                    ),
                )
            }),
            tags: request.tags.clone(),
            now,
        }
    }

    /// Makes a wait token (or returns the live one with the same idempotency key, `true`).
    pub async fn create_token(
        &self,
        env: &Environment,
        request: TokenRequest,
    ) -> Result<(WaitToken, bool), EngineError> {
        crate::sandbox::check_token_request(&request).map_err(EngineError::InvalidToken)?;
        let new = self.new_token(&env.id, &request);
        let created = self.store.create_token(new, None).await?;
        self.arm_timer(created.0.timeout_at);
        Ok(created)
    }

    /// A token of the environment.
    pub async fn token(&self, env: &Environment, id: &str) -> Result<WaitToken, EngineError> {
        self.store
            .token(&env.id, id)
            .await?
            .ok_or_else(|| EngineError::TokenNotFound(id.to_owned()))
    }

    /// One page of the environment's tokens, newest first, and whether more follow.
    pub async fn list_tokens(
        &self,
        env: &Environment,
        filter: TokenFilter,
        limit: usize,
        after: Option<String>,
        before: Option<String>,
    ) -> Result<(Vec<WaitToken>, bool), EngineError> {
        Ok(self
            .store
            .list_tokens(&env.id, filter, limit, after, before)
            .await?)
    }

    /// Completes a token of the environment with JSON `data` and resumes the runs waiting for
    /// it. Completing a token that is already done changes nothing.
    pub async fn complete_token(
        &self,
        env: &Environment,
        id: &str,
        data: String,
    ) -> Result<WaitToken, EngineError> {
        self.finish_token(Some(env.id.clone()), id, data).await
    }

    /// Completes a token through its callback URL: `capability` must be the one in its URL.
    pub async fn complete_token_by_callback(
        &self,
        id: &str,
        capability: &str,
        data: String,
    ) -> Result<WaitToken, EngineError> {
        if !same(
            self.callback_capability(id).as_bytes(),
            capability.as_bytes(),
        ) {
            return Err(EngineError::TokenNotFound(id.to_owned()));
        }
        self.finish_token(None, id, data).await
    }

    async fn finish_token(
        &self,
        env: Option<String>,
        id: &str,
        data: String,
    ) -> Result<WaitToken, EngineError> {
        let (token, lanes) = self
            .store
            .complete_token(env, id, data, self.now())
            .await?
            .ok_or_else(|| EngineError::TokenNotFound(id.to_owned()))?;
        self.activate(lanes.into_iter().flatten());
        Ok(token)
    }
}
