//! A component kiln must refuse at deploy: task `bad-cron` declares a cron with minute 61, and
//! task `bad-zone` a time zone that does not exist.

use kiln_sdk::prelude::*;
use kiln_sdk::serde_json::Value;

kiln_sdk::tasks![
    Task::new("bad-cron", noop).cron("61 * * * *"),
    Task::new("bad-zone", noop).schedule(Schedule::cron("0 * * * *").timezone("Mars/Olympus_Mons")),
];

fn noop(_payload: Value, _ctx: &Context) -> Result<(), TaskError> {
    Ok(())
}
