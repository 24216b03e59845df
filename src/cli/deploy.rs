//! `kiln deploy`: uploads a component file as the environment's newest version, reporting
//! progress on stderr while a large one is sent.

use std::path::PathBuf;

use anyhow::Context as _;

use super::client::{Client, ClientArgs, print_json, s};

/// Uploads `file`; prints the new version and its tasks.
pub(super) async fn deploy(file: PathBuf, client: ClientArgs) -> anyhow::Result<()> {
    let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let c = Client::new(&client)?;
    let d = c
        .send(
            c.post("/api/v1/deployments")
                .header("content-type", "application/wasm")
                .header("content-length", bytes.len())
                .body(upload_with_progress(bytes)),
        )
        .await?;
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
    Ok(())
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
            eprintln!("uploaded; the host is compiling and checking the component…");
        }
        Ok::<_, std::io::Error>(chunk)
    }));
    reqwest::Body::wrap_stream(stream)
}
