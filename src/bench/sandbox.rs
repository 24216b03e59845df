//! The sandbox scenario: what metering costs, as the `hash` task's time through the bare path
//! with fuel and epoch interruption each on and off.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::bail;
use serde::Serialize;

use super::report::Row;
use super::util::{median, ms, read_guest};
use crate::sandbox::baseline::Metering;
use crate::sandbox::{Sandbox, SandboxConfig};

/// The targets from the performance issue.
const TARGET_METERING_RATIO: f64 = 1.15;

/// Configuration of the sandbox scenario.
#[derive(Debug, Clone)]
pub struct SandboxBenchConfig {
    /// Calls of each variant; the median is reported.
    pub repeat: usize,
    /// MiB the `hash` task hashes.
    pub mb: u32,
    pub bench_wasm: PathBuf,
}

/// Median time of one `hash` call per metering variant.
#[derive(Debug, Clone, Serialize)]
pub struct SandboxReport {
    pub mb: u32,
    pub repeat: usize,
    /// Fuel and epochs on: what the host runs with.
    pub host_ms: f64,
    pub fuel_only_ms: f64,
    pub epochs_only_ms: f64,
    pub unmetered_ms: f64,
    /// host ÷ unmetered: what metering costs in all.
    pub metering_ratio: f64,
    /// host ÷ epochs only: what fuel adds.
    pub fuel_ratio: f64,
    /// host ÷ fuel only: what epochs add.
    pub epoch_ratio: f64,
}

impl SandboxReport {
    pub(super) fn rows(&self) -> Vec<Row> {
        let what = format!("hash {} MiB (ms)", self.mb);
        vec![
            Row::new(
                "sandbox",
                format!("{what}: fuel+epochs vs none"),
                format!("{:.1}", self.host_ms),
            )
            .baseline(format!("{:.1}", self.unmetered_ms), self.metering_ratio)
            .target(
                format!("≤ {TARGET_METERING_RATIO}×"),
                self.metering_ratio <= TARGET_METERING_RATIO,
            ),
            Row::new(
                "sandbox",
                format!("{what}: fuel+epochs vs epochs only"),
                format!("{:.1}", self.host_ms),
            )
            .baseline(format!("{:.1}", self.epochs_only_ms), self.fuel_ratio),
            Row::new(
                "sandbox",
                format!("{what}: fuel+epochs vs fuel only"),
                format!("{:.1}", self.host_ms),
            )
            .baseline(format!("{:.1}", self.fuel_only_ms), self.epoch_ratio),
        ]
    }
}

/// The `hash` task through the bare path in four sandboxes: fuel and epochs each on or off.
/// The variants take turns, so drift in the machine's speed spreads over all of them.
pub async fn sandbox(config: &SandboxBenchConfig) -> anyhow::Result<SandboxReport> {
    let bytes = read_guest(&config.bench_wasm)?;
    let payload = format!("{{\"mb\":{}}}", config.mb);
    let variants = [
        Metering::HOST,
        Metering {
            fuel: true,
            epochs: false,
        },
        Metering {
            fuel: false,
            epochs: true,
        },
        Metering {
            fuel: false,
            epochs: false,
        },
    ];
    let mut prepared = Vec::new();
    let mut expected: Option<String> = None;
    for metering in variants {
        let sandbox = Sandbox::with_metering(&SandboxConfig::new(1), metering)?;
        let p = sandbox.compile(bytes.clone()).await?;
        // Warm-up, and a check that every variant computes the same thing.
        let output = sandbox.bare_call(&p, "hash", &payload).await?;
        match &expected {
            None => expected = Some(output),
            Some(e) if *e != output => {
                bail!("sandboxes disagree on the hash: {e} vs {output} ({metering:?})")
            }
            Some(_) => {}
        }
        prepared.push((sandbox, p));
    }
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for round in 0..config.repeat.max(1) {
        for k in 0..variants.len() {
            let i = (round + k) % variants.len();
            let (sandbox, p) = &prepared[i];
            let started = Instant::now();
            sandbox.bare_call(p, "hash", &payload).await?;
            times[i].push(ms(started.elapsed()));
        }
    }
    let [host, fuel_only, epochs_only, unmetered] =
        [0, 1, 2, 3].map(|i| median(std::mem::take(&mut times[i])));
    Ok(SandboxReport {
        mb: config.mb,
        repeat: config.repeat.max(1),
        host_ms: host,
        fuel_only_ms: fuel_only,
        epochs_only_ms: epochs_only,
        unmetered_ms: unmetered,
        metering_ratio: host / unmetered,
        fuel_ratio: host / epochs_only,
        epoch_ratio: host / fuel_only,
    })
}
