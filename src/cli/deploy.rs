//! `kiln deploy`: uploads component files as the environment's newest version — one as the
//! request body, several as `multipart/form-data` (a part per file, named by its file name) —
//! reporting progress on stderr while a large upload is sent.

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
    let request = c.post("/api/v1/deployments");
    let request = match components.len() {
        1 => {
            let (_, bytes) = components.remove(0);
            request
                .header("content-type", "application/wasm")
                .header("content-length", bytes.len())
                .body(upload_with_progress(bytes))
        }
        _ => {
            let boundary = format!("kiln-{:032x}", rand::random::<u128>());
            let body = crate::api::multipart::form_data(
                &boundary,
                components
                    .into_iter()
                    .map(|(name, bytes)| (Some(name), bytes)),
            );
            request
                .header(
                    "content-type",
                    format!("multipart/form-data; boundary={boundary}"),
                )
                .header("content-length", body.len())
                .body(upload_with_progress(body))
        }
    };
    let d = c.send(request).await?;
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
            eprintln!("uploaded; the host is compiling and checking the upload…");
        }
        Ok::<_, std::io::Error>(chunk)
    }));
    reqwest::Body::wrap_stream(stream)
}
