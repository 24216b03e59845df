use super::super::run_fixtures::*;
use super::super::testing::TestDatabase;
use super::*;

fn new_token(key: Option<(&str, Millis)>, tags: &[&str], now: Millis) -> NewToken {
    NewToken {
        environment_id: "e".into(),
        timeout_at: Some(now + 1_000),
        idempotency: key.map(|(k, e)| (k.to_owned(), e)),
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        now,
    }
}

fn journal_of(run_id: &str) -> JournalWith<(WaitToken, bool)> {
    JournalWith {
        run_id: run_id.into(),
        environment_id: "e".into(),
        attempt: 1,
        claim: None,
        entries: Box::new(|(token, _): &(WaitToken, bool)| token.id.as_bytes().to_vec()),
        logs: Vec::new(),
    }
}

#[tokio::test]
async fn a_key_returns_its_live_token_and_is_released_once_it_expires() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    let c = store.conn().await.expect("a connection");
    tenant(&c).await;
    let (first, cached) = store
        .create_token(new_token(Some(("k", 100)), &["x"], 10), None)
        .await
        .expect("made");
    assert!(!cached);
    assert_eq!(first.status, TokenStatus::Waiting);
    assert_eq!(first.tags, ["x"]);
    assert_eq!(first.timeout_at, Some(1_010));
    assert_eq!(first.idempotency_key.as_deref(), Some("k"));
    let (again, cached) = store
        .create_token(new_token(Some(("k", 100)), &[], 50), None)
        .await
        .expect("found");
    assert!(cached);
    assert_eq!(again, first);
    let (fresh, cached) = store
        .create_token(new_token(Some(("k", 300)), &[], 200), None)
        .await
        .expect("made");
    assert!(!cached, "an expired key is released");
    assert_ne!(fresh.id, first.id);
    let old = store
        .token("e", &first.id)
        .await
        .expect("read")
        .expect("kept");
    assert_eq!(old.idempotency_key, None);
    assert_eq!(store.token("other", &first.id).await.expect("read"), None);
}

/// Two creates with one key at once make one token: the second returns the first's.
#[tokio::test]
async fn two_creates_with_one_key_at_once_make_one_token() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    let c = store.conn().await.expect("a connection");
    tenant(&c).await;
    slow_commits(&c, "waitpoints", "true", 0.3).await;
    let (one, two) = tokio::join!(
        store.create_token(new_token(Some(("k", 100)), &[], 10), None),
        store.create_token(new_token(Some(("k", 100)), &[], 10), None),
    );
    let ((one, one_cached), (two, two_cached)) = (one.expect("made"), two.expect("made"));
    assert_eq!(one.id, two.id);
    assert!(one_cached != two_cached, "one made it, the other found it");
    let count: i64 = c
        .query_one("SELECT count(*) FROM waitpoints", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(count, 1);
}

#[tokio::test]
async fn a_run_makes_a_token_with_its_journal_unless_it_was_canceled() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    let c = store.conn().await.expect("a connection");
    tenant(&c).await;
    insert_run(&c, "r1", "a", "EXECUTING").await;
    insert_run(&c, "gone", "a", "CANCELED").await;
    let (token, _) = store
        .create_token(new_token(None, &[], 10), Some(journal_of("r1")))
        .await
        .expect("made");
    assert_eq!(
        store.journal("e", "r1", 1).await.expect("journal"),
        token.id.as_bytes()
    );
    let e = store
        .create_token(new_token(None, &[], 10), Some(journal_of("gone")))
        .await;
    assert!(matches!(e, Err(StoreError::Conflict)), "{e:?}");
    let count: i64 = c
        .query_one("SELECT count(*) FROM waitpoints", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(count, 1, "no token is stored for a canceled run");
}

#[tokio::test]
async fn a_token_completes_once_in_its_environment() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    let c = store.conn().await.expect("a connection");
    tenant(&c).await;
    insert_run(&c, "w", "a", "WAITING").await;
    let (token, _) = store
        .create_token(new_token(None, &[], 10), None)
        .await
        .expect("made");
    c.execute(
        "INSERT INTO waitpoint_waiters (waitpoint_id, run_id) VALUES ($1, 'w')",
        &[&token.id],
    )
    .await
    .expect("a waiter");
    assert!(
        store
            .complete_token(Some("other".into()), &token.id, "1".into(), 20)
            .await
            .expect("none")
            .is_none()
    );
    assert!(
        store
            .complete_token(None, "missing", "1".into(), 20)
            .await
            .expect("none")
            .is_none()
    );
    let (done, lanes) = store
        .complete_token(Some("e".into()), &token.id, "{\"a\":1}".into(), 20)
        .await
        .expect("completed")
        .expect("a token");
    assert_eq!(lanes.map(|l| l.len()), Some(1));
    assert_eq!(done.status, TokenStatus::Completed);
    assert_eq!(done.output.as_deref(), Some("{\"a\":1}"));
    assert!(!done.output_is_error);
    assert_eq!(done.completed_at, Some(20));
    assert_eq!(status_of(&c, "w").await, "QUEUED");
    let (again, lanes) = store
        .complete_token(None, &token.id, "2".into(), 30)
        .await
        .expect("read")
        .expect("a token");
    assert_eq!(lanes, None, "a token completes once");
    assert_eq!(again.output.as_deref(), Some("{\"a\":1}"));
}

#[tokio::test]
async fn tokens_are_listed_newest_first_by_page_and_filter() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    let c = store.conn().await.expect("a connection");
    tenant(&c).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let tags: &[&str] = if i % 2 == 0 { &["even"] } else { &["odd", "x"] };
        let key = format!("k{i}");
        let (token, _) = store
            .create_token(new_token(Some((&key, 1_000)), tags, 10 + i), None)
            .await
            .expect("made");
        ids.push(token.id);
        // ULIDs made in one millisecond do not sort by creation: keep them apart.
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    store
        .complete_token(None, &ids[1], "1".into(), 50)
        .await
        .expect("completed");
    let listed = |filter: TokenFilter, limit, after: Option<&String>, before: Option<&String>| {
        let store = store.clone();
        let (after, before) = (after.cloned(), before.cloned());
        async move {
            let (tokens, more) = store
                .list_tokens("e", filter, limit, after, before)
                .await
                .expect("listed");
            (tokens.into_iter().map(|t| t.id).collect::<Vec<_>>(), more)
        }
    };
    let all = TokenFilter::default();
    let (page, more) = listed(all.clone(), 2, None, None).await;
    assert_eq!(
        (page.clone(), more),
        (vec![ids[4].clone(), ids[3].clone()], true)
    );
    let (next, more) = listed(all.clone(), 2, page.last(), None).await;
    assert_eq!((next, more), (vec![ids[2].clone(), ids[1].clone()], true));
    let (back, more) = listed(all.clone(), 2, None, Some(&ids[1])).await;
    assert_eq!((back, more), (vec![ids[3].clone(), ids[2].clone()], true));

    let odd = TokenFilter {
        tags: vec!["odd".into(), "none".into()],
        ..TokenFilter::default()
    };
    assert_eq!(
        listed(odd, 10, None, None).await.0,
        [ids[3].clone(), ids[1].clone()]
    );
    let completed = TokenFilter {
        statuses: vec![TokenStatus::Completed, TokenStatus::TimedOut],
        ..TokenFilter::default()
    };
    assert_eq!(listed(completed, 10, None, None).await.0, [ids[1].clone()]);
    let keyed = TokenFilter {
        idempotency_key: Some("k2".into()),
        created_from: Some(11),
        created_to: Some(12),
        ..TokenFilter::default()
    };
    assert_eq!(listed(keyed, 10, None, None).await.0, [ids[2].clone()]);
    let (none, more) = listed(all, 10, None, None).await;
    assert_eq!((none.len(), more), (5, false));
}
