//! The SQL of cron schedules. Fire times are computed by the engine and passed in; the store never
//! reads a cron expression.
//!
//! A fire moves the schedule's `next_fire_at` on with compare-and-set on the value the engine
//! saw, and inserts the run in the same transaction: a fire makes one run or none, never two —
//! across hosts too, since a second host's compare-and-set on the same tick waits for the first
//! one's commit and then finds `next_fire_at` moved on.

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::PostgresStore;
use super::queues::lock_queues;
use super::rows::*;
use super::runs::{insert_or_find, queues_of};
use crate::model::*;
use crate::schedule::{Schedule, ScheduleType};
use crate::store::*;

pub(super) const SCHEDULE_COLUMNS: &str = "s.id, s.environment_id, p.slug, e.slug, s.kind, s.task_id, s.cron, \
     s.timezone, s.external_id, s.deduplication_key, s.active, s.next_fire_at, s.last_fire_at, \
     s.created_at, s.updated_at";

pub(super) const SCHEDULE_FROM: &str = "schedules s JOIN environments e ON e.id = s.environment_id \
     JOIN projects p ON p.id = e.project_id";

pub(super) fn schedule_from_row(row: &Row) -> Result<Schedule, StoreError> {
    let kind: String = get(row, 4)?;
    Ok(Schedule {
        id: get(row, 0)?,
        environment: Environment {
            id: get(row, 1)?,
            project_slug: get(row, 2)?,
            slug: get(row, 3)?,
            limits: Default::default(),
        },
        kind: ScheduleType::parse(&kind).ok_or_else(|| corrupt("schedule type", &kind))?,
        task_id: get(row, 5)?,
        cron: get(row, 6)?,
        timezone: get(row, 7)?,
        external_id: get(row, 8)?,
        deduplication_key: get(row, 9)?,
        active: flag(row, 10)?,
        next_fire_at: get(row, 11)?,
        last_fire_at: get(row, 12)?,
        created_at: get(row, 13)?,
        updated_at: get(row, 14)?,
    })
}

/// A schedule of an environment (another environment's is `None`, like a missing one).
pub(super) async fn load_schedule(
    c: &impl GenericClient,
    environment_id: &str,
    id: &str,
) -> Result<Option<Schedule>, StoreError> {
    query_opt(
        c,
        &format!(
            "SELECT {SCHEDULE_COLUMNS} FROM {SCHEDULE_FROM} WHERE s.id = $1 AND s.environment_id = $2"
        ),
        &[&id, &environment_id],
    )
    .await?
    .as_ref()
    .map(schedule_from_row)
    .transpose()
}

pub(super) async fn required(
    c: &impl GenericClient,
    environment_id: &str,
    id: &str,
) -> Result<Schedule, StoreError> {
    load_schedule(c, environment_id, id)
        .await?
        .ok_or(StoreError::NotFound("schedule"))
}

/// Writes new fields into a schedule; an inactive one keeps no next fire time. Returns whether
/// the schedule was there to write.
pub(super) async fn write_spec(
    c: &impl GenericClient,
    id: &str,
    spec: &ScheduleSpec,
    next_fire_at: Millis,
    now: Millis,
) -> Result<bool, StoreError> {
    Ok(exec(
        c,
        "UPDATE schedules SET task_id = $2, cron = $3, timezone = $4, external_id = $5, \
           next_fire_at = CASE WHEN active = 1 THEN $6::bigint ELSE NULL END, updated_at = $7 \
         WHERE id = $1",
        &[
            &id,
            &spec.task_id,
            &spec.cron,
            &spec.timezone,
            &spec.external_id,
            &next_fire_at,
            &now,
        ],
    )
    .await?
        == 1)
}

/// Locks the environment's schedules as a set for the rest of the transaction: writes that read
/// the set and then add to it (a deduplication key's schedule made once, the environment's count
/// kept under its limit, declarative schedules made once per task) run one after the other, as
/// they do in one writer. The environment's row is the lock (`NO KEY UPDATE`, so runs and other
/// rows that reference the environment are inserted meanwhile).
async fn lock_environment_schedules(
    c: &impl GenericClient,
    environment_id: &str,
) -> Result<(), StoreError> {
    exec(
        c,
        "SELECT 1 FROM environments WHERE id = $1 FOR NO KEY UPDATE",
        &[&environment_id],
    )
    .await?;
    Ok(())
}

impl PostgresStore {
    pub async fn upsert_schedule(
        &self,
        environment_id: &str,
        deduplication_key: String,
        spec: ScheduleSpec,
        next_fire_at: Millis,
        max_schedules: usize,
        now: Millis,
    ) -> Result<Result<(Schedule, bool), ScheduleRefusal>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        lock_environment_schedules(&tx, environment_id).await?;
        let existing = query_opt(
            &tx,
            "SELECT id FROM schedules WHERE environment_id = $1 AND deduplication_key = $2",
            &[&environment_id, &deduplication_key],
        )
        .await?;
        if let Some(row) = existing {
            let id: String = get(&row, 0)?;
            write_spec(&tx, &id, &spec, next_fire_at, now).await?;
            let schedule = required(&tx, environment_id, &id).await?;
            tx.commit().await?;
            return Ok(Ok((schedule, false)));
        }
        let count: i64 = get(
            &query_one(
                &tx,
                "SELECT count(*) FROM schedules WHERE environment_id = $1",
                &[&environment_id],
            )
            .await?,
            0,
        )?;
        let count = usize::try_from(count).unwrap_or(usize::MAX);
        if count >= max_schedules {
            return Ok(Err(ScheduleRefusal::TooMany(count)));
        }
        let id = new_id("sched");
        exec(
            &tx,
            "INSERT INTO schedules (id, environment_id, kind, task_id, cron, timezone, external_id, \
               deduplication_key, active, next_fire_at, created_at, updated_at) \
             VALUES ($1, $2, 'IMPERATIVE', $3, $4, $5, $6, $7, 1, $8, $9, $9)",
            &[
                &id,
                &environment_id,
                &spec.task_id,
                &spec.cron,
                &spec.timezone,
                &spec.external_id,
                &deduplication_key,
                &next_fire_at,
                &now,
            ],
        )
        .await?;
        let schedule = required(&tx, environment_id, &id).await?;
        tx.commit().await?;
        Ok(Ok((schedule, true)))
    }

    pub async fn update_schedule(
        &self,
        environment_id: &str,
        id: &str,
        spec: ScheduleSpec,
        next_fire_at: Millis,
        now: Millis,
    ) -> Result<Result<Schedule, ScheduleRefusal>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        match load_schedule(&tx, environment_id, id).await? {
            None => return Ok(Err(ScheduleRefusal::NotFound)),
            Some(s) if s.kind == ScheduleType::Declarative => {
                return Ok(Err(ScheduleRefusal::Declarative));
            }
            Some(_) => {}
        }
        // Deleted by another request since the read: as if it had not been there.
        if !write_spec(&tx, id, &spec, next_fire_at, now).await? {
            return Ok(Err(ScheduleRefusal::NotFound));
        }
        let schedule = required(&tx, environment_id, id).await?;
        tx.commit().await?;
        Ok(Ok(schedule))
    }

    pub async fn delete_schedule(
        &self,
        environment_id: &str,
        id: &str,
    ) -> Result<Result<Schedule, ScheduleRefusal>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let schedule = match load_schedule(&tx, environment_id, id).await? {
            None => return Ok(Err(ScheduleRefusal::NotFound)),
            Some(s) if s.kind == ScheduleType::Declarative => {
                return Ok(Err(ScheduleRefusal::Declarative));
            }
            Some(s) => s,
        };
        // Of two deletes at once, the one that finds it gone has deleted nothing.
        if exec(&tx, "DELETE FROM schedules WHERE id = $1", &[&id]).await? == 0 {
            return Ok(Err(ScheduleRefusal::NotFound));
        }
        tx.commit().await?;
        Ok(Ok(schedule))
    }

    pub async fn set_schedule_active(
        &self,
        environment_id: &str,
        id: &str,
        active: bool,
        next_fire_at: Option<Millis>,
        now: Millis,
    ) -> Result<Option<Schedule>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let changed = exec(
            &tx,
            "UPDATE schedules SET active = $3, updated_at = $5, \
               next_fire_at = CASE WHEN $3::bigint = 1 THEN coalesce(next_fire_at, $4) ELSE NULL END \
             WHERE id = $1 AND environment_id = $2",
            &[&id, &environment_id, &i64::from(active), &next_fire_at, &now],
        )
        .await?;
        if changed == 0 {
            return Ok(None);
        }
        let schedule = load_schedule(&tx, environment_id, id).await?;
        tx.commit().await?;
        Ok(schedule)
    }

    pub async fn schedule(
        &self,
        environment_id: &str,
        id: &str,
    ) -> Result<Option<Schedule>, StoreError> {
        load_schedule(&self.reader().await?, environment_id, id).await
    }

    pub async fn list_schedules(
        &self,
        environment_id: &str,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<Schedule>, u64), StoreError> {
        let c = self.reader().await?;
        let count: u64 = int(
            &query_one(
                &c,
                "SELECT count(*) FROM schedules WHERE environment_id = $1",
                &[&environment_id],
            )
            .await?,
            0,
        )?;
        let page = query(
            &c,
            &format!(
                "SELECT {SCHEDULE_COLUMNS} FROM {SCHEDULE_FROM} WHERE s.environment_id = $1 \
                 ORDER BY s.created_at DESC, s.id DESC LIMIT $2 OFFSET $3"
            ),
            &[&environment_id, &(limit as i64), &(offset as i64)],
        )
        .await?
        .iter()
        .map(schedule_from_row)
        .collect::<Result<_, _>>()?;
        Ok((page, count))
    }

    pub async fn due_schedules(
        &self,
        now: Millis,
        limit: usize,
    ) -> Result<Vec<Schedule>, StoreError> {
        query(
            &self.reader().await?,
            &format!(
                "SELECT {SCHEDULE_COLUMNS} FROM {SCHEDULE_FROM} \
                 WHERE s.next_fire_at IS NOT NULL AND s.next_fire_at <= $1 \
                 ORDER BY s.next_fire_at LIMIT $2"
            ),
            &[&now, &(limit as i64)],
        )
        .await?
        .iter()
        .map(schedule_from_row)
        .collect()
    }

    pub async fn next_schedule_fire(&self) -> Result<Option<Millis>, StoreError> {
        get(
            &query_one(
                &self.reader().await?,
                "SELECT min(next_fire_at) FROM schedules WHERE next_fire_at IS NOT NULL",
                &[],
            )
            .await?,
            0,
        )
    }

    /// Carries out fires in one transaction: first every compare-and-set, in schedule id order
    /// (two hosts firing overlapping sets lock the schedules' rows in one order, so neither
    /// deadlocks; the second waits for the first's commit and finds its ticks taken), then the
    /// runs of those that happened, in the order given.
    pub async fn fire_schedules(
        &self,
        fires: Vec<ScheduleFire>,
    ) -> Result<Vec<Option<Inserted>>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let mut order: Vec<usize> = (0..fires.len()).collect();
        order.sort_by(|a, b| fires[*a].schedule_id.cmp(&fires[*b].schedule_id));
        let mut fired = vec![false; fires.len()];
        for i in order {
            let fire = &fires[i];
            let changed = exec(
                &tx,
                "UPDATE schedules SET next_fire_at = $2, \
                   last_fire_at = CASE WHEN $4::bigint = 1 THEN $3 ELSE last_fire_at END \
                 WHERE id = $1 AND active = 1 AND next_fire_at = $5",
                &[
                    &fire.schedule_id,
                    &fire.next_fire_at,
                    &fire.timestamp,
                    &i64::from(fire.run.is_some()),
                    &fire.expected_next,
                ],
            )
            .await?;
            fired[i] = changed == 1;
        }
        let runs = || {
            fires
                .iter()
                .zip(&fired)
                .filter_map(|(fire, fired)| fire.run.as_ref().filter(|_| *fired))
        };
        lock_queues(&tx, queues_of(runs())).await?;
        let mut out = Vec::with_capacity(fires.len());
        for (fire, fired) in fires.iter().zip(fired) {
            match fire.run.as_ref().filter(|_| fired) {
                // An existing run with the fire's idempotency key is returned `cached`.
                Some(run) => out.push(Some(insert_or_find(&tx, run, None).await?)),
                None => out.push(None),
            }
        }
        tx.commit().await?;
        Ok(out)
    }

    pub async fn sync_declarative_schedules(
        &self,
        environment_id: &str,
        declared: Vec<DeclaredSchedule>,
        now: Millis,
    ) -> Result<usize, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        // Two deployments at once (two hosts) would each make the new tasks' schedules.
        lock_environment_schedules(&tx, environment_id).await?;
        let current: Vec<(String, String, String, String)> = query(
            &tx,
            "SELECT id, task_id, cron, timezone FROM schedules \
             WHERE environment_id = $1 AND kind = 'DECLARATIVE'",
            &[&environment_id],
        )
        .await?
        .iter()
        .map(|r| Ok((get(r, 0)?, get(r, 1)?, get(r, 2)?, get(r, 3)?)))
        .collect::<Result<_, StoreError>>()?;
        let mut removed = 0;
        for (id, task, _, _) in &current {
            if !declared.iter().any(|d| &d.task_id == task) {
                removed += exec(&tx, "DELETE FROM schedules WHERE id = $1", &[id]).await?;
            }
        }
        for d in &declared {
            match current.iter().find(|(_, task, _, _)| task == &d.task_id) {
                Some((_, _, cron, tz)) if cron == &d.cron && tz == &d.timezone => {}
                Some((id, ..)) => {
                    exec(
                        &tx,
                        "UPDATE schedules SET cron = $2, timezone = $3, updated_at = $5, \
                           next_fire_at = CASE WHEN active = 1 THEN $4::bigint ELSE NULL END \
                         WHERE id = $1",
                        &[id, &d.cron, &d.timezone, &d.next_fire_at, &now],
                    )
                    .await?;
                }
                None => {
                    exec(
                        &tx,
                        "INSERT INTO schedules (id, environment_id, kind, task_id, cron, timezone, \
                           active, next_fire_at, created_at, updated_at) \
                         VALUES ($1, $2, 'DECLARATIVE', $3, $4, $5, 1, $6, $7, $7)",
                        &[
                            &new_id("sched"),
                            &environment_id,
                            &d.task_id,
                            &d.cron,
                            &d.timezone,
                            &d.next_fire_at,
                            &now,
                        ],
                    )
                    .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(usize::try_from(removed).unwrap_or(usize::MAX))
    }
}

#[cfg(test)]
#[path = "schedules_tests.rs"]
mod tests;
