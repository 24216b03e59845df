//! Uploads: a valid component becomes the next version; every bad upload is refused with a message
//! that says what to do, and nothing is stored.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{self, Options, TestHost, guest, guests};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_component_becomes_the_next_version() {
    let host = TestHost::start().await;
    let first = host.deploy(guests::HELLO).await;
    let version = first["version"].as_str().unwrap();
    let today = jiff::Timestamp::now().strftime("%Y%m%d").to_string();
    assert_eq!(version, format!("{today}.1"));
    let tasks: Vec<&str> = first["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    for task in ["hello", "flaky", "abort", "panic", "echo", "fail", "spin"] {
        assert!(tasks.contains(&task), "{task} in {tasks:?}");
    }
    let second = host.deploy(guests::HELLO).await;
    assert_eq!(second["version"], format!("{today}.2"));
    assert_eq!(second["contentHash"], first["contentHash"]);

    let (status, latest) = host.get("/api/v1/deployments/latest").await;
    assert_eq!(status, 200);
    assert_eq!(latest["version"], second["version"]);
    let (_, list) = host.get("/api/v1/deployments").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 2);

    // New runs use the latest version.
    let run = host.trigger("echo", json!([1, 2, 3])).await;
    let run = host.wait_final(&run).await;
    assert_eq!(run["version"], second["version"]);
    assert_eq!(run["output"], json!([1, 2, 3]));
}

/// Uploads `bytes`, expects `status` and a message containing every `needle`, and checks that
/// nothing was stored.
async fn refused(host: &TestHost, bytes: Vec<u8>, status: StatusCode, needles: &[&str]) {
    let (got, body) = host.upload(bytes).await;
    assert_eq!(got, status, "{body}");
    let message = body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("an error message: {body}"));
    for needle in needles {
        assert!(
            message.contains(needle),
            "{message:?} should mention {needle:?}"
        );
    }
    let (_, list) = host.get("/api/v1/deployments").await;
    assert_eq!(
        list["data"],
        json!([]),
        "nothing is stored after: {message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_are_refused_and_nothing_is_stored() {
    let host = TestHost::start().await;
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    refused(&host, Vec::new(), StatusCode::BAD_REQUEST, &["empty"]).await;
    refused(
        &host,
        b"hello, I am not wasm".to_vec(),
        unprocessable,
        &["not WebAssembly"],
    )
    .await;
    refused(
        &host,
        b"\0asm\x01\0\0\0".to_vec(),
        unprocessable,
        &["core WebAssembly module", "wasm32-wasip2"],
    )
    .await;
    let mut truncated = guest(guests::HELLO);
    truncated.truncate(truncated.len() / 2);
    refused(&host, truncated, unprocessable, &["component is invalid"]).await;
    refused(
        &host,
        guest(guests::NOT_A_TASK),
        unprocessable,
        &["does not export", "`definitions`", "`run`"],
    )
    .await;
    refused(
        &host,
        guest(guests::BAD_UNKNOWN_IMPORT),
        unprocessable,
        &["example:unknown/thing", "kiln does not provide"],
    )
    .await;
    refused(
        &host,
        guest(guests::BAD_DEFINITIONS_TRAP),
        unprocessable,
        &["`definitions()` failed", "crashed"],
    )
    .await;
    refused(
        &host,
        support::wat_guest("bad-definitions-loop"),
        unprocessable,
        &["`definitions()` failed", "fuel"],
    )
    .await;
    refused(
        &host,
        support::wat_guest("bad-definitions-alloc"),
        unprocessable,
        &["`definitions()` failed", "out of memory"],
    )
    .await;
    // A custom section that claims 4 GiB: the parser must not trust the length.
    let mut bomb = guest(guests::HELLO);
    bomb.extend_from_slice(&[0, 0xff, 0xff, 0xff, 0xff, 0x0f, 4]);
    bomb.extend_from_slice(b"bomb");
    bomb.extend_from_slice(&[0; 64]);
    refused(&host, bomb, unprocessable, &["component is invalid"]).await;
    refused(
        &host,
        guest(guests::BAD_DUPLICATE_IDS),
        unprocessable,
        &["`dup` is declared more than once"],
    )
    .await;
    refused(
        &host,
        guest(guests::BAD_INVALID_ID),
        unprocessable,
        &["`not a valid id!` is invalid"],
    )
    .await;

    // The host is unaffected by all of that.
    host.deploy(guests::HELLO).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_over_the_size_limit_is_refused() {
    let host = TestHost::start_with(Options {
        max_component_bytes: 1000,
        ..Options::default()
    })
    .await;
    // The host reads the rest of an oversized upload before answering, so even a component far
    // over the limit gets the message, not a reset.
    for component in [guest(guests::BAD_DEFINITIONS_TRAP), guest(guests::HELLO)] {
        refused(
            &host,
            component,
            StatusCode::PAYLOAD_TOO_LARGE,
            &["limit of 1000 bytes"],
        )
        .await;
    }
    // Within the limit, the size check passes and the next check speaks.
    refused(
        &host,
        vec![7u8; 1000],
        StatusCode::UNPROCESSABLE_ENTITY,
        &["not WebAssembly"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiled_components_in_memory_stay_within_their_budget_and_evicted_ones_still_run() {
    // A budget no component fits: only the one in use now stays in memory.
    let host = TestHost::start_with(Options {
        compiled_cache_bytes: 1,
        ..Options::default()
    })
    .await;
    host.deploy(guests::BENCH).await;
    host.deploy(guests::HELLO).await;
    // A run waiting on the hello version keeps that version's artifact on disk (the artifacts of
    // versions no run can use are pruned at the next deploy).
    let waiting = host.trigger("approve", json!({})).await;
    host.wait_status(&waiting, "WAITING").await;
    host.deploy(guests::ADVERSARY).await;
    let (count, bytes) = host.compiled_in_memory();
    assert_eq!(count, 1, "{bytes} bytes of code in {count} components");
    // A run locked to an evicted version still runs: its component loads again from disk.
    let (_, list) = host.get("/api/v1/deployments").await;
    let hello_version = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| {
            d["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["id"] == "hello")
        })
        .map(|d| d["version"].as_str().unwrap().to_owned())
        .expect("the hello version is listed");
    let id = host
        .trigger_with(
            "hello",
            json!({ "name": "Ada" }),
            json!({ "lockToVersion": hello_version }),
        )
        .await;
    let run = host.wait_final(&id).await;
    assert_eq!(run["status"], "COMPLETED", "{run:#}");
    assert_eq!(host.compiled_in_memory().0, 1);
    assert_eq!(
        host.compilations(),
        3,
        "loaded from its artifact, not compiled again"
    );
}
