//! Tasks in TypeScript: `examples/js` built from source with `@kiln-run/sdk` (`npm run build`:
//! esbuild + componentize-js), deployed to a real host and driven through every outcome a run can
//! have — see `sdk_scenarios`.

use std::time::Instant;

use serde_json::json;

use crate::sdk_build::{assert_wit_copies_match, js_component};
use crate::sdk_scenarios as s;
use crate::support::TestHost;

/// `charge` is a `schemaTask`: its schema runs before `run` and a payload it rejects aborts the
/// run; its `onStart` hook and `logger.trace` span write their lines.
async fn a_schema_task_checks_its_payload_before_it_runs(host: &TestHost) {
    let id = host.trigger("charge", json!({ "cents": 250 })).await;
    let run = host.wait_final(&id).await;
    assert_eq!(run["status"], "COMPLETED", "{run:#}");
    assert_eq!(run["output"], json!({ "charged": 250 }), "{run:#}");
    let (_, logs) = host.get(&format!("/api/v1/runs/{id}/logs")).await;
    let messages: Vec<_> = logs["data"]
        .as_array()
        .expect("log lines")
        .iter()
        .map(|l| l["message"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        messages,
        ["charging", "charge: start", "charge: end"],
        "{logs:#}"
    );

    let id = host.trigger("charge", json!({ "cents": -1 })).await;
    let run = host.wait_final(&id).await;
    assert_eq!(run["status"], "FAILED", "{run:#}");
    assert_eq!(
        run["attemptCount"], 1,
        "a rejected payload is not retried: {run:#}"
    );
    assert_eq!(run["error"]["name"], "TaskPayloadParsedError", "{run:#}");
    assert_eq!(
        run["error"]["message"], "cents must be a positive integer",
        "{run:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typescript_tasks_built_with_the_sdk_run_with_trigger_dev_semantics() {
    assert_wit_copies_match();
    let component = tokio::task::spawn_blocking(js_component)
        .await
        .expect("the TypeScript build");
    let host = s::host().await;
    let deploying = Instant::now();
    let tasks = s::deploy(&host, component).await;
    eprintln!(
        "deploy (TypeScript): {:.1} s",
        deploying.elapsed().as_secs_f64()
    );
    s::definitions_are_deployed(&tasks);
    assert_eq!(
        tasks["nightly"]["schedule"]["timezone"], "Europe/Berlin",
        "{tasks:#}"
    );

    let running = Instant::now();
    tokio::join!(
        s::the_quick_tiers_code_is_replaced_and_a_run_checkpointed_on_it_resumes(&host, &tasks),
        s::hello_completes_with_its_output_and_a_structured_log_line(&host),
        s::a_thrown_error_fails_the_attempt_and_is_retried_by_the_policy(&host),
        s::an_abort_fails_the_run_without_a_retry(&host),
        s::a_long_wait_checkpoints_and_the_replay_continues_from_it(&host, 1.0),
        s::a_token_completed_over_the_api_resumes_the_run_with_its_data(&host),
        s::child_runs_give_the_parent_their_outputs_and_errors(&host),
        s::metadata_changes_apply_in_order_to_the_run(&host),
        s::a_fan_out_waits_for_every_child_in_order(&host),
        s::http_reaches_an_allowed_host_and_is_refused_elsewhere(&host),
        s::environment_variables_reach_the_task(&host),
        a_schema_task_checks_its_payload_before_it_runs(&host),
    );
    eprintln!(
        "scenarios (TypeScript): {:.1} s",
        running.elapsed().as_secs_f64()
    );
}
