//! Attempts: the end with its usage and logs, a run's status change, and reading attempts and
//! logs. (An attempt starts with its claim: see `claim`.)

use super::lifecycle::{apply_update, record_attempt};
use super::rows::*;
use super::{DB_NOW, PostgresStore};
use crate::model::*;
use crate::store::*;

impl PostgresStore {
    pub async fn update_run(&self, update: RunUpdate) -> Result<Vec<Lane>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let resumed = apply_update(&tx, &update).await?;
        tx.commit().await?;
        Ok(resumed)
    }

    pub async fn finish_attempt(
        &self,
        finish: FinishAttempt,
    ) -> Result<Staged<Vec<Lane>>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let (_, resumed) = record_attempt(&tx, finish).await?;
        tx.commit().await?;
        Ok(Staged {
            value: resumed,
            durable: Durability::settled(),
        })
    }

    pub async fn attempts(
        &self,
        environment_id: &str,
        run_id: &str,
    ) -> Result<Vec<Attempt>, StoreError> {
        let c = self.reader().await?;
        if !run_in_env(&c, environment_id, run_id).await? {
            return Ok(Vec::new());
        }
        query(
            &c,
            &format!("SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE run_id = $1 ORDER BY number"),
            &[&run_id],
        )
        .await?
        .iter()
        .map(attempt_from_row)
        .collect()
    }

    pub async fn logs(
        &self,
        environment_id: &str,
        run_id: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, LogLine)>, StoreError> {
        let c = self.reader().await?;
        if !run_in_env(&c, environment_id, run_id).await? {
            return Ok(Vec::new());
        }
        query(
            &c,
            "SELECT id, attempt, at, level, message, attributes FROM run_logs \
             WHERE run_id = $1 AND id > $2 ORDER BY id LIMIT $3",
            &[&run_id, &after, &(limit as i64)],
        )
        .await?
        .iter()
        .map(|r| {
            let level: String = get(r, 3)?;
            Ok((
                get(r, 0)?,
                LogLine {
                    attempt: int(r, 1)?,
                    at: get(r, 2)?,
                    level: LogLevel::parse(&level).ok_or_else(|| corrupt("log level", &level))?,
                    message: get(r, 4)?,
                    attributes: get(r, 5)?,
                },
            ))
        })
        .collect()
    }

    /// Takes over the runs no live host holds — claimed or executing by a host start whose lease
    /// lapsed or ended (see the module `postgres`), or by none — and returns them: one update
    /// names this host as theirs, so of hosts taking runs over at once each run goes to one, and
    /// clears their claim, so whatever the attempts of the lapsed host still try to record is
    /// refused.
    pub async fn in_flight_runs(&self) -> Result<Vec<Run>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let host = self.host_id();
        let ids: Vec<String> = query(
            &tx,
            &format!(
                "UPDATE runs r SET host_id = $1, claim_id = NULL \
             WHERE r.status IN ('DEQUEUED', 'EXECUTING') \
               AND (r.host_id IS NULL OR NOT EXISTS \
                    (SELECT 1 FROM hosts h WHERE h.id = r.host_id AND h.lease_until >= {DB_NOW})) \
             RETURNING r.id"
            ),
            &[&&*host],
        )
        .await?
        .iter()
        .map(|r| get(r, 0))
        .collect::<Result<_, _>>()?;
        let runs = query(
            &tx,
            &format!("SELECT {RUN_COLUMNS} FROM {RUN_FROM} WHERE r.id = ANY($1) ORDER BY r.id"),
            &[&ids],
        )
        .await?
        .iter()
        .map(run_from_row)
        .collect::<Result<Vec<_>, _>>()?;
        tx.commit().await?;
        Ok(runs)
    }
}

#[cfg(test)]
mod tests {
    use super::super::run_fixtures::*;
    use super::super::testing::TestDatabase;
    use super::*;

    #[tokio::test]
    async fn attempts_and_logs_are_read_in_order_within_their_environment() {
        let db = TestDatabase::create().await;
        let store = db.store().await;
        let c = store.conn().await.expect("a connection");
        tenant(&c).await;
        deploy(&c, "d1", "20240101.1", 0, &["t"]).await;
        insert_run(&c, "r1", "a", "EXECUTING").await;
        insert_run(&c, "r2", "a", "DEQUEUED").await;
        insert_run(&c, "r3", "a", "QUEUED").await;
        c.batch_execute(
            "INSERT INTO attempts (run_id, number, status, deployment_id, started_at, finished_at) \
             VALUES ('r1', 2, 'EXECUTING', 'd1', 20, NULL), ('r1', 1, 'FAILED', 'd1', 10, 15)",
        )
        .await
        .expect("attempts");
        let attempts = store.attempts("e", "r1").await.expect("attempts");
        assert_eq!(
            attempts.iter().map(|a| a.number).collect::<Vec<_>>(),
            [1, 2]
        );
        assert_eq!(attempts[0].status, AttemptStatus::Failed);
        assert_eq!(attempts[0].finished_at, Some(15));
        assert!(
            store
                .attempts("other", "r1")
                .await
                .expect("none")
                .is_empty()
        );

        // The end of attempt 2 with its logs, through the store.
        let mut end = finish(
            update("r1", RunStatus::Executing, RunStatus::Completed, 30),
            2,
            AttemptStatus::Completed,
        );
        end.logs = (0..5)
            .map(|i| LogLine {
                attempt: 2,
                at: 21 + i,
                level: LogLevel::Warn,
                message: format!("line {i}"),
                attributes: None,
            })
            .collect();
        let staged = store.finish_attempt(end.clone()).await.expect("finished");
        staged.durable.wait().await.expect("durable");
        assert!(staged.value.is_empty());
        assert_eq!(status_of(&c, "r1").await, "COMPLETED");
        let again = store.finish_attempt(end).await;
        assert!(
            matches!(again, Err(StoreError::Conflict)),
            "{:?}",
            again.err()
        );

        let first = store.logs("e", "r1", 0, 3).await.expect("logs");
        assert_eq!(
            first
                .iter()
                .map(|(_, l)| l.message.as_str())
                .collect::<Vec<_>>(),
            ["line 0", "line 1", "line 2"]
        );
        assert_eq!(first[0].1.level, LogLevel::Warn);
        assert_eq!(first[0].1.attempt, 2);
        let rest = store.logs("e", "r1", first[2].0, 10).await.expect("logs");
        assert_eq!(rest.len(), 2);
        assert!(
            store
                .logs("other", "r1", 0, 10)
                .await
                .expect("none")
                .is_empty()
        );

        let mut in_flight: Vec<String> = store
            .in_flight_runs()
            .await
            .expect("in flight")
            .into_iter()
            .map(|r| r.id)
            .collect();
        in_flight.sort();
        assert_eq!(in_flight, ["r2"]);

        let resumed = store
            .update_run(update("r2", RunStatus::Dequeued, RunStatus::Queued, 40))
            .await
            .expect("recovered");
        assert!(resumed.is_empty());
        assert_eq!(status_of(&c, "r2").await, "QUEUED");
        let lost = store
            .update_run(update("r2", RunStatus::Dequeued, RunStatus::Queued, 40))
            .await;
        assert!(matches!(lost, Err(StoreError::Conflict)), "{lost:?}");
    }
}
