//! `kiln env …`: an environment's variables — list, get, set, rm, and import from a `.env` file.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::client::{Client, ClientArgs, encode, print_json, s};

/// Which environment's variables: the secret key must be that environment's.
#[derive(Debug, Args)]
pub(super) struct Target {
    /// Project slug of the environment.
    #[arg(long, env = "KILN_PROJECT", default_value = "default")]
    project: String,
    /// Environment slug.
    #[arg(long = "env", env = "KILN_ENV", default_value = "dev")]
    environment: String,
    #[command(flatten)]
    client: ClientArgs,
}

impl Target {
    fn path(&self, rest: &str) -> String {
        format!(
            "/api/v1/projects/{}/envvars/{}{rest}",
            encode(&self.project),
            encode(&self.environment)
        )
    }
}

#[derive(Debug, Subcommand)]
pub(super) enum EnvCommand {
    /// List the variables' names (and values with --show-values).
    List {
        #[arg(long)]
        show_values: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Print one variable's value.
    Get {
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Set a variable (creating or changing it). Runs that already started keep the value they
    /// started with.
    Set {
        name: String,
        value: String,
        #[command(flatten)]
        target: Target,
    },
    /// Delete a variable.
    Rm {
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Set the variables of a `.env` file (`NAME=value` lines; `#` comments, `export` and
    /// quotes allowed) in one go.
    Import {
        file: PathBuf,
        /// Change variables that exist (otherwise they keep their values).
        #[arg(long = "override")]
        overwrite: bool,
        #[command(flatten)]
        target: Target,
    },
}

pub(super) async fn env(cmd: EnvCommand) -> anyhow::Result<()> {
    match cmd {
        EnvCommand::List {
            show_values,
            target,
        } => {
            let c = Client::new(&target.client)?;
            let list = c.send(c.get(&target.path(""))).await?;
            if target.client.json {
                return print_json(&list);
            }
            let vars = list.as_array().cloned().unwrap_or_default();
            if vars.is_empty() {
                println!("no variables");
            }
            for v in &vars {
                if show_values {
                    println!("{}={}", s(&v["name"]), s(&v["value"]));
                } else {
                    println!("{}", s(&v["name"]));
                }
            }
        }
        EnvCommand::Get { name, target } => {
            let c = Client::new(&target.client)?;
            let v = c
                .send(c.get(&target.path(&format!("/{}", encode(&name)))))
                .await?;
            if target.client.json {
                return print_json(&v);
            }
            println!("{}", s(&v["value"]));
        }
        EnvCommand::Set {
            name,
            value,
            target,
        } => {
            let c = Client::new(&target.client)?;
            let body = json!({ "variables": { name.clone(): value }, "override": true });
            let v = c.send(c.post(&target.path("/import")).json(&body)).await?;
            if target.client.json {
                return print_json(&v);
            }
            eprintln!("set {name}");
        }
        EnvCommand::Rm { name, target } => {
            let c = Client::new(&target.client)?;
            let v = c
                .send(c.delete(&target.path(&format!("/{}", encode(&name)))))
                .await?;
            if target.client.json {
                return print_json(&v);
            }
            eprintln!("deleted {name}");
        }
        EnvCommand::Import {
            file,
            overwrite,
            target,
        } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let vars = parse_dotenv(&text).with_context(|| format!("in {}", file.display()))?;
            let count = vars.len();
            let variables: serde_json::Map<String, Value> =
                vars.into_iter().map(|(k, v)| (k, Value::from(v))).collect();
            let c = Client::new(&target.client)?;
            let body = json!({ "variables": variables, "override": overwrite });
            let v = c.send(c.post(&target.path("/import")).json(&body)).await?;
            if target.client.json {
                return print_json(&v);
            }
            let kept: Vec<&str> = v["kept"]
                .as_array()
                .map(|k| k.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            eprintln!("imported {} of {count} variables", count - kept.len());
            if !kept.is_empty() {
                eprintln!(
                    "kept the existing values of {} (pass --override to change them)",
                    kept.join(", ")
                );
            }
        }
    }
    Ok(())
}

/// `NAME=value` pairs of a `.env` file, in order. Blank lines and `#` comments are skipped, an
/// `export ` prefix is allowed; a value may be in double quotes (with `\n`, `\"` and `\\`
/// escapes) or single quotes (taken as written); an unquoted value ends at ` #`.
pub(super) fn parse_dotenv(text: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut vars = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((name, raw)) = line.split_once('=') else {
            bail!("line {line_no}: expected NAME=value");
        };
        let name = name.trim().to_owned();
        let raw = raw.trim();
        let value = if let Some(rest) = raw.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = rest.chars();
            loop {
                match chars.next() {
                    None => bail!("line {line_no}: the double quote is not closed"),
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some('n') => value.push('\n'),
                        Some('t') => value.push('\t'),
                        Some(c) => value.push(c),
                        None => bail!("line {line_no}: the double quote is not closed"),
                    },
                    Some(c) => value.push(c),
                }
            }
            value
        } else if let Some(rest) = raw.strip_prefix('\'') {
            match rest.split_once('\'') {
                Some((value, _)) => value.to_owned(),
                None => bail!("line {line_no}: the single quote is not closed"),
            }
        } else {
            raw.split(" #").next().unwrap_or_default().trim().to_owned()
        };
        vars.push((name, value));
    }
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::parse_dotenv;

    #[test]
    fn dotenv_files_parse_like_the_common_tools() {
        let text = r#"
# a comment
API_KEY=sk-123
export REGION = eu-west-1
QUOTED="a \"b\"\nc"  # trailing comment
SINGLE='raw \n # kept'
EMPTY=
INLINE=value # comment
HASH=a#b
"#;
        let vars = parse_dotenv(text).unwrap();
        let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            pairs,
            [
                ("API_KEY", "sk-123"),
                ("REGION", "eu-west-1"),
                ("QUOTED", "a \"b\"\nc"),
                ("SINGLE", "raw \\n # kept"),
                ("EMPTY", ""),
                ("INLINE", "value"),
                ("HASH", "a#b"),
            ]
        );
        let error = parse_dotenv("OK=1\nnot a pair\n").unwrap_err();
        assert!(error.to_string().contains("line 2"), "{error}");
        assert!(parse_dotenv("X=\"open").is_err());
    }
}
