//! Tasks in Python: `examples/python` built from source with `kiln_sdk` (`python -m kiln_sdk
//! build`: componentize-py), deployed to a real host and driven through every outcome a run can
//! have — see `sdk_scenarios` — plus what Python's typed payloads add.

use std::time::Instant;

use serde_json::json;

use crate::sdk_build::{assert_wit_copies_match, python_component};
use crate::sdk_scenarios as s;
use crate::support::TestHost;

/// A payload that does not fit the handler's dataclass fails the run once, as an abort.
async fn a_payload_that_does_not_fit_the_dataclass_aborts_the_run(host: &TestHost) {
    let id = host.trigger("hello", json!({ "name": 42 })).await;
    let run = host.wait_final(&id).await;
    assert_eq!(run["status"], "FAILED", "{run:#}");
    assert_eq!(run["attemptCount"], 1, "{run:#}");
    assert_eq!(run["error"]["name"], "TaskPayloadParsedError", "{run:#}");
    assert!(
        run["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("expected str")),
        "{run:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_tasks_built_with_the_sdk_run_with_trigger_dev_semantics() {
    assert_wit_copies_match();
    let component = tokio::task::spawn_blocking(python_component)
        .await
        .expect("the Python build");
    let host = s::host().await;
    let deploying = Instant::now();
    let tasks = s::deploy(&host, component).await;
    eprintln!(
        "deploy (Python): {:.1} s",
        deploying.elapsed().as_secs_f64()
    );
    s::definitions_are_deployed(&tasks);

    let running = Instant::now();
    tokio::join!(
        s::the_quick_tiers_code_is_replaced_and_a_run_checkpointed_on_it_resumes(&host, &tasks),
        s::hello_completes_with_its_output_and_a_structured_log_line(&host),
        s::a_thrown_error_fails_the_attempt_and_is_retried_by_the_policy(&host),
        s::an_abort_fails_the_run_without_a_retry(&host),
        s::a_long_wait_checkpoints_and_the_replay_continues_from_it(&host, 1000.0),
        s::a_token_completed_over_the_api_resumes_the_run_with_its_data(&host),
        s::child_runs_give_the_parent_their_outputs_and_errors(&host),
        s::metadata_changes_apply_in_order_to_the_run(&host),
        s::a_fan_out_waits_for_every_child_in_order(&host),
        s::http_reaches_an_allowed_host_and_is_refused_elsewhere(&host),
        s::environment_variables_reach_the_task(&host),
        a_payload_that_does_not_fit_the_dataclass_aborts_the_run(&host),
    );
    eprintln!(
        "scenarios (Python): {:.1} s",
        running.elapsed().as_secs_f64()
    );
}
