//! The journal writer: appends an attempt's journal segments and log lines, and commits the journal
//! together with an effect (a token, child runs, a metadata change) in the caller's transaction.
//!
//! A leaf: it changes no run status beyond marking an executing run as having a journal.

use deadpool_postgres::GenericClient;

use super::rows::{exec, get, query};
use crate::model::*;
use crate::store::*;

/// Appends the segment of `journal` for `effect` and marks the run as having a journal, in the
/// caller's transaction. `Conflict` if the run is no longer executing (canceled meanwhile), or
/// — with the journal's claim — was claimed again or taken over by another host since.
pub(super) async fn commit_journal<T: ?Sized + Sync>(
    c: &impl GenericClient,
    journal: JournalWith<T>,
    effect: &T,
    now: Millis,
) -> Result<(), StoreError> {
    let JournalWith {
        run_id,
        environment_id,
        attempt,
        claim,
        entries,
        logs,
    } = journal;
    let entries = entries(effect);
    append_journal(c, &run_id, attempt, entries, now).await?;
    insert_logs(c, &run_id, &logs).await?;
    let marked = exec(
        c,
        "UPDATE runs SET checkpointed = 1 \
         WHERE id = $1 AND environment_id = $2 AND status = 'EXECUTING' \
           AND ($3::text IS NULL OR claim_id = $3)",
        &[&run_id, &environment_id, &claim],
    )
    .await?;
    if marked == 0 {
        return Err(StoreError::Conflict);
    }
    Ok(())
}

/// Appends a segment to an attempt's journal.
///
/// The segment's number is the attempt's last plus one, read and written in one statement; two
/// transactions appending to one attempt at once would read the same last number (neither sees
/// the other's uncommitted segment) and one would fail on the key. So the run's row is locked
/// first: the second waits for the first to commit, and its statement then sees that segment.
pub(super) async fn append_journal(
    c: &impl GenericClient,
    run_id: &str,
    attempt: u32,
    entries: Vec<u8>,
    now: Millis,
) -> Result<(), StoreError> {
    exec(
        c,
        "SELECT 1 FROM runs WHERE id = $1 FOR NO KEY UPDATE",
        &[&run_id],
    )
    .await?;
    exec(
        c,
        "INSERT INTO journal_segments (run_id, attempt, segment, entries, created_at) \
         SELECT $1, $2, coalesce(max(segment) + 1, 0), $3, $4 FROM journal_segments \
         WHERE run_id = $1 AND attempt = $2",
        &[&run_id, &i64::from(attempt), &entries, &now],
    )
    .await?;
    Ok(())
}

pub(super) async fn insert_logs(
    c: &impl GenericClient,
    run_id: &str,
    logs: &[LogLine],
) -> Result<(), StoreError> {
    for line in logs {
        exec(
            c,
            "INSERT INTO run_logs (run_id, attempt, at, level, message, attributes) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &run_id,
                &i64::from(line.attempt),
                &line.at,
                &line.level.as_str(),
                &line.message,
                &line.attributes,
            ],
        )
        .await?;
    }
    Ok(())
}

/// The journal of an attempt: its segments in order, concatenated.
pub(super) async fn read_journal(
    c: &impl GenericClient,
    run_id: &str,
    attempt: u32,
) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::new();
    for row in query(
        c,
        "SELECT entries FROM journal_segments WHERE run_id = $1 AND attempt = $2 ORDER BY segment",
        &[&run_id, &i64::from(attempt)],
    )
    .await?
    {
        out.extend_from_slice(get::<&[u8]>(&row, 0)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::run_fixtures::*;
    use super::super::testing::TestDatabase;
    use super::*;

    fn journal_of(run_id: &str, logs: Vec<LogLine>) -> JournalWith<str> {
        JournalWith {
            run_id: run_id.into(),
            environment_id: "e".into(),
            attempt: 1,
            claim: None,
            entries: Box::new(|effect: &str| effect.as_bytes().to_vec()),
            logs,
        }
    }

    #[tokio::test]
    async fn segments_are_numbered_in_order_and_read_back_concatenated() {
        let db = TestDatabase::create().await;
        let store = db.store().await;
        let c = store.conn().await.expect("a connection");
        tenant(&c).await;
        insert_run(&c, "r1", "a", "EXECUTING").await;
        for part in [b"ab".to_vec(), b"cd".to_vec(), b"e".to_vec()] {
            append_journal(&c, "r1", 1, part, 5)
                .await
                .expect("a segment");
        }
        append_journal(&c, "r1", 2, b"other".to_vec(), 5)
            .await
            .expect("another attempt's segment");
        assert_eq!(read_journal(&c, "r1", 1).await.expect("read"), b"abcde");
        assert_eq!(read_journal(&c, "r1", 2).await.expect("read"), b"other");
        assert!(read_journal(&c, "r1", 3).await.expect("read").is_empty());
        let numbers: Vec<i64> = c
            .query(
                "SELECT segment FROM journal_segments WHERE run_id = 'r1' AND attempt = 1 \
                 ORDER BY segment",
                &[],
            )
            .await
            .expect("segments")
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(numbers, [0, 1, 2]);
    }

    /// Appends to one attempt from many transactions at once all commit, numbered 0, 1, 2… (the
    /// run's row lock orders them; without it they read the same last number).
    #[tokio::test]
    async fn concurrent_appends_to_one_attempt_get_consecutive_numbers() {
        let db = TestDatabase::create().await;
        let store = db.store().await;
        {
            let c = store.conn().await.expect("a connection");
            tenant(&c).await;
            insert_run(&c, "r1", "a", "EXECUTING").await;
        }
        let appends = (0..8u8).map(|i| {
            let store = store.clone();
            async move {
                let mut c = store.conn().await?;
                let tx = c.transaction().await?;
                append_journal(&tx, "r1", 1, vec![i], 5).await?;
                // Hold the transaction open a moment, so the others run meanwhile.
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                tx.commit().await?;
                Ok::<_, StoreError>(())
            }
        });
        for result in futures_util::future::join_all(appends).await {
            result.expect("every append commits");
        }
        let c = store.conn().await.expect("a connection");
        let numbers: Vec<i64> = c
            .query(
                "SELECT segment FROM journal_segments WHERE run_id = 'r1' ORDER BY segment",
                &[],
            )
            .await
            .expect("segments")
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(numbers, (0..8).collect::<Vec<i64>>());
        let mut bytes = read_journal(&c, "r1", 1).await.expect("read");
        bytes.sort();
        assert_eq!(bytes, (0..8u8).collect::<Vec<u8>>());
    }

    #[tokio::test]
    async fn a_journal_commits_with_its_effect_only_while_the_run_executes() {
        let db = TestDatabase::create().await;
        let store = db.store().await;
        let mut c = store.conn().await.expect("a connection");
        tenant(&c).await;
        insert_run(&c, "r1", "a", "EXECUTING").await;
        insert_run(&c, "r2", "a", "CANCELED").await;
        let line = LogLine {
            attempt: 1,
            at: 7,
            level: LogLevel::Info,
            message: "hello".into(),
            attributes: None,
        };
        let tx = c.transaction().await.expect("a transaction");
        commit_journal(&tx, journal_of("r1", vec![line]), "effect", 9)
            .await
            .expect("committed");
        tx.commit().await.expect("commit");
        assert_eq!(read_journal(&c, "r1", 1).await.expect("read"), b"effect");
        let row = c
            .query_one(
                "SELECT r.checkpointed, (SELECT count(*) FROM run_logs WHERE run_id = 'r1') \
                 FROM runs r WHERE id = 'r1'",
                &[],
            )
            .await
            .expect("the run");
        assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (1, 1));

        let tx = c.transaction().await.expect("a transaction");
        let e = commit_journal(&tx, journal_of("r2", Vec::new()), "effect", 9).await;
        assert!(matches!(e, Err(StoreError::Conflict)), "{e:?}");
    }
}
