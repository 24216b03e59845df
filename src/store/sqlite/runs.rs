//! Runs: inserting them (idempotency keys, tags, child runs with the parent's journal), reading
//! and listing them, and the changes a client makes (tags, metadata, reschedule).

use std::sync::LazyLock;

use rusqlite::{Connection, OptionalExtension, params};

use super::SqliteStore;
use super::guards::status_guard;
use super::journal::commit_journal;
use super::lifecycle::FINAL;
use super::rows::exec;
use super::rows::*;
use crate::model::*;
use crate::store::*;

/// The run a live idempotency key points to, unless that run failed or expired (then the key is
/// released so a new run can take it).
pub(super) fn live_idempotent_run(c: &Connection, new: &NewRun) -> Result<Option<Run>, StoreError> {
    let Some((key, _)) = &new.idempotency else {
        return Ok(None);
    };
    let found: Option<(String, Millis)> = c
        .prepare_cached(
            "SELECT run_id, expires_at FROM idempotency_keys WHERE environment_id = ?1 AND task_id = ?2 AND key = ?3",
        )?
        .query_row(params![new.environment_id, new.task_id, key], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((run_id, expires_at)) = found else {
        return Ok(None);
    };
    if expires_at > new.now
        && let Some(run) = load_run(c, &run_id)?
        && !run.status.is_failure()
    {
        return Ok(Some(run));
    }
    exec(
        c,
        "DELETE FROM idempotency_keys WHERE environment_id = ?1 AND task_id = ?2 AND key = ?3",
        params![new.environment_id, new.task_id, key],
    )?;
    Ok(None)
}

pub(super) fn insert_all(
    c: &Connection,
    runs: Vec<NewRun>,
    batch_id: Option<&str>,
) -> Result<Vec<Inserted>, StoreError> {
    // A batch made in one request is complete, so sealed, when made.
    if let (Some(batch), Some(first)) = (batch_id, runs.first()) {
        exec(
            c,
            "INSERT INTO batches (id, environment_id, run_count, created_at, updated_at, sealed, sealed_at) \
             VALUES (?1, ?2, ?3, ?4, ?4, 1, ?4)",
            params![batch, first.environment_id, runs.len() as i64, first.now],
        )?;
    }
    let mut out = Vec::with_capacity(runs.len());
    for (index, new) in runs.into_iter().enumerate() {
        let inserted = insert_or_find(c, &new, batch_id)?;
        if let Some(batch) = batch_id {
            record_batch_item(c, batch, index, &new.task_id, Ok(&inserted.run.id), new.now)?;
        }
        out.push(inserted);
    }
    Ok(out)
}

/// Inserts a run, or finds the live run its idempotency key names (`cached`).
pub(super) fn insert_or_find(
    c: &Connection,
    new: &NewRun,
    batch_id: Option<&str>,
) -> Result<Inserted, StoreError> {
    if let Some(existing) = live_idempotent_run(c, new)? {
        return Ok(Inserted {
            run: existing,
            cached: true,
        });
    }
    let id = insert_one(c, new, batch_id)?;
    Ok(Inserted {
        run: load_run(c, &id)?.ok_or(StoreError::NotFound("run"))?,
        cached: false,
    })
}

/// Records what item `index` of a batch became: a run, or the reason it is not one.
pub(super) fn record_batch_item(
    c: &Connection,
    batch_id: &str,
    index: usize,
    task_id: &str,
    outcome: Result<&str, &BatchItemError>,
    now: Millis,
) -> Result<(), StoreError> {
    let (run_id, error, code) = match outcome {
        Ok(run) => (Some(run), None, None),
        Err(e) => (None, Some(e.message.as_str()), e.code.as_deref()),
    };
    c.prepare_cached(
        "INSERT INTO batch_items (batch_id, idx, task_id, run_id, error, error_code, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        batch_id,
        index as i64,
        task_id,
        run_id,
        error,
        code,
        now
    ])?;
    Ok(())
}

pub(super) fn insert_one(
    c: &Connection,
    new: &NewRun,
    batch_id: Option<&str>,
) -> Result<String, StoreError> {
    if !INITIAL.contains(&new.status) {
        return Err(StoreError::Refused(format!(
            "a new run cannot start in status {}",
            new.status
        )));
    }
    super::queues::ensure_queue(c, &new.environment_id, &new.queue, new.now)?;
    let id = new_id("run");
    let available_at = new.delay_until.unwrap_or(new.now);
    c.prepare_cached(
        "INSERT INTO runs (id, environment_id, task_id, status, payload, queue, machine, \
           max_attempts, retry_factor, retry_min_ms, retry_max_ms, retry_randomize, \
           queue_ts, available_at, created_at, updated_at, priority_ms, score, delay_until, ttl_ms, \
           expires_at, idempotency_key, metadata, max_duration_ms, concurrency_key, lock_to_version, batch_id, \
           oom_machine, seed, parent_run_id, root_run_id, depth, idempotency_key_user, idempotency_key_scope) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?15, ?16, ?17, ?18, ?19, \
                 ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31, ?32, ?33)",
    )?
    .execute(params![
        id,
        new.environment_id,
        new.task_id,
        new.status.as_str(),
        new.payload,
        new.queue,
        new.machine.as_str(),
        new.retry.max_attempts,
        new.retry.factor,
        new.retry.min_timeout_ms as i64,
        new.retry.max_timeout_ms as i64,
        new.retry.randomize,
        new.queue_timestamp,
        available_at,
        new.now,
        new.priority_ms,
        new.queue_timestamp.saturating_sub(new.priority_ms),
        new.delay_until,
        new.ttl.map(duration_ms),
        new.expires_at,
        new.idempotency.as_ref().map(|(k, _)| k),
        new.metadata,
        new.max_duration.map(duration_ms),
        new.concurrency_key,
        new.lock_to_version,
        batch_id,
        new.oom_machine.map(Machine::as_str),
        rand::random::<i64>(),
        new.parent.as_ref().map(|p| &p.parent_run_id),
        new.parent.as_ref().map(|p| &p.root_run_id),
        new.parent.as_ref().map_or(0, |p| p.depth),
        new.idempotency.as_ref().and(new.idempotency_options.as_ref()).map(|o| &o.key),
        new.idempotency
            .as_ref()
            .and(new.idempotency_options.as_ref())
            .map(|o| o.scope.as_str()),
    ])?;
    if !new.tags.is_empty() {
        write_tags(c, &id, &new.environment_id, &new.tags)?;
    }
    if let Some((key, expires_at)) = &new.idempotency {
        exec(
            c,
            "INSERT INTO idempotency_keys (environment_id, task_id, key, run_id, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![new.environment_id, new.task_id, key, id, expires_at],
        )?;
    }
    Ok(id)
}

pub(super) fn write_tags(
    c: &Connection,
    run_id: &str,
    environment_id: &str,
    tags: &[String],
) -> Result<(), StoreError> {
    exec(
        c,
        "UPDATE runs SET tags = ?2 WHERE id = ?1",
        params![run_id, serde_json::Value::from(tags.to_vec()).to_string()],
    )?;
    let mut insert = c.prepare_cached(
        "INSERT OR IGNORE INTO run_tags (run_id, environment_id, tag) VALUES (?1, ?2, ?3)",
    )?;
    for tag in tags {
        insert.execute(params![run_id, environment_id, tag])?;
    }
    Ok(())
}

/// Whether `candidate` is `run` or one of its ancestors.
pub(super) fn is_ancestor_or_self(
    c: &Connection,
    candidate: &str,
    run: &str,
) -> Result<bool, StoreError> {
    let mut current = Some(run.to_owned());
    // Trees are at most 25 deep; the bound also stops a corrupt cycle.
    for _ in 0..64 {
        let Some(id) = current else {
            return Ok(false);
        };
        if id == candidate {
            return Ok(true);
        }
        current = c
            .prepare_cached("SELECT parent_run_id FROM runs WHERE id = ?1")?
            .query_row([&id], |r| r.get(0))
            .optional()?
            .flatten();
    }
    Ok(false)
}

/// A DELAYED run gets a new delay (`Reschedule`); its TTL counts from the new enqueue time.
pub(super) static RESCHEDULE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE runs SET available_at = ?2, delay_until = ?2, queue_ts = ?2, \
           score = ?2 - priority_ms, \
           expires_at = CASE WHEN ttl_ms IS NULL THEN NULL ELSE ?2 + ttl_ms END, updated_at = ?3 \
         WHERE id = ?1 AND environment_id = ?4 AND {guard}",
        guard = status_guard(Step::Reschedule, RunStatus::Delayed, &[])
    )
});

impl SqliteStore {
    pub async fn insert_runs(
        &self,
        runs: Vec<NewRun>,
        batch_id: Option<String>,
    ) -> Result<Vec<Inserted>, StoreError> {
        self.write(move |c| insert_all(c, runs, batch_id.as_deref()))
            .await
    }

    pub async fn insert_runs_staged(
        &self,
        runs: Vec<NewRun>,
        batch_id: Option<String>,
    ) -> Result<Staged<Vec<Inserted>>, StoreError> {
        self.write_staged(move |c| insert_all(c, runs, batch_id.as_deref()))
            .await
    }

    pub async fn insert_child_runs(
        &self,
        runs: Vec<NewRun>,
        batch_id: Option<String>,
        journal: JournalWith<[Inserted]>,
        waiting: bool,
    ) -> Result<Vec<Inserted>, StoreError> {
        self.write(move |c| {
            let now = runs.first().map_or(0, |r| r.now);
            let parent = journal.run_id.clone();
            let inserted = insert_all(c, runs, batch_id.as_deref())?;
            // An idempotency key can hand back the parent or one of its ancestors as a "child":
            // waiting for it would never end.
            if waiting {
                for i in inserted.iter().filter(|i| i.cached) {
                    if is_ancestor_or_self(c, &i.run.id, &parent)? {
                        return Err(StoreError::Refused(format!(
                            "idempotency key `{}` names run {}, which this run descends from; it would wait for itself",
                            i.run.idempotency_key.as_deref().unwrap_or_default(),
                            i.run.id
                        )));
                    }
                }
            }
            commit_journal(c, journal, inserted.as_slice(), now)?;
            Ok(inserted)
        })
        .await
    }

    pub async fn reset_idempotency_key(
        &self,
        environment_id: &str,
        key: &str,
        task_id: Option<String>,
    ) -> Result<usize, StoreError> {
        let (environment_id, key) = (environment_id.to_owned(), key.to_owned());
        self.write(move |c| {
            Ok(exec(
                c,
                "DELETE FROM idempotency_keys WHERE environment_id = ?1 AND key = ?2 \
                 AND (?3 IS NULL OR task_id = ?3)",
                params![environment_id, key, task_id],
            )?)
        })
        .await
    }

    pub async fn reschedule(
        &self,
        environment_id: &str,
        run_id: &str,
        until: Millis,
        now: Millis,
    ) -> Result<(), StoreError> {
        let (environment_id, run_id) = (environment_id.to_owned(), run_id.to_owned());
        self.write(move |c| {
            let changed = c.prepare_cached(&RESCHEDULE)?.execute(params![
                run_id,
                until,
                now,
                environment_id
            ])?;
            if changed == 0 {
                return Err(StoreError::Conflict);
            }
            Ok(())
        })
        .await
    }

    pub async fn add_tags(
        &self,
        environment_id: &str,
        run_id: &str,
        tags: Vec<String>,
        max: usize,
        now: Millis,
    ) -> Result<Result<Vec<String>, usize>, StoreError> {
        let (environment_id, run_id) = (environment_id.to_owned(), run_id.to_owned());
        self.write(move |c| {
            let current: String = c
                .query_row(
                    "SELECT tags FROM runs WHERE id = ?1 AND environment_id = ?2",
                    params![run_id, environment_id],
                    |r| r.get(0),
                )
                .optional()?
                .ok_or(StoreError::NotFound("run"))?;
            let mut all: Vec<String> = serde_json::from_str(&current).unwrap_or_default();
            for tag in tags {
                if !all.contains(&tag) {
                    all.push(tag);
                }
            }
            if all.len() > max {
                return Ok(Err(all.len()));
            }
            write_tags(c, &run_id, &environment_id, &all)?;
            exec(
                c,
                "UPDATE runs SET updated_at = ?2 WHERE id = ?1",
                params![run_id, now],
            )?;
            Ok(Ok(all))
        })
        .await
    }

    pub async fn change_metadata(
        &self,
        environment_id: &str,
        run_id: &str,
        now: Millis,
        ops: Vec<MetadataOp>,
        journal: Option<JournalWith<str>>,
    ) -> Result<Result<String, MetadataError>, StoreError> {
        let (environment_id, run_id) = (environment_id.to_owned(), run_id.to_owned());
        self.write(move |c| {
            let current: Option<String> = c
                .query_row(
                    "SELECT metadata FROM runs WHERE id = ?1 AND environment_id = ?2",
                    params![run_id, environment_id],
                    |r| r.get(0),
                )
                .optional()?
                .ok_or(StoreError::NotFound("run"))?;
            let next = match crate::metadata::apply(current.as_deref(), &ops) {
                Ok(next) => next,
                Err(e) => return Ok(Err(e)),
            };
            exec(
                c,
                "UPDATE runs SET metadata = ?2, updated_at = ?3 WHERE id = ?1",
                params![run_id, next, now],
            )?;
            if let Some(journal) = journal {
                commit_journal(c, journal, next.as_str(), now)?;
            }
            Ok(Ok(next))
        })
        .await
    }

    pub async fn count_runs(
        &self,
        environment_id: &str,
        status: RunStatus,
    ) -> Result<u64, StoreError> {
        let environment_id = environment_id.to_owned();
        self.read(move |c| {
            let n: i64 = c
                .prepare_cached(
                    "SELECT count(*) FROM runs WHERE environment_id = ?1 AND status = ?2",
                )?
                .query_row(params![environment_id, status.as_str()], |r| r.get(0))?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }

    pub async fn run(&self, environment_id: &str, run_id: &str) -> Result<Option<Run>, StoreError> {
        let (environment_id, run_id) = (environment_id.to_owned(), run_id.to_owned());
        self.read(move |c| Ok(load_run(c, &run_id)?.filter(|r| r.environment_id == environment_id)))
            .await
    }

    pub async fn runs_by_id(
        &self,
        environment_id: &str,
        ids: Vec<String>,
    ) -> Result<Vec<Option<Run>>, StoreError> {
        let environment_id = environment_id.to_owned();
        self.read(move |c| {
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                out.push(load_run(c, &id)?.filter(|r| r.environment_id == environment_id));
            }
            Ok(out)
        })
        .await
    }

    pub async fn live_children(
        &self,
        environment_id: &str,
        run_id: &str,
    ) -> Result<Vec<String>, StoreError> {
        let (environment_id, run_id) = (environment_id.to_owned(), run_id.to_owned());
        self.read(move |c| {
            Ok(c.prepare_cached(&format!(
                "SELECT id FROM runs WHERE parent_run_id = ?1 AND environment_id = ?2 \
                 AND status NOT IN {FINAL}"
            ))?
            .query_map(params![run_id, environment_id], |r| r.get(0))?
            .collect::<Result<_, _>>()?)
        })
        .await
    }

    pub async fn list_runs(
        &self,
        environment_id: &str,
        filter: RunFilter,
        limit: usize,
        after: Option<String>,
        before: Option<String>,
    ) -> Result<RunPage, StoreError> {
        let environment_id = environment_id.to_owned();
        self.read(move |c| {
            let mut sql =
                format!("SELECT {RUN_COLUMNS} FROM {RUN_FROM} WHERE r.environment_id = ?");
            let mut args: Vec<rusqlite::types::Value> = vec![environment_id.into()];
            let mut in_list = |sql: &mut String, col: &str, values: Vec<String>| {
                if !values.is_empty() {
                    sql.push_str(&format!(
                        " AND {col} IN ({})",
                        vec!["?"; values.len()].join(",")
                    ));
                    args.extend(values.into_iter().map(Into::into));
                }
            };
            in_list(
                &mut sql,
                "r.status",
                filter
                    .statuses
                    .iter()
                    .map(|s| s.as_str().to_owned())
                    .collect(),
            );
            in_list(&mut sql, "r.task_id", filter.task_ids);
            in_list(&mut sql, "d.version", filter.versions);
            in_list(&mut sql, "r.queue", filter.queues);
            if !filter.tags.is_empty() {
                sql.push_str(&format!(
                    " AND EXISTS (SELECT 1 FROM run_tags t WHERE t.run_id = r.id AND t.tag IN ({}))",
                    vec!["?"; filter.tags.len()].join(",")
                ));
                args.extend(filter.tags.into_iter().map(Into::into));
            }
            for tag in filter.all_tags {
                sql.push_str(" AND EXISTS (SELECT 1 FROM run_tags t WHERE t.run_id = r.id AND t.tag = ?)");
                args.push(tag.into());
            }
            let mut compare = |cond: &str, value: Option<rusqlite::types::Value>| {
                if let Some(v) = value {
                    sql.push_str(cond);
                    args.push(v);
                }
            };
            compare(" AND r.created_at >= ?", filter.created_from.map(Into::into));
            compare(" AND r.created_at <= ?", filter.created_to.map(Into::into));
            compare(" AND r.batch_id = ?", filter.batch_id.map(Into::into));
            compare(" AND r.idempotency_key = ?", filter.idempotency_key.map(Into::into));
            let backwards = before.is_some() && after.is_none();
            if let Some(after) = &after {
                sql.push_str(" AND r.id < ?");
                args.push(after.clone().into());
            } else if let Some(before) = &before {
                sql.push_str(" AND r.id > ?");
                args.push(before.clone().into());
            }
            sql.push_str(if backwards {
                " ORDER BY r.id ASC"
            } else {
                " ORDER BY r.id DESC"
            });
            sql.push_str(" LIMIT ?");
            args.push(((limit + 1) as i64).into());
            let mut runs: Vec<Run> = c
                .prepare(&sql)?
                .query_map(rusqlite::params_from_iter(args), run_from_row)?
                .collect::<Result<_, _>>()?;
            let more = runs.len() > limit;
            runs.truncate(limit);
            if backwards {
                runs.reverse();
            }
            let first = runs.first().map(|r| r.id.clone());
            let last = runs.last().map(|r| r.id.clone());
            let (next, previous) = if backwards {
                (last, first.filter(|_| more))
            } else {
                (last.filter(|_| more), first.filter(|_| after.is_some()))
            };
            Ok(RunPage {
                runs,
                next,
                previous,
            })
        })
        .await
    }
}
