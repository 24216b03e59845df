//! Executing guests: a fresh store per call (limits, WASI, journaled clocks, seeded randomness,
//! scratch directory, epoch callback), `definitions()` at deploy and `run()` for an attempt, and
//! the checks of what `run` returned.
//!
//! Whatever the guest does comes back as a value ([`AttemptOutcome`], [`GuestFailure`]); nothing
//! here panics on guest data or waits without a limit.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::WasiCtx;

use super::bindings::wit;
use super::classify::{classify, nondeterministic};
use super::clocks::{JournaledMonotonicClock, JournaledWallClock};
use super::journal::{Divergence, Journal};
use super::limits::MemoryLimiter;
use super::output::{GuestOutput, LogBuffer};
use super::state::{STOP_CANCELED, STOP_NONE, STOP_TIMEOUT, Suspend};
use super::{
    AttemptOutcome, AttemptReport, AttemptRequest, CancelHandle, DeclaredRetry, DeclaredSchedule,
    DeclaredTask, GuestFailure, HostState, Live, Prepared, Replay, RunContext, Sandbox, Scratch,
    TrapKind, http, scratch,
};
use crate::model::LogLevel;

/// Runs a guest call until it ends or its attempt is canceled. The epoch callback sees a cancel
/// only while the guest computes; a cancel that finds it waiting inside a host call (a WASI
/// sleep, a read) drops the call, which wasmtime unwinds (the fiber is resumed with an error, so
/// no guest code runs after it), and answers as the epoch callback's interrupt does.
async fn unless_canceled<T>(
    call: std::pin::Pin<&mut impl std::future::Future<Output = wasmtime::Result<T>>>,
    cancel: &CancelHandle,
    stop: &AtomicU8,
) -> wasmtime::Result<T> {
    tokio::select! {
        biased;
        result = call => result,
        () = cancel.canceled() => {
            stop.store(STOP_CANCELED, Ordering::Relaxed);
            Err(wasmtime::Error::new(wasmtime::Trap::Interrupt))
        }
    }
}

/// Wall time `definitions()` may take at deploy before the upload is refused.
const DEFINITIONS_TIMEOUT: Duration = Duration::from_secs(10);

/// Fuel `definitions()` may burn: generous for building a list, small enough to stop a loop fast.
const DEFINITIONS_FUEL: u64 = 2_000_000_000;

/// Memory `definitions()` may use.
const DEFINITIONS_MEMORY: u64 = 256 << 20;

/// Largest output a task may return (DESIGN §7).
pub const MAX_OUTPUT_BYTES: usize = 10 << 20;

/// What one store may use: memory in bytes, fuel, and the instant its guest is stopped.
pub(super) struct Budget {
    pub(super) memory: u64,
    pub(super) fuel: u64,
    pub(super) deadline: Option<Instant>,
}

impl Sandbox {
    pub(super) fn new_store(
        &self,
        engine: &wasmtime::Engine,
        budget: Budget,
        cancel: CancelHandle,
        attempt: u32,
        replay: Replay,
    ) -> Store<HostState> {
        let Budget {
            memory,
            fuel,
            deadline,
        } = budget;
        let journal = Journal::replaying(replay.journal);
        let activity = journal.activity();
        let mut logs = LogBuffer::new(attempt);
        logs.mute_while(journal.replaying_flag());
        let logs = Arc::new(Mutex::new(logs));
        let journal = Arc::new(Mutex::new(journal));
        let mut wasi = WasiCtx::builder();
        wasi.stdout(GuestOutput::new(
            logs.clone(),
            LogLevel::Info,
            Some(activity.clone()),
        ))
        .stderr(GuestOutput::new(logs.clone(), LogLevel::Error, None))
        .wall_clock(JournaledWallClock {
            journal: journal.clone(),
            clock: replay.clock.clone(),
        })
        .monotonic_clock(JournaledMonotonicClock {
            journal: journal.clone(),
            last: AtomicU64::new(0),
        })
        .envs(&replay.env)
        // No sockets, by construction: `wasi:sockets` is linked (components built for WASI
        // import it) but refuses to make a TCP or UDP socket or to look a name up; outbound
        // HTTP goes through `wasi:http` and the environment's allow-list.
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }));
        // Randomness replays by construction: every generator is seeded from the run's seed.
        {
            use rand_wasi::SeedableRng;
            let seeded = |salt: u64| rand_wasi::rngs::StdRng::seed_from_u64(replay.seed ^ salt);
            wasi.secure_random(seeded(0x5ec0_0000_0000_0001))
                .insecure_random(seeded(0x1a5e_0000_0000_0002))
                .insecure_random_seed(u128::from(replay.seed) << 64 | u128::from(!replay.seed));
        }
        let http_hooks = http::KilnHttpHooks::new(
            replay.http,
            journal.clone(),
            logs.clone(),
            replay.services.clone(),
        );
        // Every execution starts from an empty scratch directory: a replay writes again what the
        // run wrote before its checkpoint, so the guest finds it as it was.
        let scratch_quota = match &replay.scratch {
            Some(scratch) => {
                let made = wasi
                    .preopened_dir(&scratch.dir, "/tmp", wasmtime_wasi::FsPerms::ReadWrite)
                    .map(|_| ());
                match made {
                    Ok(()) => Some(Arc::new(scratch::ScratchQuota::new(
                        scratch.quota_bytes,
                        logs.clone(),
                    ))),
                    Err(e) => {
                        logs.lock().unwrap_or_else(|e| e.into_inner()).push(
                            LogLevel::Error,
                            format!(
                                "the scratch directory could not be made, so /tmp is missing: {e:#}"
                            ),
                            None,
                        );
                        None
                    }
                }
            }
            None => None,
        };
        let state = HostState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            http: wasmtime_wasi_http::WasiHttpCtx::new(),
            http_hooks,
            scratch_quota,
            file_ids: Default::default(),
            logs,
            limiter: MemoryLimiter::new(
                usize::try_from(memory).unwrap_or(usize::MAX),
                activity.clone(),
            ),
            activity,
            cancel,
            deadline,
            stop: Arc::new(AtomicU8::new(STOP_NONE)),
            journal,
            clock: replay.clock,
            wait_threshold: replay.wait_threshold,
            services: replay.services,
            _live: {
                self.inner.live.fetch_add(1, Ordering::Relaxed);
                Live(self.inner.live.clone())
            },
        };
        let mut store = Store::new(engine, state);
        store.limiter(|s| &mut s.limiter);
        // Fuel cannot fail to be set when fuel is enabled, which `Sandbox::new` does.
        let _ = store.set_fuel(fuel);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|ctx| {
            let state = ctx.data();
            if state.cancel.is_canceled() {
                state.stop.store(STOP_CANCELED, Ordering::Relaxed);
                return Ok(UpdateDeadline::Interrupt);
            }
            if state.deadline.is_some_and(|d| Instant::now() >= d) {
                state.stop.store(STOP_TIMEOUT, Ordering::Relaxed);
                return Ok(UpdateDeadline::Interrupt);
            }
            // Yield each tick so a CPU-bound guest never holds up the runtime's other work.
            Ok(UpdateDeadline::Yield(1))
        });
        store
    }

    /// Calls `definitions()` in a fresh instance with deploy-time limits.
    pub async fn definitions(
        &self,
        prepared: &Prepared,
    ) -> Result<Vec<DeclaredTask>, GuestFailure> {
        let mut store = self.new_store(
            prepared.engine(),
            Budget {
                memory: DEFINITIONS_MEMORY,
                fuel: DEFINITIONS_FUEL,
                deadline: Some(Instant::now() + DEFINITIONS_TIMEOUT),
            },
            CancelHandle::default(),
            0,
            Replay::fresh(),
        );
        let result = async {
            let task = prepared.pre.instantiate_async(&mut store).await?;
            task.call_definitions(&mut store).await
        }
        .await;
        match result {
            Ok(defs) => Ok(defs.into_iter().map(declared).collect()),
            Err(e) => Err(classify(&store, &e)),
        }
    }

    /// Executes one attempt of `run` in a fresh instance.
    pub async fn run(&self, prepared: &Prepared, req: AttemptRequest) -> AttemptReport {
        let machine = req.context.machine;
        let fuel = req.fuel;
        // Held until the execution ends (then emptied and given back).
        let lease = match (self.inner.scratch.get(), req.scratch_bytes) {
            (Some(pool), Some(quota)) => match pool.lend() {
                Ok(lease) => Some((lease, quota)),
                Err(e) => {
                    tracing::error!(error = %e, "no scratch directory for this execution");
                    None
                }
            },
            _ => None,
        };
        let started = Instant::now();
        let deadline = req.max_duration.map(|d| started + d);
        let mut store = self.new_store(
            prepared.engine(),
            Budget {
                memory: machine.memory_bytes(),
                fuel,
                deadline,
            },
            req.cancel,
            req.context.attempt,
            Replay {
                journal: req.journal,
                seed: req.seed,
                clock: req.clock,
                wait_threshold: req.wait_threshold,
                services: Some(req.services),
                env: req.env,
                http: req.http,
                scratch: lease.as_ref().map(|(lease, quota)| Scratch {
                    dir: lease.dir.clone(),
                    quota_bytes: *quota,
                }),
            },
        );
        let ctx = wit_context(&req.context);
        let task_id = req.context.task_id.clone();
        let (cancel, stop) = (store.data().cancel.clone(), store.data().stop.clone());
        let result = {
            let run = std::pin::pin!(async {
                let task = prepared.pre.instantiate_async(&mut store).await?;
                task.call_run(&mut store, &task_id, &req.payload, &ctx)
                    .await
            });
            unless_canceled(run, &cancel, &stop).await
        };
        let compute = started.elapsed();
        let fuel_used = fuel.saturating_sub(store.get_fuel().unwrap_or(0));
        let unfinished = store.data().journal().unfinished();
        let outcome = match result {
            // A guest that ended out of step with its journal diverged, whatever it returned.
            Ok(_) if unfinished.is_some() => {
                let d = unfinished.unwrap_or_else(|| Divergence(String::new()));
                AttemptOutcome::Failed(nondeterministic(&d))
            }
            Ok(Ok(output)) => check_output(output),
            Ok(Err(error)) => {
                let (abort, info) = match error {
                    wit::TaskError::Error(info) => (false, info),
                    wit::TaskError::Abort(info) => (true, info),
                };
                AttemptOutcome::TaskError {
                    abort,
                    name: info.name,
                    message: info.message,
                    stack: info.stack,
                }
            }
            Err(e) => match e.downcast_ref::<Suspend>() {
                Some(s) => match store.data().journal().take_recorded() {
                    Ok(recorded) => AttemptOutcome::Suspended {
                        wait: s.wait.clone(),
                        recorded,
                    },
                    Err(message) => AttemptOutcome::Failed(GuestFailure {
                        kind: TrapKind::Crash,
                        message,
                        stack: None,
                    }),
                },
                None => AttemptOutcome::Failed(classify(&store, &e)),
            },
        };
        let logs = store
            .data()
            .logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        AttemptReport {
            outcome,
            fuel_used,
            compute,
            logs,
        }
    }
}

fn check_output(output: String) -> AttemptOutcome {
    if output.len() > MAX_OUTPUT_BYTES {
        return AttemptOutcome::InvalidOutput(format!(
            "the task returned {} bytes of output; the limit is {MAX_OUTPUT_BYTES} bytes",
            output.len()
        ));
    }
    match serde_json::from_str::<serde::de::IgnoredAny>(&output) {
        Ok(_) => AttemptOutcome::Output(output),
        Err(e) => {
            AttemptOutcome::InvalidOutput(format!("the task returned output that is not JSON: {e}"))
        }
    }
}

fn declared(t: wit::TaskDefinition) -> DeclaredTask {
    DeclaredTask {
        id: t.id,
        description: t.description,
        queue_name: t.queue.as_ref().map(|q| q.name.clone()),
        queue_concurrency_limit: t.queue.and_then(|q| q.concurrency_limit),
        retry: t.retry.map(|r| DeclaredRetry {
            max_attempts: r.max_attempts,
            factor: r.factor,
            min_timeout_ms: r.min_timeout_ms,
            max_timeout_ms: r.max_timeout_ms,
            randomize: r.randomize,
            out_of_memory_machine: r.out_of_memory_machine,
        }),
        max_duration_ms: t.max_duration_ms,
        ttl_ms: t.ttl_ms,
        machine: t.machine,
        schedule: t.schedule.map(|s| DeclaredSchedule {
            cron: s.cron,
            timezone: s.timezone,
        }),
    }
}

pub(super) fn wit_context(c: &RunContext) -> wit::RunContext {
    wit::RunContext {
        run_id: c.run_id.clone(),
        task_id: c.task_id.clone(),
        attempt: c.attempt,
        version: c.version.clone(),
        environment: c.environment.clone(),
        tags: c.tags.clone(),
        idempotency_key: c.idempotency_key.clone(),
        queue: c.queue.clone(),
        machine: c.machine.as_str().to_owned(),
        parent_run_id: c.parent_run_id.clone(),
        root_run_id: c.root_run_id.clone(),
        created_at_ms: c.created_at_ms,
    }
}
