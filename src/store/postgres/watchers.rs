//! Runs as watchers read them (realtime): the runs a commit changed, by id and of any
//! environment (the watcher filters by its own), each read in one operation however many there
//! are, with their attempts and waits when the watcher shows those.

use deadpool_postgres::GenericClient;

use super::PostgresStore;
use super::rows::*;
use super::waits::waiting_for_run;
use crate::model::*;
use crate::store::*;

/// The runs of `ids` that exist, in one statement (an array parameter, however many ids).
async fn runs_in(c: &impl GenericClient, ids: &[String]) -> Result<Vec<Run>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    query(
        c,
        &format!("SELECT {RUN_COLUMNS} FROM {RUN_FROM} WHERE r.id = ANY($1)"),
        &[&ids],
    )
    .await?
    .iter()
    .map(run_from_row)
    .collect()
}

async fn attempts_of(c: &impl GenericClient, ids: &[String]) -> Result<Vec<Attempt>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    query(
        c,
        &format!(
            "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE run_id = ANY($1) ORDER BY run_id, number"
        ),
        &[&ids],
    )
    .await?
    .iter()
    .map(attempt_from_row)
    .collect()
}

impl PostgresStore {
    pub async fn changed_runs(&self, ids: Vec<String>) -> Result<Vec<Run>, StoreError> {
        let c = self.reader().await?;
        runs_in(&c, &ids).await
    }

    pub async fn runs_in_detail(&self, ids: Vec<String>) -> Result<Vec<RunDetail>, StoreError> {
        let c = self.reader().await?;
        let runs = runs_in(&c, &ids).await?;
        let ids: Vec<String> = runs.iter().map(|r| r.id.clone()).collect();
        let mut attempts = attempts_of(&c, &ids).await?;
        let mut out = Vec::with_capacity(runs.len());
        for run in runs {
            let (mine, rest): (Vec<Attempt>, Vec<Attempt>) =
                attempts.into_iter().partition(|a| a.run_id == run.id);
            attempts = rest;
            let waiting_for = if run.status == RunStatus::Waiting {
                waiting_for_run(&c, &run.id).await?
            } else {
                Vec::new()
            };
            out.push(RunDetail {
                run,
                attempts: mine,
                waiting_for,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::run_fixtures::*;
    use super::super::testing::TestDatabase;
    use super::*;

    #[tokio::test]
    async fn changed_runs_are_read_by_id_with_their_attempts_and_waits() {
        let db = TestDatabase::create().await;
        let store = db.store().await;
        let c = store.conn().await.expect("a connection");
        tenant(&c).await;
        deploy(&c, "d1", "20240101.1", 0, &["t"]).await;
        insert_run(&c, "r1", "a", "WAITING").await;
        insert_run(&c, "r2", "a", "COMPLETED").await;
        insert_run(&c, "child", "b", "QUEUED").await;
        c.batch_execute(
            "INSERT INTO attempts (run_id, number, status, deployment_id, started_at) VALUES \
               ('r1', 1, 'EXECUTING', 'd1', 1), ('r2', 2, 'COMPLETED', 'd1', 3), \
               ('r2', 1, 'FAILED', 'd1', 2); \
             INSERT INTO waitpoints (id, environment_id, run_id, kind, status, completes_at, created_at) \
               VALUES ('wp', 'e', 'r1', 'DATETIME', 'PENDING', 99, 0); \
             INSERT INTO run_waiters (child_run_id, parent_run_id) VALUES ('child', 'r1');",
        )
        .await
        .expect("set up");

        let ids = vec!["r1".to_owned(), "r2".to_owned(), "missing".to_owned()];
        let mut runs: Vec<String> = store
            .changed_runs(ids.clone())
            .await
            .expect("runs")
            .into_iter()
            .map(|r| r.id)
            .collect();
        runs.sort();
        assert_eq!(runs, ["r1", "r2"], "unknown ids are left out");
        assert!(
            store
                .changed_runs(Vec::new())
                .await
                .expect("none")
                .is_empty()
        );

        let mut detail = store.runs_in_detail(ids).await.expect("details");
        detail.sort_by(|a, b| a.run.id.cmp(&b.run.id));
        assert_eq!(detail.len(), 2);
        assert_eq!(detail[0].attempts.len(), 1);
        assert_eq!(
            detail[0].waiting_for,
            [
                WaitingFor::DateTime {
                    id: "wp".into(),
                    completes_at: 99
                },
                WaitingFor::Run { id: "child".into() }
            ]
        );
        assert_eq!(
            detail[1]
                .attempts
                .iter()
                .map(|a| a.number)
                .collect::<Vec<_>>(),
            [1, 2]
        );
        assert!(detail[1].waiting_for.is_empty(), "only a waiting run waits");
    }
}
