//! `kiln keys …`: create, list and revoke the secret keys of projects' environments, with the
//! host's admin key.

use clap::Subcommand;
use serde_json::Value;

use super::client::{AdminArgs, Client, encode, print_json, s};

#[derive(Debug, Subcommand)]
pub(super) enum KeysCommand {
    /// Create a secret key for an environment (creating the project and environment if new);
    /// prints the key once.
    Create {
        /// Project name, e.g. `acme`.
        #[arg(long, default_value = "default")]
        project: String,
        /// Environment name, e.g. `dev`, `staging`, `prod`.
        #[arg(long = "env")]
        environment: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List every key: id, project, environment, prefix, and whether it is revoked.
    List {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Revoke a key: requests with it are refused at once.
    Revoke {
        /// The key's id (`key_…`, from `kiln keys list`).
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

pub(super) async fn keys(cmd: KeysCommand) -> anyhow::Result<()> {
    let show = |k: &Value| {
        let revoked = k["revokedAt"]
            .as_str()
            .map(|r| format!("  revoked {r}"))
            .unwrap_or_default();
        println!(
            "{}  {}/{}  {}…  created {}{revoked}",
            s(&k["id"]),
            s(&k["project"]),
            s(&k["environment"]),
            s(&k["prefix"]),
            s(&k["createdAt"])
        );
    };
    match cmd {
        KeysCommand::Create {
            project,
            environment,
            admin,
        } => {
            let c = Client::admin(&admin)?;
            let body = serde_json::json!({ "project": project, "environment": environment });
            let k = c.send(c.post("/api/v1/admin/keys").json(&body)).await?;
            if admin.json {
                return print_json(&k);
            }
            println!("{}", s(&k["key"]));
            eprintln!(
                "secret key {} for {}/{}: shown once, store it now",
                s(&k["id"]),
                s(&k["project"]),
                s(&k["environment"])
            );
        }
        KeysCommand::List { admin } => {
            let c = Client::admin(&admin)?;
            let list = c.send(c.get("/api/v1/admin/keys")).await?;
            if admin.json {
                return print_json(&list);
            }
            list["data"].as_array().into_iter().flatten().for_each(show);
        }
        KeysCommand::Revoke { id, admin } => {
            let c = Client::admin(&admin)?;
            let k = c
                .send(c.post(&format!("/api/v1/admin/keys/{}/revoke", encode(&id))))
                .await?;
            if admin.json {
                return print_json(&k);
            }
            show(&k);
        }
    }
    Ok(())
}
