//! `kiln deploy`: uploads component files as the environment's newest version — as
//! `multipart/form-data`, a part per file, named by its file name —
//! reporting progress on stderr while a large upload is sent, then while the host compiles it
//! in the background, until the version is stored or refused.

use std::path::PathBuf;

use anyhow::Context as _;

use super::client::{Client, ClientArgs, print_json, s};

/// Uploads `files` as one version; prints it and its tasks (with their component, for several).
pub(super) async fn deploy(files: Vec<PathBuf>, client: ClientArgs) -> anyhow::Result<()> {
    let mut components = Vec::with_capacity(files.len());
    for file in &files {
        let bytes =
            std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| file.display().to_string());
        components.push((name, bytes));
    }
    let c = Client::new(&client)?;
    // Always `multipart/form-data`, so the version keeps each component's file name.
    let boundary = format!("kiln-{:032x}", rand::random::<u128>());
    let body = crate::api::multipart::form_data(
        &boundary,
        components
            .into_iter()
            .map(|(name, bytes)| (Some(name), bytes)),
    );
    let body_len = body.len();
    let request = c
        .post("/api/v1/deployments")
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .header("content-length", body.len())
        .body(upload_with_progress(body));
    let loud = body_len >= PROGRESS_FROM_BYTES;
    let accepted = c.send(request).await?;
    let d = follow(&c, &accepted, loud).await?;
    if client.json {
        return print_json(&d);
    }
    let tasks: Vec<&str> = d["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["id"].as_str())
        .collect();
    println!(
        "deployed version {} with tasks [{}]",
        s(&d["version"]),
        tasks.join(", ")
    );
    let components = d["components"].as_array().map_or(&[][..], Vec::as_slice);
    if components.len() > 1 {
        for component in components {
            let ids: Vec<&str> = component["tasks"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t.as_str())
                .collect();
            let name = component["name"]
                .as_str()
                .or_else(|| component["contentHash"].as_str())
                .unwrap_or("?");
            println!("  {name}: [{}]", ids.join(", "));
        }
    }
    Ok(())
}

/// How often the deploy's status is read while the host compiles.
const POLL: std::time::Duration = std::time::Duration::from_millis(250);
/// Compiles shorter than this print no progress.
const QUIET_FOR: std::time::Duration = std::time::Duration::from_secs(1);

/// Follows a deploy the host accepted until it ends: the deployment, or the error that refused
/// it. Prints a line on stderr when the phase changes (at once after a large upload, else once
/// the compile takes long enough to notice), and every few seconds while one lasts.
async fn follow(
    c: &Client,
    accepted: &serde_json::Value,
    loud: bool,
) -> anyhow::Result<serde_json::Value> {
    let id = accepted["id"]
        .as_str()
        .context("the host's answer to the upload has no deploy id")?;
    let started = std::time::Instant::now();
    let (mut shown, mut last_line) = (String::new(), started);
    let mut status = accepted.clone();
    loop {
        match status["status"].as_str() {
            Some("DEPLOYED") => return Ok(status["deployment"].clone()),
            Some("FAILED") => {
                let error = &status["error"];
                anyhow::bail!(
                    "{} (HTTP {})",
                    error["message"].as_str().unwrap_or("the deploy failed"),
                    error["status"]
                );
            }
            Some("QUEUED" | "COMPILING") => {}
            other => anyhow::bail!(
                "the host answered the deploy with an unknown status {other:?}: {status}"
            ),
        }
        let progress = &status["progress"];
        let line = progress_line(progress);
        let now = std::time::Instant::now();
        // A deploy waits for the compiler only a moment unless another one is compiling.
        let waited_long =
            progress["phase"] != "waiting" || progress["elapsedMs"].as_u64().unwrap_or(0) >= 1_000;
        if (loud || started.elapsed() >= QUIET_FOR)
            && waited_long
            && (line.phase != shown || now - last_line >= std::time::Duration::from_secs(5))
        {
            eprintln!("{}", line.text);
            shown = line.phase;
            last_line = now;
        }
        tokio::time::sleep(POLL).await;
        status = c
            .send(c.get(&format!("/api/v1/deploys/{id}")))
            .await
            .with_context(|| format!("following deploy {id}"))?;
    }
}

/// A progress line, and the phase it is about (a new phase prints at once).
struct ProgressLine {
    phase: String,
    text: String,
}

fn progress_line(p: &serde_json::Value) -> ProgressLine {
    let name = p["name"].as_str().unwrap_or("the component");
    let of = match p["components"].as_u64() {
        Some(n) if n > 1 => format!(" ({} of {n})", p["component"]),
        _ => String::new(),
    };
    let secs = |v: &serde_json::Value| v.as_u64().map(|ms| ms as f64 / 1000.0);
    let elapsed = secs(&p["elapsedMs"]).unwrap_or(0.0);
    let phase = p["phase"].as_str().unwrap_or("compiling");
    let text = match phase {
        "waiting" => format!("waiting for another deploy to finish compiling… {elapsed:.0} s"),
        "compiling" => match secs(&p["estimatedMs"]) {
            Some(total) => format!(
                "compiling {name}{of}… {elapsed:.0} s of about {:.0} s",
                total.max(1.0)
            ),
            None => format!("compiling {name}{of}… {elapsed:.0} s"),
        },
        "definitions" => format!("reading the tasks of {name}{of}…"),
        _ => "storing the version…".to_owned(),
    };
    ProgressLine {
        phase: format!("{phase}{of}"),
        text,
    }
}

/// Components above this size report upload progress on stderr.
const PROGRESS_FROM_BYTES: usize = 4 << 20;

/// The request body of an upload: sent in chunks, reporting progress on stderr for a large
/// component, then saying that the host is compiling it (which takes a while for big ones).
fn upload_with_progress(bytes: Vec<u8>) -> reqwest::Body {
    const CHUNK: usize = 256 << 10;
    let total = bytes.len();
    if total < PROGRESS_FROM_BYTES {
        return reqwest::Body::from(bytes);
    }
    let mib = |n: usize| n as f64 / f64::from(1 << 20);
    eprintln!("uploading {:.1} MiB", mib(total));
    let chunks: Vec<bytes::Bytes> = bytes
        .chunks(CHUNK)
        .map(bytes::Bytes::copy_from_slice)
        .collect();
    let mut sent = 0usize;
    let mut last_tenth = 0;
    let stream = futures_util::stream::iter(chunks.into_iter().map(move |chunk| {
        sent += chunk.len();
        let tenth = sent * 10 / total;
        if tenth > last_tenth {
            last_tenth = tenth;
            eprintln!(
                "  {:>3}% ({:.1} of {:.1} MiB)",
                tenth * 10,
                mib(sent),
                mib(total)
            );
        }
        if sent == total {
            eprintln!("uploaded; the host compiles and checks it in the background");
        }
        Ok::<_, std::io::Error>(chunk)
    }));
    reqwest::Body::wrap_stream(stream)
}
