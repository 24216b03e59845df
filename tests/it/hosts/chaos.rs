//! Chaos with three hosts: three `kiln serve` processes on one PostgreSQL database run the chaos
//! test's mixed workload, its triggers spread over the hosts alive, while the test SIGKILLs a
//! random host at random moments and starts dead ones again now and then. A killed host's runs go
//! to another host once its lease passes, or to itself when it comes back first. At the end the
//! checks are the one-host chaos test's: every run's final status and output, one run per
//! idempotency key, no child twice, attempts within the retry policy, and no more outbound
//! requests than recorded attempts. `KILN_CHAOS_SEED` and `KILN_SOAK` work as there.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{LEASE, admin_key, join};
use crate::chaos::{self, Client, Job, Round};
use crate::restart::ServeProcess;

const HOSTS: usize = 3;

/// The chaos test's host flags, and the short lease.
fn serve_flags() -> Vec<&'static str> {
    chaos::SERVE.iter().chain(LEASE).copied().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_random_hosts_of_three_at_random_loses_nothing_and_repeats_nothing() {
    postgres_only!();
    chaos::rounds("three-host chaos", |seed, scale, kills| async move {
        three_host_round(seed, scale, kills).await
    })
    .await;
}

async fn three_host_round(seed: u64, scale: u32, kills: usize) -> chaos::Counts {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut round = Round::new(&mut rng, scale, kills).await;
    let flags = serve_flags();
    let mut dirs = vec![tempfile::tempdir().unwrap()];
    let host = ServeProcess::start(dirs[0].path(), &flags);
    for _ in 1..HOSTS {
        dirs.push(join(dirs[0].path()));
    }
    let start = |i: usize| ServeProcess::spawn(dirs[i].path(), &flags, &[], |_| {});
    // A host new to the database compiles the latest version on its dir before it claims a
    // run, so a kill during that compile cuts no attempt.
    host.kill();
    let mut hosts: Vec<Option<ServeProcess>> = (0..HOSTS).map(|i| Some(start(i))).collect();
    let admin = admin_key(dirs[0].path());
    let mut chunks = round
        .prepare(hosts[0].as_ref().unwrap(), &admin, kills)
        .await;

    // One chunk per step; each step ends with a random live host SIGKILLed at a random moment.
    // Dead hosts come back at the start of a step, each with even odds (one at least, if none
    // is alive), so runs of a dead host wait out its lease on another host, or are reclaimed by
    // the dead host itself when it returns first.
    let mut unanswered: Vec<Job> = Vec::new();
    let mut restarts = 0;
    let mut last_killed = 0;
    for step in 0..kills {
        for (i, slot) in hosts.iter_mut().enumerate() {
            if slot.is_none() && rng.random_bool(0.5) {
                *slot = Some(start(i));
                restarts += 1;
            }
        }
        if hosts.iter().all(Option::is_none) {
            let i = rng.random_range(0..HOSTS);
            hosts[i] = Some(start(i));
            restarts += 1;
        }
        let clients: Vec<Client> = hosts.iter().flatten().map(Client::of).collect();
        let mut jobs = std::mem::take(&mut unanswered);
        round.counts.resent += jobs.len();
        jobs.extend(chunks.pop_front().unwrap_or_default());
        let life = chaos::life_span(&mut rng, step);
        let sending = tokio::spawn({
            let (clients, ledger) = (clients.clone(), round.ledger.clone());
            async move { chaos::trigger_all(&clients, &ledger, jobs).await }
        });
        let tokens = chaos::complete_tokens_until_aborted(clients);
        tokio::time::sleep(life).await;
        let alive: Vec<usize> = (0..HOSTS).filter(|&i| hosts[i].is_some()).collect();
        last_killed = alive[rng.random_range(0..alive.len())];
        hosts[last_killed].take().unwrap().kill();
        tokens.abort();
        unanswered = sending.await.expect("the senders finish");
    }

    // The end: every host but the one killed last comes back; that one's runs wait out its lease.
    for (i, slot) in hosts.iter_mut().enumerate() {
        if slot.is_none() && i != last_killed {
            *slot = Some(start(i));
            restarts += 1;
        }
    }
    let clients: Vec<Client> = hosts.iter().flatten().map(Client::of).collect();
    round.finish(&clients, unanswered).await;
    for host in hosts.into_iter().flatten() {
        host.kill();
    }
    println!("three-host chaos (seed {seed}): {restarts} hosts started again");
    round.check_database(dirs[0].path()).await
}
