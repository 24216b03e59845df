//! This host's lease among the hosts sharing the database (see the module `postgres`): taken at
//! start (ending an earlier start's of the same host), renewed every third of its length,
//! taken again if it lapsed, and ended when the host stops; lapsed leases of other hosts are
//! deleted and announced, so a live host takes their runs over. What fences a lapsed host's
//! attempts is not the lease but their claim (`runs.claim_id`): a takeover clears it, a new
//! claim replaces it, and an attempt's writes must carry the one that started it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use deadpool_postgres::Pool;

use super::{PostgresStore, Shared};
use crate::store::{HostHint, StoreError};

/// The database's clock in milliseconds since the epoch: leases are measured on it, so hosts
/// whose own clocks differ agree on when one lapsed.
pub(super) const DB_NOW: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::BIGINT";

/// Every how many lease renewals a host also looks for runs no live host holds, in case the host
/// that deleted a lapsed lease stopped before taking its runs over.
const ORPHAN_CHECK_RENEWALS: u64 = 10;

/// This host's lease on the database.
pub(super) struct Lease {
    /// The host's name, the same on each start of its data dir.
    pub(super) name: String,
    pub(super) length: std::time::Duration,
    /// This start's id (`hosts.id`, what its claims write into `runs.host_id`).
    pub(super) id: Arc<str>,
    /// When the last renewal the database confirmed was sent (the lease lasts from then, or
    /// from later, on the database's clock).
    pub(super) renewed: Mutex<std::time::Instant>,
    /// The host stopped and ended its lease: nothing more is written or renewed.
    pub(super) released: AtomicBool,
}

impl Lease {
    pub(super) fn id(&self) -> Arc<str> {
        self.id.clone()
    }

    /// Whether the lease is surely still this host's: less than its length has passed since a
    /// confirmed renewal was sent.
    pub(super) fn held(&self) -> bool {
        !self.released.load(Ordering::SeqCst)
            && self
                .renewed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .elapsed()
                < self.length
    }
}

/// A new id for a start of a host.
pub(super) fn new_host_id() -> String {
    format!("host_{}", ulid::Ulid::new().to_string().to_lowercase())
}

/// Takes a lease for the host start `id`, ending the lease of an earlier start of the same
/// host (its process is gone: one data dir runs one host at a time), so the runs that one held
/// are taken over at once rather than when its lease would have lapsed.
pub(super) async fn register(
    c: &tokio_postgres::Client,
    id: &str,
    name: &str,
    lease: std::time::Duration,
) -> Result<(), tokio_postgres::Error> {
    let lease_ms = lease.as_millis() as i64;
    c.execute("DELETE FROM hosts WHERE name = $1", &[&name])
        .await?;
    c.execute(
        &format!(
            "INSERT INTO hosts (id, name, started_at, lease_until) \
             VALUES ($1, $2, {DB_NOW}, {DB_NOW} + $3)"
        ),
        &[&id, &name, &lease_ms],
    )
    .await?;
    Ok(())
}

/// Renews this host's lease every third of its length, for as long as the store lives (see
/// [`renew`] for a lease that lapsed). After each renewal, lapsed leases of other hosts are
/// deleted and the engine told (`HostHint::Orphans`), so one live host takes their runs over.
pub(super) async fn keep_lease(pool: Pool, shared: std::sync::Weak<Shared>) {
    let mut renewals = 0u64;
    loop {
        let Some(period) = shared.upgrade().map(|live| live.lease.length / 3) else {
            return;
        };
        tokio::time::sleep(period).await;
        let Some(live) = shared.upgrade() else { return };
        if live.lease.released.load(Ordering::SeqCst) {
            return;
        }
        renewals += 1;
        let sent = std::time::Instant::now();
        match renew(&pool, &live).await {
            Ok(()) => *live.lease.renewed.lock().unwrap_or_else(|e| e.into_inner()) = sent,
            Err(e) => tracing::warn!(error = %e, "renewing this host's lease failed; trying again"),
        }
        let reaped = match pool.get().await {
            Ok(c) => c
                .execute(
                    &format!("DELETE FROM hosts WHERE lease_until < {DB_NOW}"),
                    &[],
                )
                .await
                .unwrap_or(0),
            Err(_) => 0,
        };
        if reaped > 0 || renewals.is_multiple_of(ORPHAN_CHECK_RENEWALS) {
            if reaped > 0 {
                tracing::warn!(
                    hosts = reaped,
                    "the lease of another host lapsed; taking its runs over"
                );
            }
            let _ = live.hosts.send(HostHint::Orphans);
        }
    }
}

/// One renewal of the lease. A lease that lapsed, or that another host deleted meanwhile, is
/// taken again under the same id: the runs another host took over since have lost their claim,
/// so whatever this host's attempts of them still try to record is refused (see
/// `lifecycle::record_attempt` and `journal::commit_journal`), while the runs nobody took over
/// are still this host's, and their attempts carry on.
pub(super) async fn renew(pool: &Pool, shared: &Shared) -> Result<(), StoreError> {
    let lease = &shared.lease;
    let c = pool.get().await?;
    let lapsed: bool = c
        .query_one(
            &format!(
                "WITH before AS (SELECT lease_until FROM hosts WHERE id = $1) \
                 INSERT INTO hosts (id, name, started_at, lease_until) \
                 VALUES ($1, $2, {DB_NOW}, {DB_NOW} + $3) \
                 ON CONFLICT (id) DO UPDATE SET lease_until = EXCLUDED.lease_until \
                 RETURNING coalesce((SELECT lease_until < {DB_NOW} FROM before), true)"
            ),
            &[&&*lease.id, &lease.name, &(lease.length.as_millis() as i64)],
        )
        .await?
        .get(0);
    if lapsed {
        tracing::error!(
            "this host's lease had lapsed (the database was out of reach for longer than \
             --host-lease); runs other hosts took over meanwhile are theirs now, and what this \
             host's attempts of them try to record is refused"
        );
    }
    Ok(())
}

impl PostgresStore {
    /// Ends this host's lease, so other hosts take over at once whatever it still holds; the
    /// store refuses requests from then on. The last thing a host does when it stops.
    pub async fn release_lease(&self) {
        self.shared.lease.released.store(true, Ordering::SeqCst);
        let (pool, id) = (self.pool.clone(), self.host_id());
        let released = self
            .on_runtime(async move {
                let c = pool.get().await?;
                c.execute("DELETE FROM hosts WHERE id = $1", &[&&*id])
                    .await?;
                Ok(())
            })
            .await;
        if let Err(e) = released {
            tracing::warn!(error = %e, "ending this host's lease failed; other hosts take its runs over when it lapses");
        }
    }

    /// This start's id, as its claims write it into `runs.host_id`.
    pub(super) fn host_id(&self) -> Arc<str> {
        self.shared.lease.id()
    }
}
