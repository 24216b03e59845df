//! How a command reaches the API: the connection arguments (`ClientArgs` with an environment's
//! secret key, `AdminArgs` with the host's admin key), `Client`, which sends a request and turns a
//! failure into a message saying what to do, and the printing helpers every command shares. It
//! never looks into a response beyond its `error` field; the commands do.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::Args;
use serde_json::Value;

use crate::host::{ADMIN_KEY_FILE, DEV_KEY_FILE};

#[derive(Debug, Args)]
pub(super) struct ClientArgs {
    /// URL of the kiln API.
    #[arg(long, env = "KILN_API_URL", default_value = "http://127.0.0.1:3030")]
    api_url: String,
    /// Secret API key; default: the one in <data-dir>/dev.key.
    #[arg(long, env = "KILN_SECRET_KEY", hide_env_values = true)]
    secret_key: Option<String>,
    /// Data dir of a local host, to find its dev key.
    #[arg(long, env = "KILN_DATA_DIR", default_value = ".kiln")]
    data_dir: PathBuf,
    /// Print the API's JSON instead of text.
    #[arg(long)]
    pub(super) json: bool,
}

#[derive(Debug, Args)]
pub(super) struct AdminArgs {
    /// URL of the kiln API.
    #[arg(long, env = "KILN_API_URL", default_value = "http://127.0.0.1:3030")]
    api_url: String,
    /// The host's admin key; default: the one in <data-dir>/admin.key.
    #[arg(long, env = "KILN_ADMIN_KEY", hide_env_values = true)]
    admin_key: Option<String>,
    /// Data dir of a local host, to find its admin key.
    #[arg(long, env = "KILN_DATA_DIR", default_value = ".kiln")]
    data_dir: PathBuf,
    /// Print the API's JSON instead of text.
    #[arg(long)]
    pub(super) json: bool,
}

pub(super) fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

pub(super) fn print_json(v: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Percent-encodes a path segment.
pub(super) fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub(super) struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
}

/// Reads a key file `kiln serve` wrote into its data dir.
fn read_key(data_dir: &Path, file: &str, how: &str) -> anyhow::Result<String> {
    let path = data_dir.join(file);
    let key = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "no key: {how}, or run from the directory where `kiln serve` created {}",
            path.display()
        )
    })?;
    Ok(key.trim().to_owned())
}

impl Client {
    pub(super) fn new(args: &ClientArgs) -> anyhow::Result<Client> {
        let key = match &args.secret_key {
            Some(k) => k.clone(),
            None => read_key(
                &args.data_dir,
                DEV_KEY_FILE,
                "set KILN_SECRET_KEY or --secret-key",
            )?,
        };
        Ok(Client::with_key(&args.api_url, key))
    }

    pub(super) fn admin(args: &AdminArgs) -> anyhow::Result<Client> {
        let key = match &args.admin_key {
            Some(k) => k.clone(),
            None => read_key(
                &args.data_dir,
                ADMIN_KEY_FILE,
                "set KILN_ADMIN_KEY or --admin-key",
            )?,
        };
        Ok(Client::with_key(&args.api_url, key))
    }

    fn with_key(api_url: &str, key: String) -> Client {
        Client {
            http: reqwest::Client::new(),
            base: api_url.trim_end_matches('/').to_owned(),
            key,
        }
    }

    pub(super) fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
    }

    pub(super) fn delete(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .delete(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
    }

    pub(super) fn put(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .put(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
    }

    pub(super) fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
    }

    /// Sends a request and returns the response if it succeeded (for streams); errors as `send`.
    pub(super) async fn open(
        &self,
        request: reqwest::RequestBuilder,
    ) -> anyhow::Result<reqwest::Response> {
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) if e.is_connect() => bail!(
                "cannot reach kiln at {}: start it with `kiln serve` (or set KILN_API_URL to where it runs)",
                self.base
            ),
            Err(e) => return Err(e).context(format!("request to {} failed", self.base)),
        };
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or(text);
        bail!("{message} ({status})")
    }

    pub(super) async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) if e.is_connect() => bail!(
                "cannot reach kiln at {}: start it with `kiln serve` (or set KILN_API_URL to where it runs)",
                self.base
            ),
            Err(e) => return Err(e).context(format!("request to {} failed", self.base)),
        };
        let status = response.status();
        let text = response
            .text()
            .await
            .context("reading the response failed")?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if !status.is_success() {
            let message = body["error"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| body.to_string());
            bail!("{message} (HTTP {})", status.as_u16());
        }
        Ok(body)
    }
}
