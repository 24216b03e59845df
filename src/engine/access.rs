//! Secret keys as credentials: the key a request's bearer names, the keys that may have signed a
//! public access token (opened from their sealed copies), sealing a key made before keys were
//! kept sealed once it is used where tokens are signed, and one-time trigger tokens.

use super::*;
use crate::keys;
use crate::store::ApiKey;

/// Most keys of an environment a token without `keyId` is checked against.
const MAX_CANDIDATE_KEYS: usize = 16;

/// The keys that may have signed a token of an environment.
#[derive(Debug, Clone, Default)]
pub struct SigningKeys {
    /// `None` if there is no such environment.
    pub environment: Option<Environment>,
    /// `(key id, key)` of each active key with a sealed copy.
    pub keys: Vec<(String, String)>,
    /// Active keys without a sealed copy (made before keys were kept sealed, never used since
    /// where tokens are signed): tokens they signed cannot be checked.
    pub unsealed: usize,
}

impl Engine {
    /// The active key whose plaintext this is (looked up by digest).
    pub async fn api_key(&self, plaintext: &str) -> Result<Option<ApiKey>, EngineError> {
        Ok(self.store.api_key(keys::hash(plaintext)).await?)
    }

    /// The keys that may have signed a token of environment `environment_id`: its key `key_id`,
    /// or (for a token without one) its newest active keys.
    pub async fn signing_keys(
        &self,
        environment_id: &str,
        key_id: Option<String>,
    ) -> Result<SigningKeys, EngineError> {
        let found = self
            .store
            .environment_keys(environment_id, key_id, MAX_CANDIDATE_KEYS)
            .await?;
        let mut out = SigningKeys {
            environment: found.first().map(|k| k.environment.clone()),
            ..SigningKeys::default()
        };
        for key in found {
            match key
                .sealed
                .as_ref()
                .and_then(|s| keys::open(&key.hash, s, &self.secrets))
            {
                Some(secret) => out.keys.push((key.id, secret)),
                None => out.unsealed += 1,
            }
        }
        Ok(out)
    }

    /// Keeps a sealed copy of a key made before keys were kept sealed: it is about to sign
    /// tokens kiln must check later. Costs one write, once per such key.
    pub async fn seal_if_unsealed(&self, key: &ApiKey, plaintext: &str) -> Result<(), EngineError> {
        if key.sealed.is_none() {
            self.store
                .seal_key(&key.id, keys::seal(plaintext, &self.secrets))
                .await?;
        }
        Ok(())
    }

    /// Triggers one run with a one-time token (by its digest); `None`, and no run, if the token
    /// was used already.
    pub async fn trigger_once(
        &self,
        env: &Environment,
        item: TriggerItem,
        token_digest: [u8; 32],
    ) -> Result<Option<Inserted>, EngineError> {
        let runs = self
            .prepare_runs(
                &env.id,
                trigger::payload_limit(&env.limits),
                vec![item],
                None,
            )
            .await?;
        let Some(mut inserted) = self.store.insert_runs_once(runs, token_digest).await? else {
            return Ok(None);
        };
        self.inserted(&inserted);
        Ok(inserted.pop())
    }

    /// Uses a one-time token for `used_for`; `false` if it was used already.
    pub async fn use_token(
        &self,
        env: &Environment,
        token_digest: [u8; 32],
        used_for: &str,
    ) -> Result<bool, EngineError> {
        Ok(self
            .store
            .use_token(token_digest, &env.id, used_for, self.now())
            .await?)
    }
}
