//! Environment variables of an environment (Trigger.dev's `envvars` endpoints): validated here,
//! sealed with the host's secrets key before the store sees them, opened only for the environment's
//! key holders and for the guest, which sees its run's copy through WASI.

use super::{Engine, EngineError};
use crate::model::Environment;
use crate::secrets::SecretBox;
use crate::store::{StoreError, StoredVar};

/// Variables one environment may hold.
pub const MAX_ENV_VARS: usize = 500;
/// Longest name and value.
pub const MAX_ENV_NAME_LEN: usize = 256;
pub const MAX_ENV_VALUE_BYTES: usize = 64 << 10;
/// Names kiln keeps for itself.
pub const RESERVED_PREFIX: &str = "KILN_";

/// Binds a sealed value to its environment and name.
fn context(environment_id: &str, name: &str) -> Vec<u8> {
    [environment_id.as_bytes(), b"\0", name.as_bytes()].concat()
}

/// `Ok` if `name` may be an environment variable's name; otherwise what is wrong with it.
pub fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok
        || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        || name.len() > MAX_ENV_NAME_LEN
    {
        return Err(format!(
            "`{name}` is not a valid variable name: use 1 to {MAX_ENV_NAME_LEN} letters, digits and `_`, not starting with a digit"
        ));
    }
    if name.starts_with(RESERVED_PREFIX) {
        return Err(format!(
            "`{name}`: names starting with {RESERVED_PREFIX} are kiln's own"
        ));
    }
    Ok(())
}

fn check_value(name: &str, value: &str) -> Result<(), String> {
    if value.len() > MAX_ENV_VALUE_BYTES {
        return Err(format!(
            "the value of `{name}` is {} bytes; the limit is {MAX_ENV_VALUE_BYTES}",
            value.len()
        ));
    }
    if value.contains('\0') {
        return Err(format!("the value of `{name}` contains a NUL character"));
    }
    Ok(())
}

/// A variable as its environment's key holders read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
    pub is_secret: bool,
}

/// Opens stored variables into `(name, value)` pairs, as a run's environment.
pub(super) fn open_all(
    secrets: &SecretBox,
    vars: &[StoredVar],
) -> Result<Vec<(String, String)>, EngineError> {
    vars.iter()
        .map(|v| Ok((v.name.clone(), open(secrets, v)?)))
        .collect()
}

fn open(secrets: &SecretBox, v: &StoredVar) -> Result<String, EngineError> {
    let plain = secrets
        .open(&context(&v.environment_id, &v.name), &v.sealed)
        .map_err(|e| EngineError::Secrets(e.to_string()))?;
    String::from_utf8(plain).map_err(|_| EngineError::Secrets(format!("`{}` is not UTF-8", v.name)))
}

fn opened(secrets: &SecretBox, v: &StoredVar) -> Result<EnvVar, EngineError> {
    Ok(EnvVar {
        name: v.name.clone(),
        value: open(secrets, v)?,
        is_secret: v.is_secret,
    })
}

impl Engine {
    /// Every variable of `env`, by name, with its value.
    pub async fn env_vars(&self, env: &Environment) -> Result<Vec<EnvVar>, EngineError> {
        let vars = self.store.env_vars(&env.id).await?;
        vars.iter().map(|v| opened(&self.secrets, v)).collect()
    }

    pub async fn env_var(&self, env: &Environment, name: &str) -> Result<EnvVar, EngineError> {
        let var = self
            .store
            .env_var(&env.id, name)
            .await?
            .ok_or_else(|| EngineError::EnvVarNotFound(name.to_owned()))?;
        opened(&self.secrets, &var)
    }

    /// Sets variables in one transaction. `overwrite: false` leaves existing names alone and
    /// returns them. `secret` makes them secret (a secret one stays secret either way).
    pub async fn put_env_vars(
        &self,
        env: &Environment,
        vars: Vec<(String, String)>,
        overwrite: bool,
        secret: bool,
    ) -> Result<Vec<String>, EngineError> {
        // Refused before any sealing work; the store checks the total after the write.
        if vars.len() > MAX_ENV_VARS {
            return Err(EngineError::InvalidEnvVar(format!(
                "an environment holds at most {MAX_ENV_VARS} variables; this request sets {}",
                vars.len()
            )));
        }
        let mut sealed = Vec::with_capacity(vars.len());
        for (name, value) in vars {
            check_name(&name).map_err(EngineError::InvalidEnvVar)?;
            check_value(&name, &value).map_err(EngineError::InvalidEnvVar)?;
            sealed.push(StoredVar {
                environment_id: env.id.clone(),
                sealed: self
                    .secrets
                    .seal(&context(&env.id, &name), value.as_bytes()),
                name,
                is_secret: secret,
            });
        }
        match self
            .store
            .put_env_vars(&env.id, sealed, overwrite, MAX_ENV_VARS, self.now())
            .await
        {
            Err(StoreError::Refused(message)) => Err(EngineError::InvalidEnvVar(message)),
            other => Ok(other?),
        }
    }

    /// Creates one variable; `EnvVarExists` if the name is taken.
    pub async fn create_env_var(
        &self,
        env: &Environment,
        name: String,
        value: String,
        secret: bool,
    ) -> Result<(), EngineError> {
        let kept = self
            .put_env_vars(env, vec![(name.clone(), value)], false, secret)
            .await?;
        if kept.is_empty() {
            Ok(())
        } else {
            Err(EngineError::EnvVarExists(name))
        }
    }

    /// Changes the value of an existing variable; `EnvVarNotFound` if there is none.
    pub async fn update_env_var(
        &self,
        env: &Environment,
        name: String,
        value: String,
    ) -> Result<(), EngineError> {
        if self.store.env_var(&env.id, &name).await?.is_none() {
            return Err(EngineError::EnvVarNotFound(name));
        }
        self.put_env_vars(env, vec![(name, value)], true, false)
            .await?;
        Ok(())
    }

    pub async fn delete_env_var(&self, env: &Environment, name: &str) -> Result<(), EngineError> {
        if self.store.delete_env_var(&env.id, name).await? {
            Ok(())
        } else {
            Err(EngineError::EnvVarNotFound(name.to_owned()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_shell_rules_and_kilns_prefix_is_reserved() {
        for ok in ["API_KEY", "_x", "a1", &"N".repeat(MAX_ENV_NAME_LEN)] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1ABC",
            "A-B",
            "A B",
            "Ä",
            "KILN_RUN",
            &"N".repeat(MAX_ENV_NAME_LEN + 1),
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert!(check_value("X", &"v".repeat(MAX_ENV_VALUE_BYTES)).is_ok());
        assert!(check_value("X", &"v".repeat(MAX_ENV_VALUE_BYTES + 1)).is_err());
        assert!(check_value("X", "a\0b").is_err());
    }
}
