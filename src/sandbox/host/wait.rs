//! `kiln:task/wait`: waits for a duration or until a time, and wait tokens (make one, wait for
//! one). A short wait sleeps in place; a long one, or a token still waiting, unwinds the guest so
//! the run checkpoints.
//!
//! Deadlines and token answers are journaled, so a replay waits for the same instant and sees
//! the same token — or the same refusal of a token request.

use std::time::Duration;

use crate::model::Millis;
use crate::sandbox::bindings;
use crate::sandbox::bindings::kiln::task::wait::{
    Token as WitToken, TokenError as WitTokenError, TokenOptions as WitTokenOptions,
};
use crate::sandbox::classify::host_failure;
use crate::sandbox::journal::{self, Call, Format, JournalValue, Kind, calls};
use crate::sandbox::state::Suspend;
use crate::sandbox::{
    HostState, TokenCreated, TokenRequest, TokenState, WaitFor, check_token_request,
};

impl HostState {
    /// A wait: its deadline is journaled (so a replay waits for the same instant), then it sleeps
    /// in place if short, or unwinds the guest to checkpoint.
    async fn wait(
        &mut self,
        call: impl Call,
        deadline: impl FnOnce(Millis) -> Millis,
    ) -> wasmtime::Result<()> {
        let now = self.clock.now();
        let until = self
            .journal()
            .call(Kind::Wait, &call, || journal::number(deadline(now) as u64))
            .map_err(wasmtime::Error::new)?;
        let until = journal::as_number(&until)
            .and_then(|u| i64::try_from(u).ok())
            .unwrap_or(i64::MAX);
        let remaining = until.saturating_sub(now);
        if remaining <= 0 {
            return Ok(());
        }
        let remaining = Duration::from_millis(remaining as u64);
        if remaining > self.wait_threshold {
            return Err(wasmtime::Error::new(Suspend {
                wait: WaitFor::Until(until),
            }));
        }
        tokio::time::sleep(remaining).await;
        // Waiting is not compute: the time limit moves by the time slept.
        self.deadline = self.deadline.map(|d| d + remaining);
        Ok(())
    }
}

impl bindings::kiln::task::wait::Host for HostState {
    async fn for_duration(&mut self, ms: u64) -> wasmtime::Result<()> {
        self.wait(calls::for_duration(ms), |now| {
            now.saturating_add(i64::try_from(ms).unwrap_or(i64::MAX))
        })
        .await
    }

    async fn until(&mut self, at_ms: u64) -> wasmtime::Result<()> {
        self.wait(calls::until(at_ms), |_| {
            i64::try_from(at_ms).unwrap_or(i64::MAX)
        })
        .await
    }

    async fn create_token(
        &mut self,
        options: WitTokenOptions,
    ) -> wasmtime::Result<Result<WitToken, WitTokenError>> {
        let request = TokenRequest {
            timeout_ms: options.timeout_ms,
            idempotency_key: options.idempotency_key,
            idempotency_key_ttl_ms: options.idempotency_key_ttl_ms,
            tags: options.tags,
        };
        let (replayed, digest) = {
            let call = calls::create_token(&request);
            let replayed = self
                .journal()
                .replayed(Kind::CreateToken, &call)
                .map_err(wasmtime::Error::new)?;
            (replayed, call.digest(Format::CURRENT))
        };
        let created = match replayed {
            Some(entry) => {
                match Result::<TokenCreated, String>::decode(entry.format, &entry.value) {
                    Some(Ok(created)) => created,
                    Some(Err(message)) => return Ok(Err(WitTokenError::Invalid(message))),
                    None => {
                        return Err(host_failure("the journal's token entry is corrupt"));
                    }
                }
            }
            None => {
                let services = check_token_request(&request).and_then(|()| {
                    self.services
                        .clone()
                        .ok_or_else(|| "wait tokens can only be made by a run".to_owned())
                });
                // A refusal stores nothing, but is journaled like any answer: a replay must meet
                // it where the guest asked, or the calls after it would not line up.
                let services = match services {
                    Ok(services) => services,
                    Err(message) => {
                        let answer: Result<TokenCreated, String> = Err(message.clone());
                        self.journal().record(
                            Kind::CreateToken,
                            &calls::digested(digest),
                            answer.encode(),
                        );
                        return Ok(Err(WitTokenError::Invalid(message)));
                    }
                };
                let flushed = self.flush()?;
                match services
                    .create_token(request, flushed.clone(), digest)
                    .await
                {
                    Ok(created) => created,
                    Err(e) => {
                        // Nothing was stored: what was flushed goes back, to be stored at the end.
                        self.unflush(flushed);
                        return Err(host_failure(format!("could not make the wait token: {e}")));
                    }
                }
            }
        };
        Ok(Ok(WitToken {
            id: created.id,
            url: created.url,
            is_cached: created.is_cached,
        }))
    }

    async fn for_token(&mut self, id: String) -> wasmtime::Result<Result<String, WitTokenError>> {
        // Each earlier execution that suspended here left a marker; then comes the result, if
        // one was recorded.
        let (state, call) = {
            let call = calls::for_token(&id);
            let mut journal = self.journal();
            journal
                .skip_markers(Kind::TokenPending, &call)
                .map_err(wasmtime::Error::new)?;
            let state = journal
                .replayed(Kind::TokenResult, &call)
                .map_err(wasmtime::Error::new)?;
            (state, calls::digested(call.digest(Format::CURRENT)))
        };
        let state = match state {
            Some(entry) => TokenState::decode(entry.format, &entry.value)
                .ok_or_else(|| host_failure("the journal's token result is corrupt"))?,
            None => {
                let state = match self.services.clone() {
                    Some(services) => services
                        .token_state(id.clone())
                        .await
                        .map_err(|e| host_failure(format!("could not read the wait token: {e}")))?,
                    None => TokenState::NotFound,
                };
                if state == TokenState::Waiting {
                    self.journal().record(Kind::TokenPending, &call, Vec::new());
                    return Err(wasmtime::Error::new(Suspend {
                        wait: WaitFor::Token(id),
                    }));
                }
                self.journal()
                    .record(Kind::TokenResult, &call, state.encode());
                state
            }
        };
        Ok(match state {
            TokenState::Completed(data) => Ok(data),
            TokenState::TimedOut(message) => Err(WitTokenError::TimedOut(message)),
            TokenState::NotFound => Err(WitTokenError::Invalid(format!(
                "wait token `{id}` not found in this environment"
            ))),
            TokenState::Waiting => Err(WitTokenError::Invalid(format!(
                "wait token `{id}` is still waiting"
            ))),
        })
    }
}
