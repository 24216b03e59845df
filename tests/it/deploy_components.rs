//! Versions of several components: deployed together (over HTTP as `multipart/form-data`, with
//! `kiln deploy a.wasm b.wasm`, and with `kiln serve --deploy a --deploy b`), each task run by
//! the component that defines it — on every attempt, after a checkpoint and after a restart — and
//! every bad deploy of several refused with the component it concerns, storing nothing.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::cli::{kiln, ok};
use crate::restart::ServeProcess;
use crate::support::{Options, TestHost, guest, guest_path, guests};

fn digest(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The content hash of the component that defines `task` in a deployment as the API shows it.
fn component_of<'a>(deployment: &'a Value, task: &str) -> &'a str {
    deployment["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == task)
        .unwrap_or_else(|| panic!("{task} is deployed: {deployment:#}"))["component"]
        .as_str()
        .unwrap()
}

async fn final_output(host: &TestHost, task: &str, payload: Value, options: Value) -> Value {
    let id = host.trigger_with(task, payload, options).await;
    let run = host.wait_final(&id).await;
    assert_eq!(run["status"], "COMPLETED", "{task}: {run:#}");
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_deployed_together_run_each_their_own_tasks_until_a_single_deploy_replaces_them()
{
    let host = TestHost::start().await;
    let d = host
        .deploy_together(&[guests::HELLO, guests::ADVERSARY])
        .await;
    let (hello, adversary) = (
        digest(&guest(guests::HELLO)),
        digest(&guest(guests::ADVERSARY)),
    );
    assert_eq!(d["contentHash"], hello, "the first component's: {d:#}");
    assert_eq!(d["components"][0]["name"], "hello.wasm");
    assert_eq!(d["components"][0]["contentHash"], hello);
    assert_eq!(d["components"][1]["name"], "adversary.wasm");
    assert_eq!(d["components"][1]["contentHash"], adversary);
    assert!(
        d["components"][1]["tasks"]
            .as_array()
            .unwrap()
            .contains(&json!("divide"))
    );
    assert_eq!(component_of(&d, "hello"), hello);
    assert_eq!(component_of(&d, "divide"), adversary);
    let (_, latest) = host.get("/api/v1/deployments/latest").await;
    assert_eq!(latest["version"], d["version"]);
    assert_eq!(latest["components"], d["components"], "as stored");

    // Each task runs in its own component, both on the one version.
    let greeted = final_output(&host, "hello", json!({ "name": "Ada" }), json!({})).await;
    assert_eq!(greeted["output"], json!({ "message": "Hello, Ada!" }));
    assert_eq!(greeted["version"], d["version"]);
    let divided = final_output(&host, "divide", json!({ "by": 4 }), json!({})).await;
    assert_eq!(divided["output"], json!(25));
    assert_eq!(divided["version"], d["version"]);

    // A later deploy of one component is the whole task set again, as ever.
    let bench = host.deploy(guests::BENCH).await;
    assert_eq!(bench["components"].as_array().unwrap().len(), 1);
    let id = host.trigger("divide", json!({ "by": 2 })).await;
    host.wait_status(&id, "PENDING_VERSION").await;
    let noop = final_output(&host, "noop", json!(null), json!({})).await;
    assert_eq!(noop["version"], bench["version"]);
    // The version of two still runs its tasks when a run is locked to it.
    let locked = json!({ "lockToVersion": d["version"] });
    let divided = final_output(&host, "divide", json!({ "by": 5 }), locked).await;
    assert_eq!(divided["output"], json!(20));
}

/// Refuses a deploy of `parts` with `status` and a message naming every `needle`, and checks
/// nothing was stored.
async fn refused(
    host: &TestHost,
    parts: Vec<(Option<String>, Vec<u8>)>,
    status: StatusCode,
    needles: &[&str],
) {
    let (got, body) = host.upload_parts(parts).await;
    assert_eq!(got, status, "{body}");
    let message = body["error"].as_str().expect("an error message");
    for needle in needles {
        assert!(
            message.contains(needle),
            "{message:?} should name {needle:?}"
        );
    }
    let (_, list) = host.get("/api/v1/deployments").await;
    assert_eq!(list["data"], json!([]), "nothing stored after: {message}");
}

fn named(name: &str) -> (Option<String>, Vec<u8>) {
    (Some(format!("{name}.wasm")), guest(name))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_two_components_define_is_refused_naming_both_and_nothing_is_stored() {
    let host = TestHost::start().await;
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    // `hello` and `bench` both define `wait`.
    refused(
        &host,
        vec![named(guests::HELLO), named(guests::BENCH)],
        unprocessable,
        &["task `wait`", "`hello.wasm`", "`bench.wasm`"],
    )
    .await;
    // Unnamed parts are named by their digests.
    refused(
        &host,
        vec![(None, guest(guests::BENCH)), (None, guest(guests::HELLO))],
        unprocessable,
        &[
            "task `wait`",
            &digest(&guest(guests::BENCH)),
            &digest(&guest(guests::HELLO)),
        ],
    )
    .await;
    // A bad component among good ones is named with its error, as it would be alone.
    refused(
        &host,
        vec![named(guests::HELLO), named(guests::NOT_A_TASK)],
        unprocessable,
        &["component `not_a_task.wasm`", "does not export"],
    )
    .await;
    refused(
        &host,
        vec![named(guests::ADVERSARY), named(guests::BAD_DUPLICATE_IDS)],
        unprocessable,
        &[
            "component `bad_duplicate_ids.wasm`",
            "`dup` is declared more than once",
        ],
    )
    .await;
    refused(
        &host,
        vec![
            named(guests::HELLO),
            (Some("again.wasm".into()), guest(guests::HELLO)),
        ],
        unprocessable,
        &["`hello.wasm` and `again.wasm` are the same component"],
    )
    .await;
    refused(
        &host,
        vec![
            named(guests::HELLO),
            (Some("empty.wasm".into()), Vec::new()),
        ],
        StatusCode::BAD_REQUEST,
        &["component `empty.wasm`", "empty"],
    )
    .await;
    refused(
        &host,
        Vec::new(),
        StatusCode::BAD_REQUEST,
        &["no component"],
    )
    .await;
    let many = (0..17)
        .map(|i| (Some(format!("{i}.wasm")), vec![1]))
        .collect();
    refused(
        &host,
        many,
        StatusCode::BAD_REQUEST,
        &["more than 16 parts"],
    )
    .await;

    // Bodies that are not multipart as they claim: 4xx, never a panic or a 5xx.
    for (content_type, body) in [
        ("multipart/form-data", &b"--x\r\n\r\nabc\r\n--x--"[..]),
        ("multipart/form-data; boundary=x", b"no boundary in here"),
        ("multipart/form-data; boundary=x", b"--x\r\n\r\nno end"),
        ("multipart/form-data; boundary=x", b"--x junk"),
    ] {
        let resp = reqwest::Client::new()
            .post(format!("{}/api/v1/deployments", host.url))
            .bearer_auth(&host.key)
            .header("content-type", content_type)
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{content_type}");
    }

    // Two that do not clash deploy together.
    host.deploy_together(&[guests::BENCH, guests::ADVERSARY])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_limits_apply_to_each_component_and_to_the_deploy() {
    let host = TestHost::start_with(Options {
        max_component_bytes: 1000,
        max_deploy_bytes: 1500,
        ..Options::default()
    })
    .await;
    // Distinct bytes per name: the same bytes twice would be refused as one component twice.
    let part = |name: &str, size: usize| (Some(name.to_owned()), vec![name.as_bytes()[0]; size]);
    refused(
        &host,
        vec![part("a.wasm", 10), part("big.wasm", 1001)],
        StatusCode::PAYLOAD_TOO_LARGE,
        &["component `big.wasm`", "limit is 1000 bytes"],
    )
    .await;
    refused(
        &host,
        vec![part("a.wasm", 900), part("b.wasm", 900)],
        StatusCode::PAYLOAD_TOO_LARGE,
        &[
            "1800 bytes together",
            "limit is 1500 bytes",
            "--max-deploy-bytes",
        ],
    )
    .await;
    // Far over the total, the body is refused while it is read.
    refused(
        &host,
        vec![part("a.wasm", 400_000)],
        StatusCode::PAYLOAD_TOO_LARGE,
        &["limit of 1500 bytes together"],
    )
    .await;
    // Within both limits the next check speaks.
    refused(
        &host,
        vec![part("a.wasm", 700), part("b.wasm", 700)],
        StatusCode::UNPROCESSABLE_ENTITY,
        &["component `a.wasm`", "not WebAssembly"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_checkpointed_on_a_version_of_two_resumes_in_its_own_component() {
    let (options, clock) = Options::manual_clock();
    let host = TestHost::start_with(options).await;
    // `wait` is hello's here, the second component.
    let two = host
        .deploy_together(&[guests::ADVERSARY, guests::HELLO])
        .await;
    let id = host.trigger("wait", json!({ "ms": 3_600_000 })).await;
    host.wait_status(&id, "WAITING").await;
    // The next version's `wait` is bench's, which returns a string.
    let bench = host.deploy(guests::BENCH).await;
    clock.advance(Duration::from_secs(3_600));
    host.wake();
    let run = host.wait_final(&id).await;
    assert_eq!(run["status"], "COMPLETED", "{run:#}");
    assert_eq!(run["version"], two["version"]);
    assert_eq!(run["attempts"].as_array().unwrap().len(), 1, "{run:#}");
    let out = &run["output"];
    assert_eq!(
        out["after_ms"].as_u64().unwrap() - out["before_ms"].as_u64().unwrap(),
        3_600_000,
        "hello's `wait` replayed its journal: {out}"
    );
    let fresh = host.trigger("wait", json!({ "ms": 0, "kb": 1 })).await;
    let fresh = host.wait_final(&fresh).await;
    assert_eq!(fresh["version"], bench["version"]);
    assert!(fresh["output"].is_string(), "bench's `wait`: {fresh:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_host_loads_each_component_of_a_version() {
    let dir = tempfile::tempdir().unwrap();
    let host = TestHost::start_in(dir.path(), Options::default()).await;
    let d = host
        .deploy_together(&[guests::HELLO, guests::ADVERSARY])
        .await;
    host.stop().await;
    let both = async |host: &TestHost| {
        let locked = json!({ "lockToVersion": d["version"] });
        let greeted = final_output(host, "hello", json!({ "name": "Bo" }), locked.clone()).await;
        assert_eq!(greeted["output"]["message"], "Hello, Bo!");
        let divided = final_output(host, "divide", json!({ "by": 10 }), locked).await;
        assert_eq!(divided["output"], json!(10));
    };

    let host = TestHost::start_in(dir.path(), Options::default()).await;
    both(&host).await;
    assert_eq!(host.compilations(), 0, "both loaded from their artifacts");
    host.stop().await;

    // Without artifacts, each compiles again from the bytes its version stored.
    std::fs::remove_dir_all(dir.path().join("compiled")).unwrap();
    let host = TestHost::start_in(dir.path(), Options::default()).await;
    both(&host).await;
    assert_eq!(host.compilations(), 2);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_and_the_cli_deploy_several_files_as_one_version() {
    let dir = tempfile::tempdir().unwrap();
    let files = [guest_path(guests::HELLO), guest_path(guests::ADVERSARY)];
    let latest = async |host: &ServeProcess| {
        host.call(reqwest::Method::GET, "/api/v1/deployments/latest", None)
            .await
    };
    let host = ServeProcess::start_deploying(dir.path(), &[], &files);
    let first = latest(&host).await;
    let names: Vec<&str> = first["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["hello.wasm", "adversary.wasm"], "{first:#}");
    let banner = |output: &str| {
        output.contains("hello.wasm as version") && output.contains("adversary.wasm as version")
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !banner(&host.output()) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(banner(&host.output()), "{}", host.output());
    host.kill();
    // The same files again: the latest version already is them.
    let host = ServeProcess::start_deploying(dir.path(), &[], &files);
    assert_eq!(latest(&host).await["version"], first["version"]);

    let (bench, adversary) = (guest_path(guests::BENCH), guest_path(guests::ADVERSARY));
    let out = ok(kiln(
        &host,
        &[
            "deploy",
            bench.to_str().unwrap(),
            adversary.to_str().unwrap(),
        ],
    ));
    assert!(out.starts_with("deployed version "), "{out}");
    assert!(
        out.contains("bench.wasm: [noop") && out.contains("adversary.wasm: [loop"),
        "{out}"
    );
    let after = latest(&host).await;
    assert_ne!(after["version"], first["version"]);
    assert_eq!(after["components"][0]["name"], "bench.wasm");
    let id = host.trigger("divide", json!({ "by": 50 })).await;
    let run = host.wait_for(&id, |r| r["isCompleted"] == true).await;
    assert_eq!(run["output"], json!(2), "{run:#}");

    // A clash from the CLI: refused, the message naming both files.
    let hello = guest_path(guests::HELLO);
    let clash = kiln(
        &host,
        &["deploy", hello.to_str().unwrap(), bench.to_str().unwrap()],
    );
    assert!(!clash.status.success());
    let stderr = String::from_utf8_lossy(&clash.stderr);
    assert!(
        stderr.contains("task `wait`")
            && stderr.contains("hello.wasm")
            && stderr.contains("bench.wasm"),
        "{stderr}"
    );
    assert_eq!(latest(&host).await["version"], after["version"]);
}

/// The compiled artifacts on disk, by component digest.
fn artifacts(dir: &std::path::Path) -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir(dir.join("compiled"))
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
        .iter()
        .map(|name| name.split('-').next().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiled_artifacts_no_run_can_use_are_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let host = TestHost::start_in(dir.path(), Options::default()).await;
    let (hello, bench, adversary) = (
        digest(&guest(guests::HELLO)),
        digest(&guest(guests::BENCH)),
        digest(&guest(guests::ADVERSARY)),
    );
    let first = host.deploy(guests::HELLO).await["version"].clone();
    assert_eq!(artifacts(dir.path()), vec![hello.clone()]);
    // A run waits on the first version: its component stays usable after the next deploy.
    let waiting = host.trigger("approve", json!({})).await;
    host.wait_status(&waiting, "WAITING").await;
    host.deploy(guests::BENCH).await;
    let mut both = vec![hello.clone(), bench.clone()];
    both.sort();
    assert_eq!(artifacts(dir.path()), both);

    // The run ends; the next deploy leaves only the latest version's artifact.
    let status = host.complete_newest_token(json!("ok")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(host.wait_final(&waiting).await["status"], "COMPLETED");
    host.deploy(guests::ADVERSARY).await;
    assert_eq!(artifacts(dir.path()), vec![adversary.clone()]);

    // An artifact of another engine configuration, and a torn write, go at the next start.
    let compiled = dir.path().join("compiled");
    std::fs::write(compiled.join(format!("{adversary}-0000.cwasm")), b"old").unwrap();
    std::fs::write(compiled.join(format!("{hello}-0000.cwasm.tmp")), b"torn").unwrap();
    host.stop().await;
    let host = TestHost::start_in(dir.path(), Options::default()).await;
    assert_eq!(artifacts(dir.path()), vec![adversary.clone()]);
    // A run of a pruned version still runs: its component compiles again from the stored bytes.
    let old = final_output(
        &host,
        "hello",
        json!({ "name": "Al" }),
        json!({ "lockToVersion": first }),
    )
    .await;
    assert_eq!(old["status"], "COMPLETED", "{old:#}");
    assert_eq!(old["output"]["message"], "Hello, Al!");
    host.stop().await;
}
