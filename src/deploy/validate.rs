//! Task definitions as a component declares them, checked: ids, queues, retry policies, machines,
//! durations and schedules, each problem named with its task and field.

use std::time::Duration;

use crate::model::{
    MAX_ATTEMPTS_CAP, Machine, QueueDefinition, RetryDefinition, TaskDefinition, TaskSchedule,
};
use crate::sandbox::DeclaredTask;
use crate::schedule::CronSchedule;

use super::{
    MAX_DESCRIPTION_LEN, MAX_ID_LEN, MAX_QUEUE_LIMIT, MAX_RETRY_DELAY_MS, MAX_TASKS,
    MIN_MAX_DURATION,
};

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID_LEN
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn machine(
    field: &str,
    task: &str,
    value: Option<String>,
    problems: &mut Vec<String>,
) -> Option<Machine> {
    let value = value?;
    let parsed = Machine::parse(&value);
    if parsed.is_none() {
        let names: Vec<&str> = Machine::ALL.iter().map(|m| m.as_str()).collect();
        problems.push(format!(
            "task `{task}`: {field} `{value}` is not a machine preset (use one of {})",
            names.join(", ")
        ));
    }
    parsed
}

fn show_limit(limit: Option<u32>) -> String {
    limit.map_or_else(|| "none".to_owned(), |l| l.to_string())
}

/// Checks every declared task; returns all problems found, not just the first.
pub fn validate(declared: Vec<DeclaredTask>) -> Result<Vec<TaskDefinition>, Vec<String>> {
    let mut problems = Vec::new();
    if declared.is_empty() {
        problems.push(
            "the component declares no tasks; return at least one from `definitions()`".into(),
        );
    }
    if declared.len() > MAX_TASKS {
        return Err(vec![format!(
            "the component declares {} tasks; the limit is {MAX_TASKS}",
            declared.len()
        )]);
    }
    let mut seen = std::collections::HashSet::new();
    // Named queue → (first task declaring it, its limit): tasks sharing a queue must agree.
    let mut queue_limits: std::collections::HashMap<String, (String, Option<u32>)> =
        std::collections::HashMap::new();
    let mut tasks = Vec::with_capacity(declared.len());
    for d in declared {
        let id = d.id;
        let shown: String = id.chars().take(MAX_ID_LEN).collect();
        if !valid_name(&id) {
            problems.push(format!(
                "task id `{shown}` is invalid: use 1–{MAX_ID_LEN} characters of letters, digits, `-`, `_` and `.`"
            ));
        } else if !seen.insert(id.clone()) {
            problems.push(format!(
                "task id `{id}` is declared more than once; task ids must be unique"
            ));
        }
        if d.description
            .as_ref()
            .is_some_and(|s| s.len() > MAX_DESCRIPTION_LEN)
        {
            problems.push(format!(
                "task `{shown}`: the description is longer than {MAX_DESCRIPTION_LEN} bytes"
            ));
        }
        let queue = d.queue_name.map(|name| {
            // A task may limit its own queue, `task/<its id>`; other names are named queues.
            let own = name.strip_prefix(crate::model::TASK_QUEUE_PREFIX) == Some(id.as_str());
            if !own && !valid_name(&name) {
                problems.push(format!(
                    "task `{shown}`: queue name `{}` is invalid: use 1–{MAX_ID_LEN} characters of letters, digits, `-`, `_` and `.` (or `task/{shown}` for the task's own queue)",
                    name.chars().take(MAX_ID_LEN).collect::<String>()
                ));
            }
            QueueDefinition {
                name,
                concurrency_limit: d.queue_concurrency_limit,
            }
        });
        if let Some(q) = &queue {
            match queue_limits.get(&q.name) {
                Some((first, limit)) if *limit != q.concurrency_limit => {
                    problems.push(format!(
                        "task `{shown}`: queue `{}` is declared with concurrency limit {} here but {} by task `{first}`; declare one limit for a shared queue",
                        q.name,
                        show_limit(q.concurrency_limit),
                        show_limit(*limit),
                    ));
                }
                Some(_) => {}
                None => {
                    queue_limits.insert(q.name.clone(), (shown.to_string(), q.concurrency_limit));
                }
            }
        }
        if d.queue_concurrency_limit
            .is_some_and(|l| l > MAX_QUEUE_LIMIT)
        {
            problems.push(format!(
                "task `{shown}`: queue concurrency limit must be 0–{MAX_QUEUE_LIMIT}"
            ));
        }
        let retry = match d.retry {
            None => RetryDefinition::default(),
            Some(r) => {
                if r.max_attempts
                    .is_some_and(|n| n == 0 || n > MAX_ATTEMPTS_CAP)
                {
                    problems.push(format!(
                        "task `{shown}`: retry max attempts must be 1–{MAX_ATTEMPTS_CAP}"
                    ));
                }
                if r.factor
                    .is_some_and(|f| !f.is_finite() || f <= 0.0 || f > 100.0)
                {
                    problems.push(format!(
                        "task `{shown}`: retry factor must be a number above 0 and at most 100"
                    ));
                }
                for (name, value) in [
                    ("min timeout", r.min_timeout_ms),
                    ("max timeout", r.max_timeout_ms),
                ] {
                    if value.is_some_and(|v| v > MAX_RETRY_DELAY_MS) {
                        problems.push(format!(
                            "task `{shown}`: retry {name} must be at most {MAX_RETRY_DELAY_MS} ms (24 h)"
                        ));
                    }
                }
                if let (Some(min), Some(max)) = (r.min_timeout_ms, r.max_timeout_ms)
                    && min > max
                {
                    problems.push(format!(
                        "task `{shown}`: retry min timeout ({min} ms) is above the max timeout ({max} ms)"
                    ));
                }
                RetryDefinition {
                    max_attempts: r.max_attempts,
                    factor: r.factor,
                    min_timeout_ms: r.min_timeout_ms,
                    max_timeout_ms: r.max_timeout_ms,
                    randomize: r.randomize,
                    out_of_memory_machine: machine(
                        "retry out-of-memory machine",
                        &shown,
                        r.out_of_memory_machine,
                        &mut problems,
                    ),
                }
            }
        };
        let max_duration = d.max_duration_ms.map(Duration::from_millis);
        if max_duration.is_some_and(|m| m < MIN_MAX_DURATION) {
            problems.push(format!(
                "task `{shown}`: max duration must be at least 5 seconds"
            ));
        }
        let schedule =
            d.schedule.and_then(
                |s| match CronSchedule::parse(&s.cron, s.timezone.as_deref()) {
                    Ok(cron) => Some(TaskSchedule {
                        cron: cron.expression().to_owned(),
                        timezone: cron.timezone().to_owned(),
                    }),
                    Err(e) => {
                        problems.push(format!("task `{shown}`: schedule {e}"));
                        None
                    }
                },
            );
        tasks.push(TaskDefinition {
            schedule,
            machine: machine("machine", &shown, d.machine, &mut problems),
            id,
            description: d.description,
            queue,
            retry,
            max_duration,
            ttl: d.ttl_ms.map(Duration::from_millis),
        });
    }
    if problems.is_empty() {
        Ok(tasks)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str) -> DeclaredTask {
        DeclaredTask {
            id: id.into(),
            description: None,
            queue_name: None,
            queue_concurrency_limit: None,
            retry: None,
            max_duration_ms: None,
            ttl_ms: None,
            machine: None,
            schedule: None,
        }
    }

    #[test]
    fn valid_tasks_pass() {
        let tasks = validate(vec![task("hello"), task("send-email.v2_x")]).unwrap();
        assert_eq!(tasks.len(), 2);
    }

    #[test]
    fn every_problem_is_reported() {
        let mut bad_machine = task("big");
        bad_machine.machine = Some("huge-9x".into());
        let mut short = task("short");
        short.max_duration_ms = Some(1_000);
        let problems = validate(vec![
            task("dup"),
            task("dup"),
            task("not a valid id!"),
            task(""),
            bad_machine,
            short,
        ])
        .unwrap_err();
        assert_eq!(problems.len(), 5, "{problems:#?}");
        assert!(problems[0].contains("`dup` is declared more than once"));
        assert!(problems[1].contains("`not a valid id!` is invalid"));
        assert!(problems[3].contains("huge-9x"));
        assert!(problems[4].contains("at least 5 seconds"));
    }

    #[test]
    fn tasks_sharing_a_queue_must_agree_on_its_limit() {
        let with_queue = |id: &str, limit: Option<u32>| {
            let mut t = task(id);
            t.queue_name = Some("shared".into());
            t.queue_concurrency_limit = limit;
            t
        };
        assert!(validate(vec![with_queue("a", Some(2)), with_queue("b", Some(2))]).is_ok());
        let problems =
            validate(vec![with_queue("a", Some(2)), with_queue("b", Some(3))]).unwrap_err();
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("queue `shared`"), "{problems:?}");
    }

    #[test]
    fn no_tasks_is_refused() {
        assert!(validate(vec![]).unwrap_err()[0].contains("declares no tasks"));
    }

    #[test]
    fn absurd_retry_settings_are_refused() {
        let mut t = task("t");
        t.retry = Some(crate::sandbox::DeclaredRetry {
            max_attempts: Some(0),
            factor: Some(f64::NAN),
            min_timeout_ms: Some(5_000),
            max_timeout_ms: Some(1_000),
            randomize: None,
            out_of_memory_machine: Some("nope".into()),
        });
        assert_eq!(validate(vec![t]).unwrap_err().len(), 4);
    }

    #[test]
    fn bad_schedules_name_the_task_and_the_field() {
        let declared = |id: &str, cron: &str, timezone: Option<&str>| {
            let mut t = task(id);
            t.schedule = Some(crate::sandbox::DeclaredSchedule {
                cron: cron.into(),
                timezone: timezone.map(Into::into),
            });
            t
        };
        let problems = validate(vec![
            declared("cron", "61 * * * *", None),
            declared("zone", "0 * * * *", Some("Mars/Olympus_Mons")),
        ])
        .unwrap_err();
        assert!(
            problems[0].starts_with("task `cron`: schedule cron `61 * * * *`"),
            "{problems:#?}"
        );
        assert!(
            problems[1].starts_with("task `zone`: schedule timezone `Mars/Olympus_Mons`"),
            "{problems:#?}"
        );
        let ok = validate(vec![declared("good", "0  9 * * *", Some("Europe/Berlin"))]).unwrap();
        assert_eq!(
            ok[0].schedule,
            Some(TaskSchedule {
                cron: "0 9 * * *".into(),
                timezone: "Europe/Berlin".into()
            })
        );
    }
}
