//! The SQL of cron schedules. Fire times are computed by the engine and passed in; the store never
//! reads a cron expression.
//!
//! A fire moves the schedule's `next_fire_at` on with compare-and-set on the value the engine
//! saw, and inserts the run in the same transaction: a fire makes one run or none, never two.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::SqliteStore;
use super::rows::*;
use super::rows::{exec, query_one};
use super::runs::{insert_one, live_idempotent_run};
use crate::model::*;
use crate::schedule::{Schedule, ScheduleType};
use crate::store::*;

pub(super) const SCHEDULE_COLUMNS: &str = "s.id, s.environment_id, p.slug, e.slug, s.kind, s.task_id, s.cron, \
     s.timezone, s.external_id, s.deduplication_key, s.active, s.next_fire_at, s.last_fire_at, \
     s.created_at, s.updated_at";

pub(super) const SCHEDULE_FROM: &str = "schedules s JOIN environments e ON e.id = s.environment_id \
     JOIN projects p ON p.id = e.project_id";

pub(super) fn schedule_from_row(row: &Row<'_>) -> rusqlite::Result<Schedule> {
    let kind: String = row.get(4)?;
    Ok(Schedule {
        id: row.get(0)?,
        environment: Environment {
            id: row.get(1)?,
            project_slug: row.get(2)?,
            slug: row.get(3)?,
            limits: Default::default(),
        },
        kind: ScheduleType::parse(&kind).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                4,
                rusqlite::types::Type::Text,
                format!("unknown schedule type {kind:?}").into(),
            )
        })?,
        task_id: row.get(5)?,
        cron: row.get(6)?,
        timezone: row.get(7)?,
        external_id: row.get(8)?,
        deduplication_key: row.get(9)?,
        active: row.get(10)?,
        next_fire_at: row.get(11)?,
        last_fire_at: row.get(12)?,
        created_at: row.get(13)?,
        updated_at: row.get(14)?,
    })
}

/// A schedule of an environment (another environment's is `None`, like a missing one).
pub(super) fn load_schedule(
    c: &Connection,
    environment_id: &str,
    id: &str,
) -> Result<Option<Schedule>, StoreError> {
    Ok(c.prepare_cached(&format!(
        "SELECT {SCHEDULE_COLUMNS} FROM {SCHEDULE_FROM} WHERE s.id = ?1 AND s.environment_id = ?2"
    ))?
    .query_row(params![id, environment_id], schedule_from_row)
    .optional()?)
}

pub(super) fn required(
    c: &Connection,
    environment_id: &str,
    id: &str,
) -> Result<Schedule, StoreError> {
    load_schedule(c, environment_id, id)?.ok_or(StoreError::NotFound("schedule"))
}

/// Writes new fields into a schedule; an inactive one keeps no next fire time.
pub(super) fn write_spec(
    c: &Connection,
    id: &str,
    spec: &ScheduleSpec,
    next_fire_at: Millis,
    now: Millis,
) -> Result<(), StoreError> {
    exec(
        c,
        "UPDATE schedules SET task_id = ?2, cron = ?3, timezone = ?4, external_id = ?5, \
           next_fire_at = CASE WHEN active THEN ?6 ELSE NULL END, updated_at = ?7 \
         WHERE id = ?1",
        params![
            id,
            spec.task_id,
            spec.cron,
            spec.timezone,
            spec.external_id,
            next_fire_at,
            now
        ],
    )?;
    Ok(())
}

impl SqliteStore {
    pub async fn upsert_schedule(
        &self,
        environment_id: &str,
        deduplication_key: String,
        spec: ScheduleSpec,
        next_fire_at: Millis,
        max_schedules: usize,
        now: Millis,
    ) -> Result<Result<(Schedule, bool), ScheduleRefusal>, StoreError> {
        let environment_id = environment_id.to_owned();
        self.write(move |c| {
            let existing: Option<String> = c
                .query_row(
                    "SELECT id FROM schedules WHERE environment_id = ?1 AND deduplication_key = ?2",
                    params![environment_id, deduplication_key],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(id) = existing {
                write_spec(c, &id, &spec, next_fire_at, now)?;
                return Ok(Ok((required(c, &environment_id, &id)?, false)));
            }
            let count: i64 = query_one(
                c,
                "SELECT count(*) FROM schedules WHERE environment_id = ?1",
                [&environment_id],
                |r| r.get(0),
            )?;
            let count = usize::try_from(count).unwrap_or(usize::MAX);
            if count >= max_schedules {
                return Ok(Err(ScheduleRefusal::TooMany(count)));
            }
            let id = new_id("sched");
            exec(
                c,
                "INSERT INTO schedules (id, environment_id, kind, task_id, cron, timezone, external_id, \
                   deduplication_key, active, next_fire_at, created_at, updated_at) \
                 VALUES (?1, ?2, 'IMPERATIVE', ?3, ?4, ?5, ?6, ?7, 1, ?8, ?9, ?9)",
                params![
                    id,
                    environment_id,
                    spec.task_id,
                    spec.cron,
                    spec.timezone,
                    spec.external_id,
                    deduplication_key,
                    next_fire_at,
                    now
                ],
            )?;
            Ok(Ok((required(c, &environment_id, &id)?, true)))
        })
        .await
    }

    pub async fn update_schedule(
        &self,
        environment_id: &str,
        id: &str,
        spec: ScheduleSpec,
        next_fire_at: Millis,
        now: Millis,
    ) -> Result<Result<Schedule, ScheduleRefusal>, StoreError> {
        let (environment_id, id) = (environment_id.to_owned(), id.to_owned());
        self.write(move |c| {
            match load_schedule(c, &environment_id, &id)? {
                None => return Ok(Err(ScheduleRefusal::NotFound)),
                Some(s) if s.kind == ScheduleType::Declarative => {
                    return Ok(Err(ScheduleRefusal::Declarative));
                }
                Some(_) => {}
            }
            write_spec(c, &id, &spec, next_fire_at, now)?;
            Ok(Ok(required(c, &environment_id, &id)?))
        })
        .await
    }

    pub async fn delete_schedule(
        &self,
        environment_id: &str,
        id: &str,
    ) -> Result<Result<Schedule, ScheduleRefusal>, StoreError> {
        let (environment_id, id) = (environment_id.to_owned(), id.to_owned());
        self.write(move |c| {
            let schedule = match load_schedule(c, &environment_id, &id)? {
                None => return Ok(Err(ScheduleRefusal::NotFound)),
                Some(s) if s.kind == ScheduleType::Declarative => {
                    return Ok(Err(ScheduleRefusal::Declarative));
                }
                Some(s) => s,
            };
            exec(c, "DELETE FROM schedules WHERE id = ?1", [&id])?;
            Ok(Ok(schedule))
        })
        .await
    }

    pub async fn set_schedule_active(
        &self,
        environment_id: &str,
        id: &str,
        active: bool,
        next_fire_at: Option<Millis>,
        now: Millis,
    ) -> Result<Option<Schedule>, StoreError> {
        let (environment_id, id) = (environment_id.to_owned(), id.to_owned());
        self.write(move |c| {
            let changed = exec(
                c,
                "UPDATE schedules SET active = ?3, updated_at = ?5, \
                   next_fire_at = CASE WHEN ?3 THEN coalesce(next_fire_at, ?4) ELSE NULL END \
                 WHERE id = ?1 AND environment_id = ?2",
                params![id, environment_id, active, next_fire_at, now],
            )?;
            if changed == 0 {
                return Ok(None);
            }
            load_schedule(c, &environment_id, &id)
        })
        .await
    }

    pub async fn schedule(
        &self,
        environment_id: &str,
        id: &str,
    ) -> Result<Option<Schedule>, StoreError> {
        let (environment_id, id) = (environment_id.to_owned(), id.to_owned());
        self.read(move |c| load_schedule(c, &environment_id, &id))
            .await
    }

    pub async fn list_schedules(
        &self,
        environment_id: &str,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<Schedule>, u64), StoreError> {
        let environment_id = environment_id.to_owned();
        self.read(move |c| {
            let count: i64 = query_one(
                c,
                "SELECT count(*) FROM schedules WHERE environment_id = ?1",
                [&environment_id],
                |r| r.get(0),
            )?;
            let page = c
                .prepare_cached(&format!(
                    "SELECT {SCHEDULE_COLUMNS} FROM {SCHEDULE_FROM} WHERE s.environment_id = ?1 \
                     ORDER BY s.created_at DESC, s.id DESC LIMIT ?2 OFFSET ?3"
                ))?
                .query_map(
                    params![environment_id, limit as i64, offset as i64],
                    schedule_from_row,
                )?
                .collect::<Result<_, _>>()?;
            Ok((page, u64::try_from(count).unwrap_or(0)))
        })
        .await
    }

    pub async fn due_schedules(
        &self,
        now: Millis,
        limit: usize,
    ) -> Result<Vec<Schedule>, StoreError> {
        self.read(move |c| {
            Ok(c.prepare_cached(&format!(
                "SELECT {SCHEDULE_COLUMNS} FROM {SCHEDULE_FROM} \
                 WHERE s.next_fire_at IS NOT NULL AND s.next_fire_at <= ?1 \
                 ORDER BY s.next_fire_at LIMIT ?2"
            ))?
            .query_map(params![now, limit as i64], schedule_from_row)?
            .collect::<Result<_, _>>()?)
        })
        .await
    }

    pub async fn next_schedule_fire(&self) -> Result<Option<Millis>, StoreError> {
        self.read(|c| {
            Ok(query_one(
                c,
                "SELECT min(next_fire_at) FROM schedules WHERE next_fire_at IS NOT NULL",
                [],
                |r| r.get(0),
            )?)
        })
        .await
    }

    pub async fn fire_schedules(
        &self,
        fires: Vec<ScheduleFire>,
    ) -> Result<Vec<Option<Inserted>>, StoreError> {
        self.write(move |c| {
            let mut out = Vec::with_capacity(fires.len());
            for fire in fires {
                let changed = c
                    .prepare_cached(
                        "UPDATE schedules SET next_fire_at = ?2, \
                           last_fire_at = CASE WHEN ?4 THEN ?3 ELSE last_fire_at END \
                         WHERE id = ?1 AND active AND next_fire_at = ?5",
                    )?
                    .execute(params![
                        fire.schedule_id,
                        fire.next_fire_at,
                        fire.timestamp,
                        fire.run.is_some(),
                        fire.expected_next
                    ])?;
                let Some(run) = fire.run.filter(|_| changed == 1) else {
                    out.push(None);
                    continue;
                };
                if let Some(existing) = live_idempotent_run(c, &run)? {
                    out.push(Some(Inserted {
                        run: existing,
                        cached: true,
                    }));
                    continue;
                }
                let id = insert_one(c, &run, None)?;
                out.push(Some(Inserted {
                    run: load_run(c, &id)?.ok_or(StoreError::NotFound("run"))?,
                    cached: false,
                }));
            }
            Ok(out)
        })
        .await
    }

    pub async fn sync_declarative_schedules(
        &self,
        environment_id: &str,
        declared: Vec<DeclaredSchedule>,
        now: Millis,
    ) -> Result<usize, StoreError> {
        let environment_id = environment_id.to_owned();
        self.write(move |c| {
            let current: Vec<(String, String, String, String)> = c
                .prepare_cached(
                    "SELECT id, task_id, cron, timezone FROM schedules \
                     WHERE environment_id = ?1 AND kind = 'DECLARATIVE'",
                )?
                .query_map([&environment_id], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })?
                .collect::<Result<_, _>>()?;
            let mut removed = 0;
            for (id, task, _, _) in &current {
                if !declared.iter().any(|d| &d.task_id == task) {
                    removed += exec(c, "DELETE FROM schedules WHERE id = ?1", [id])?;
                }
            }
            for d in &declared {
                match current.iter().find(|(_, task, _, _)| task == &d.task_id) {
                    Some((_, _, cron, tz)) if cron == &d.cron && tz == &d.timezone => {}
                    Some((id, ..)) => {
                        exec(
                c,
                            "UPDATE schedules SET cron = ?2, timezone = ?3, updated_at = ?5, \
                               next_fire_at = CASE WHEN active THEN ?4 ELSE NULL END \
                             WHERE id = ?1",
                            params![id, d.cron, d.timezone, d.next_fire_at, now],
                        )?;
                    }
                    None => {
                        exec(
                c,
                            "INSERT INTO schedules (id, environment_id, kind, task_id, cron, timezone, \
                               active, next_fire_at, created_at, updated_at) \
                             VALUES (?1, ?2, 'DECLARATIVE', ?3, ?4, ?5, 1, ?6, ?7, ?7)",
                            params![
                                new_id("sched"),
                                environment_id,
                                d.task_id,
                                d.cron,
                                d.timezone,
                                d.next_fire_at,
                                now
                            ],
                        )?;
                    }
                }
            }
            Ok(removed)
        })
        .await
    }
}
