//! Runs: inserting them (idempotency keys, tags, child runs with the parent's journal), reading
//! and listing them, and the changes a client makes (tags, metadata, reschedule).
//!
//! Several hosts insert at once here, so an idempotency key is claimed, not checked: the key's
//! row is inserted with `ON CONFLICT DO NOTHING` before its run (the key's reference to the run
//! is checked at commit, migration V1), and a trigger that finds the key taken waits for the
//! taker's commit and reads its run. Two triggers with one key make one run, whatever the hosts.

use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;

use deadpool_postgres::GenericClient;
use tokio_postgres::types::ToSql;

use super::PostgresStore;
use super::journal::commit_journal;
use super::lifecycle::FINAL;
use super::queues::{ensure_queue, lock_queues};
use super::rows::*;
use crate::metadata::{MetadataError, MetadataOp};
use crate::model::*;
use crate::store::codec::status_guard;
use crate::store::*;

/// How often a trigger tries to claim its key before giving up with `Conflict`: each time it
/// fails, another trigger committed the key, and the next look finds that run (or, if it failed
/// meanwhile, releases the key again).
const CLAIM_TRIES: usize = 4;

/// The run a live idempotency key points to, unless that run failed or expired (then the key is
/// released so a new run can take it).
pub(super) async fn live_idempotent_run(
    c: &impl GenericClient,
    new: &NewRun,
) -> Result<Option<Run>, StoreError> {
    let Some((key, _)) = &new.idempotency else {
        return Ok(None);
    };
    let Some(found) = query_opt(
        c,
        "SELECT run_id, expires_at FROM idempotency_keys \
         WHERE environment_id = $1 AND task_id = $2 AND key = $3",
        &[&new.environment_id, &new.task_id, key],
    )
    .await?
    else {
        return Ok(None);
    };
    let (run_id, expires_at): (String, Millis) = (get(&found, 0)?, get(&found, 1)?);
    if expires_at > new.now
        && let Some(run) = load_run(c, &run_id).await?
        && !run.status.is_failure()
    {
        return Ok(Some(run));
    }
    // Only the key as it was read: another trigger may have released it and taken it for its own
    // run meanwhile, which this must not release.
    exec(
        c,
        "DELETE FROM idempotency_keys \
         WHERE environment_id = $1 AND task_id = $2 AND key = $3 AND run_id = $4",
        &[&new.environment_id, &new.task_id, key, &run_id],
    )
    .await?;
    Ok(None)
}

/// Each queue the runs go on, with the time the first of them names it.
pub(super) fn queues_of<'a>(
    runs: impl IntoIterator<Item = &'a NewRun>,
) -> BTreeMap<(String, String), Millis> {
    let mut queues = BTreeMap::new();
    for new in runs {
        queues
            .entry((new.environment_id.clone(), new.queue.clone()))
            .or_insert(new.now);
    }
    queues
}

pub(super) async fn insert_all(
    c: &impl GenericClient,
    runs: Vec<NewRun>,
    batch_id: Option<&str>,
) -> Result<Vec<Inserted>, StoreError> {
    // A batch made in one request is complete, so sealed, when made.
    if let (Some(batch), Some(first)) = (batch_id, runs.first()) {
        exec(
            c,
            "INSERT INTO batches (id, environment_id, run_count, created_at, updated_at, sealed, sealed_at) \
             VALUES ($1, $2, $3, $4, $4, 1, $4)",
            &[&batch, &first.environment_id, &(runs.len() as i64), &first.now],
        )
        .await?;
    }
    lock_queues(c, queues_of(&runs)).await?;
    let mut out = Vec::with_capacity(runs.len());
    for (index, new) in runs.into_iter().enumerate() {
        let inserted = insert_or_find(c, &new, batch_id).await?;
        if let Some(batch) = batch_id {
            record_batch_item(c, batch, index, &new.task_id, Ok(&inserted.run.id), new.now).await?;
        }
        out.push(inserted);
    }
    Ok(out)
}

/// Inserts a run, or finds the live run its idempotency key names (`cached`).
pub(super) async fn insert_or_find(
    c: &impl GenericClient,
    new: &NewRun,
    batch_id: Option<&str>,
) -> Result<Inserted, StoreError> {
    for _ in 0..CLAIM_TRIES {
        if let Some(existing) = live_idempotent_run(c, new).await? {
            return Ok(Inserted {
                run: existing,
                cached: true,
            });
        }
        // `None`: another transaction took the key after the look above; look again.
        if let Some(id) = insert_one(c, new, batch_id).await? {
            return Ok(Inserted {
                run: load_run(c, &id).await?.ok_or(StoreError::NotFound("run"))?,
                cached: false,
            });
        }
    }
    Err(StoreError::Conflict)
}

/// Records what item `index` of a batch became: a run, or the reason it is not one.
pub(super) async fn record_batch_item(
    c: &impl GenericClient,
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
    exec(
        c,
        "INSERT INTO batch_items (batch_id, idx, task_id, run_id, error, error_code, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &batch_id,
            &(index as i64),
            &task_id,
            &run_id,
            &error,
            &code,
            &now,
        ],
    )
    .await?;
    Ok(())
}

/// Inserts a run (its queue made if needed, its tags, its idempotency key) and returns its id;
/// `None`, with nothing inserted, if its idempotency key is taken.
///
/// The key is claimed first, with `ON CONFLICT DO NOTHING`: a trigger with the same key in
/// another transaction that has not committed makes this wait for it; once it commits, this
/// claims nothing and the caller finds its run. The key's row names the run before the run's row
/// exists, which its deferred reference allows until the commit.
pub(super) async fn insert_one(
    c: &impl GenericClient,
    new: &NewRun,
    batch_id: Option<&str>,
) -> Result<Option<String>, StoreError> {
    if !INITIAL.contains(&new.status) {
        return Err(StoreError::Refused(format!(
            "a new run cannot start in status {}",
            new.status
        )));
    }
    let id = new_id("run");
    if let Some((key, expires_at)) = &new.idempotency {
        let claimed = exec(
            c,
            "INSERT INTO idempotency_keys (environment_id, task_id, key, run_id, expires_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            &[&new.environment_id, &new.task_id, key, &id, expires_at],
        )
        .await?;
        if claimed == 0 {
            return Ok(None);
        }
    }
    ensure_queue(c, &new.environment_id, &new.queue, new.now).await?;
    let available_at = new.delay_until.unwrap_or(new.now);
    let options = new
        .idempotency
        .as_ref()
        .and(new.idempotency_options.as_ref());
    exec(
        c,
        "INSERT INTO runs (id, environment_id, task_id, status, payload, queue, machine, \
           max_attempts, retry_factor, retry_min_ms, retry_max_ms, retry_randomize, \
           queue_ts, available_at, created_at, updated_at, priority_ms, score, delay_until, ttl_ms, \
           expires_at, idempotency_key, metadata, max_duration_ms, concurrency_key, lock_to_version, batch_id, \
           oom_machine, seed, parent_run_id, root_run_id, depth, idempotency_key_user, idempotency_key_scope) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15, $16, $17, $18, $19, \
                 $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33)",
        &[
            &id,
            &new.environment_id,
            &new.task_id,
            &new.status.as_str(),
            &new.payload,
            &new.queue,
            &new.machine.as_str(),
            &i64::from(new.retry.max_attempts),
            &new.retry.factor,
            &(new.retry.min_timeout_ms as i64),
            &(new.retry.max_timeout_ms as i64),
            &i64::from(new.retry.randomize),
            &new.queue_timestamp,
            &available_at,
            &new.now,
            &new.priority_ms,
            &new.queue_timestamp.saturating_sub(new.priority_ms),
            &new.delay_until,
            &new.ttl.map(duration_ms),
            &new.expires_at,
            &new.idempotency.as_ref().map(|(k, _)| k.as_str()),
            &new.metadata,
            &new.max_duration.map(duration_ms),
            &new.concurrency_key,
            &new.lock_to_version,
            &batch_id,
            &new.oom_machine.map(Machine::as_str),
            &rand::random::<i64>(),
            &new.parent.as_ref().map(|p| p.parent_run_id.as_str()),
            &new.parent.as_ref().map(|p| p.root_run_id.as_str()),
            &new.parent.as_ref().map_or(0, |p| i64::from(p.depth)),
            &options.map(|o| o.key.as_str()),
            &options.map(|o| o.scope.as_str()),
        ],
    )
    .await?;
    if !new.tags.is_empty() {
        write_tags(c, &id, &new.environment_id, &new.tags).await?;
    }
    Ok(Some(id))
}

pub(super) async fn write_tags(
    c: &impl GenericClient,
    run_id: &str,
    environment_id: &str,
    tags: &[String],
) -> Result<(), StoreError> {
    exec(
        c,
        "UPDATE runs SET tags = $2 WHERE id = $1",
        &[&run_id, &serde_json::Value::from(tags.to_vec()).to_string()],
    )
    .await?;
    exec(
        c,
        "INSERT INTO run_tags (run_id, environment_id, tag) \
         SELECT $1, $2, tag FROM unnest($3::text[]) AS tag ON CONFLICT DO NOTHING",
        &[&run_id, &environment_id, &tags],
    )
    .await?;
    Ok(())
}

/// Whether `candidate` is `run` or one of its ancestors (one query up the parent links).
pub(super) async fn is_ancestor_or_self(
    c: &impl GenericClient,
    candidate: &str,
    run: &str,
) -> Result<bool, StoreError> {
    // Trees are at most 25 deep; the bound also stops a corrupt cycle.
    let row = query_one(
        c,
        "WITH RECURSIVE up (id, steps) AS ( \
           SELECT $2::text, 0 \
           UNION ALL \
           SELECT r.parent_run_id, up.steps + 1 FROM up JOIN runs r ON r.id = up.id \
           WHERE r.parent_run_id IS NOT NULL AND up.steps < 63 \
         ) SELECT EXISTS (SELECT 1 FROM up WHERE id = $1::text)",
        &[&candidate, &run],
    )
    .await?;
    get(&row, 0)
}

/// A DELAYED run gets a new delay (`Reschedule`); its TTL counts from the new enqueue time.
pub(super) static RESCHEDULE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE runs SET available_at = $2, delay_until = $2, queue_ts = $2, \
           score = $2 - priority_ms, \
           expires_at = CASE WHEN ttl_ms IS NULL THEN NULL ELSE $2 + ttl_ms END, updated_at = $3 \
         WHERE id = $1 AND environment_id = $4 AND {guard}",
        guard = status_guard(Step::Reschedule, RunStatus::Delayed, &[])
    )
});

impl PostgresStore {
    pub async fn insert_runs(
        &self,
        runs: Vec<NewRun>,
        batch_id: Option<String>,
    ) -> Result<Vec<Inserted>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let inserted = insert_all(&tx, runs, batch_id.as_deref()).await?;
        tx.commit().await?;
        Ok(inserted)
    }

    /// As [`PostgresStore::insert_runs`]: each commit is durable when answered, so the runs are
    /// answered after it, already settled.
    pub async fn insert_runs_staged(
        &self,
        runs: Vec<NewRun>,
        batch_id: Option<String>,
    ) -> Result<Staged<Vec<Inserted>>, StoreError> {
        let value = self.insert_runs(runs, batch_id).await?;
        Ok(Staged {
            value,
            durable: Durability::settled(),
        })
    }

    pub async fn insert_child_runs(
        &self,
        runs: Vec<NewRun>,
        batch_id: Option<String>,
        journal: JournalWith<[Inserted]>,
        waiting: bool,
    ) -> Result<Vec<Inserted>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let now = runs.first().map_or(0, |r| r.now);
        let parent = journal.run_id.clone();
        let inserted = insert_all(&tx, runs, batch_id.as_deref()).await?;
        // An idempotency key can hand back the parent or one of its ancestors as a "child":
        // waiting for it would never end.
        if waiting {
            for i in inserted.iter().filter(|i| i.cached) {
                if is_ancestor_or_self(&tx, &i.run.id, &parent).await? {
                    return Err(StoreError::Refused(format!(
                        "idempotency key `{}` names run {}, which this run descends from; it would wait for itself",
                        i.run.idempotency_key.as_deref().unwrap_or_default(),
                        i.run.id
                    )));
                }
            }
        }
        commit_journal(&tx, journal, inserted.as_slice(), now).await?;
        tx.commit().await?;
        Ok(inserted)
    }

    pub async fn reset_idempotency_key(
        &self,
        environment_id: &str,
        key: &str,
        task_id: Option<String>,
    ) -> Result<usize, StoreError> {
        let c = self.conn().await?;
        let removed = exec(
            &c,
            "DELETE FROM idempotency_keys WHERE environment_id = $1 AND key = $2 \
             AND ($3::text IS NULL OR task_id = $3::text)",
            &[&environment_id, &key, &task_id],
        )
        .await?;
        Ok(usize::try_from(removed).unwrap_or(usize::MAX))
    }

    pub async fn reschedule(
        &self,
        environment_id: &str,
        run_id: &str,
        until: Millis,
        now: Millis,
    ) -> Result<(), StoreError> {
        let c = self.conn().await?;
        let changed = exec(&c, &RESCHEDULE, &[&run_id, &until, &now, &environment_id]).await?;
        if changed == 0 {
            return Err(StoreError::Conflict);
        }
        Ok(())
    }

    pub async fn add_tags(
        &self,
        environment_id: &str,
        run_id: &str,
        tags: Vec<String>,
        max: usize,
        now: Millis,
    ) -> Result<Result<Vec<String>, usize>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        // Locked until the commit: two changes of one run's tags at once would each add theirs to
        // what they read, and the later write would drop the earlier one's tags.
        let row = query_opt(
            &tx,
            "SELECT tags FROM runs WHERE id = $1 AND environment_id = $2 FOR NO KEY UPDATE",
            &[&run_id, &environment_id],
        )
        .await?
        .ok_or(StoreError::NotFound("run"))?;
        let current: String = get(&row, 0)?;
        let mut all: Vec<String> = serde_json::from_str(&current).unwrap_or_default();
        for tag in tags {
            if !all.contains(&tag) {
                all.push(tag);
            }
        }
        if all.len() > max {
            return Ok(Err(all.len()));
        }
        write_tags(&tx, run_id, environment_id, &all).await?;
        exec(
            &tx,
            "UPDATE runs SET updated_at = $2 WHERE id = $1",
            &[&run_id, &now],
        )
        .await?;
        tx.commit().await?;
        Ok(Ok(all))
    }

    pub async fn change_metadata(
        &self,
        environment_id: &str,
        run_id: &str,
        now: Millis,
        ops: Vec<MetadataOp>,
        journal: Option<JournalWith<str>>,
    ) -> Result<Result<String, MetadataError>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        // Locked until the commit, so concurrent changes apply one after the other (an increment
        // from two hosts counts twice), as they do in one writer.
        let row = query_opt(
            &tx,
            "SELECT metadata FROM runs WHERE id = $1 AND environment_id = $2 FOR NO KEY UPDATE",
            &[&run_id, &environment_id],
        )
        .await?
        .ok_or(StoreError::NotFound("run"))?;
        let current: Option<String> = get(&row, 0)?;
        let next = match crate::metadata::apply(current.as_deref(), &ops) {
            Ok(next) => next,
            Err(e) => return Ok(Err(e)),
        };
        exec(
            &tx,
            "UPDATE runs SET metadata = $2, updated_at = $3 WHERE id = $1",
            &[&run_id, &next, &now],
        )
        .await?;
        if let Some(journal) = journal {
            commit_journal(&tx, journal, next.as_str(), now).await?;
        }
        tx.commit().await?;
        Ok(Ok(next))
    }

    pub async fn count_runs(
        &self,
        environment_id: &str,
        status: RunStatus,
    ) -> Result<u64, StoreError> {
        let row = query_one(
            &self.reader().await?,
            "SELECT count(*) FROM runs WHERE environment_id = $1 AND status = $2",
            &[&environment_id, &status.as_str()],
        )
        .await?;
        int(&row, 0)
    }

    pub async fn run(&self, environment_id: &str, run_id: &str) -> Result<Option<Run>, StoreError> {
        Ok(load_run(&self.reader().await?, run_id)
            .await?
            .filter(|r| r.environment_id == environment_id))
    }

    pub async fn runs_by_id(
        &self,
        environment_id: &str,
        ids: Vec<String>,
    ) -> Result<Vec<Option<Run>>, StoreError> {
        let rows = query(
            &self.reader().await?,
            &format!(
                "SELECT {RUN_COLUMNS} FROM {RUN_FROM} WHERE r.id = ANY($1) AND r.environment_id = $2"
            ),
            &[&ids, &environment_id],
        )
        .await?;
        let mut found: HashMap<String, Run> = HashMap::with_capacity(rows.len());
        for row in &rows {
            let run = run_from_row(row)?;
            found.insert(run.id.clone(), run);
        }
        Ok(ids.iter().map(|id| found.get(id).cloned()).collect())
    }

    pub async fn live_children(
        &self,
        environment_id: &str,
        run_id: &str,
    ) -> Result<Vec<String>, StoreError> {
        query(
            &self.reader().await?,
            &format!(
                "SELECT id FROM runs WHERE parent_run_id = $1 AND environment_id = $2 \
                 AND status NOT IN {FINAL}"
            ),
            &[&run_id, &environment_id],
        )
        .await?
        .iter()
        .map(|r| get(r, 0))
        .collect()
    }

    pub async fn list_runs(
        &self,
        environment_id: &str,
        filter: RunFilter,
        limit: usize,
        after: Option<String>,
        before: Option<String>,
    ) -> Result<RunPage, StoreError> {
        let mut sql = format!("SELECT {RUN_COLUMNS} FROM {RUN_FROM} WHERE r.environment_id = $1");
        let mut args: Vec<Box<dyn ToSql + Sync + Send>> = vec![Box::new(environment_id.to_owned())];
        // Each condition takes the next parameter; a list is one `text[]` parameter, so a filter
        // has one statement text however many values it names (and stays in the cache).
        let mut push = |sql: &mut String, cond: &str, value: Box<dyn ToSql + Sync + Send>| {
            args.push(value);
            sql.push_str(&cond.replace("$?", &format!("${}", args.len())));
        };
        let statuses: Vec<String> = filter
            .statuses
            .iter()
            .map(|s| s.as_str().to_owned())
            .collect();
        for (column, values) in [
            ("r.status", statuses),
            ("r.task_id", filter.task_ids),
            ("d.version", filter.versions),
            ("r.queue", filter.queues),
        ] {
            if !values.is_empty() {
                push(
                    &mut sql,
                    &format!(" AND {column} = ANY($?)"),
                    Box::new(values),
                );
            }
        }
        if !filter.tags.is_empty() {
            push(
                &mut sql,
                " AND EXISTS (SELECT 1 FROM run_tags t WHERE t.run_id = r.id AND t.tag = ANY($?))",
                Box::new(filter.tags),
            );
        }
        if !filter.all_tags.is_empty() {
            push(
                &mut sql,
                " AND NOT EXISTS (SELECT 1 FROM unnest($?::text[]) AS wanted(tag) WHERE NOT EXISTS \
                   (SELECT 1 FROM run_tags t WHERE t.run_id = r.id AND t.tag = wanted.tag))",
                Box::new(filter.all_tags),
            );
        }
        if let Some(v) = filter.created_from {
            push(&mut sql, " AND r.created_at >= $?", Box::new(v));
        }
        if let Some(v) = filter.created_to {
            push(&mut sql, " AND r.created_at <= $?", Box::new(v));
        }
        if let Some(v) = filter.batch_id {
            push(&mut sql, " AND r.batch_id = $?", Box::new(v));
        }
        if let Some(v) = filter.idempotency_key {
            push(&mut sql, " AND r.idempotency_key = $?", Box::new(v));
        }
        let backwards = before.is_some() && after.is_none();
        if let Some(after) = &after {
            push(&mut sql, " AND r.id < $?", Box::new(after.clone()));
        } else if let Some(before) = &before {
            push(&mut sql, " AND r.id > $?", Box::new(before.clone()));
        }
        sql.push_str(if backwards {
            " ORDER BY r.id ASC"
        } else {
            " ORDER BY r.id DESC"
        });
        push(&mut sql, " LIMIT $?", Box::new((limit + 1) as i64));
        let params: Vec<&(dyn ToSql + Sync)> = args
            .iter()
            .map(|a| a.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let mut runs: Vec<Run> = query(&self.reader().await?, &sql, &params)
            .await?
            .iter()
            .map(run_from_row)
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
    }
}

#[cfg(test)]
#[path = "runs_tests.rs"]
pub(super) mod tests;
