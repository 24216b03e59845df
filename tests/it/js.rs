//! Tasks in TypeScript: `examples/js` built from source with `@kiln-run/sdk` (`npm run build`:
//! esbuild + componentize-js), deployed to a real host and driven through every outcome a run can
//! have — see `sdk_scenarios`.

use std::time::Instant;

use crate::sdk_build::{assert_wit_copies_match, js_component};
use crate::sdk_scenarios as s;

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
        s::hello_completes_with_its_output_and_a_structured_log_line(&host),
        s::a_thrown_error_fails_the_attempt_and_is_retried_by_the_policy(&host),
        s::an_abort_fails_the_run_without_a_retry(&host),
        s::a_long_wait_checkpoints_and_the_replay_continues_from_it(&host, 1.0),
        s::a_token_completed_over_the_api_resumes_the_run_with_its_data(&host),
        s::child_runs_give_the_parent_their_outputs_and_errors(&host),
        s::metadata_changes_apply_in_order_to_the_run(&host),
        s::a_fan_out_waits_for_every_child_in_order(&host),
        s::http_reaches_an_allowed_host_and_is_refused_elsewhere(&host),
    );
    eprintln!(
        "scenarios (TypeScript): {:.1} s",
        running.elapsed().as_secs_f64()
    );
}
