//! What one `kiln bench` run reports: `Results` (written as JSON), the machine it ran on, and the
//! table of `Row`s every scenario contributes, rendered as text. It measures nothing itself.

use serde::Serialize;

use super::{
    BackendsReport, ColdStartReport, LanguagesReport, LatencyReport, QueueScaleReport,
    SandboxReport, ThroughputReport, WaitsReport,
};

/// Everything one `kiln bench` run measured.
#[derive(Debug, Serialize)]
pub struct Results {
    pub kiln_version: &'static str,
    /// The store's durability setting, which every figure was measured with.
    pub durability: &'static str,
    /// `release` or `debug` (whose numbers mean nothing).
    pub build: &'static str,
    pub date: String,
    pub machine: MachineInfo,
    pub command: String,
    pub throughput: Option<ThroughputReport>,
    pub latency: Option<LatencyReport>,
    pub sandbox: Option<SandboxReport>,
    pub cold_start: Option<ColdStartReport>,
    pub queue: Option<QueueScaleReport>,
    pub waits: Option<WaitsReport>,
    pub languages: Option<LanguagesReport>,
    pub backends: Option<BackendsReport>,
    /// The printed table.
    pub rows: Vec<Row>,
}

/// The machine the numbers come from.
#[derive(Debug, Serialize)]
pub struct MachineInfo {
    pub cpus: usize,
    pub cpu_model: String,
    pub os: &'static str,
}

impl MachineInfo {
    pub(super) fn here() -> MachineInfo {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, model)| model.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        MachineInfo {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            os: std::env::consts::OS,
        }
    }
}

/// One line of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub scenario: &'static str,
    pub metric: String,
    pub kiln: String,
    pub baseline: String,
    /// kiln ÷ baseline, where there is a baseline.
    pub ratio: Option<f64>,
    pub target: String,
    /// `Some(true)` when a target exists and is met (all of its parts).
    pub met: Option<bool>,
    /// `met` in words, naming the part missed when a target has several.
    pub verdict: String,
}

impl Row {
    pub(super) fn new(
        scenario: &'static str,
        metric: impl Into<String>,
        kiln: impl Into<String>,
    ) -> Row {
        Row {
            scenario,
            metric: metric.into(),
            kiln: kiln.into(),
            baseline: String::new(),
            ratio: None,
            target: String::new(),
            met: None,
            verdict: String::new(),
        }
    }

    pub(super) fn baseline(mut self, baseline: impl Into<String>, ratio: f64) -> Row {
        self.baseline = baseline.into();
        self.ratio = Some(ratio);
        self
    }

    /// A baseline to show without a ratio (the ratio is on another row).
    pub(super) fn baseline_only(mut self, baseline: impl Into<String>) -> Row {
        self.baseline = baseline.into();
        self
    }

    pub(super) fn target(mut self, target: impl Into<String>, met: bool) -> Row {
        self.target = target.into();
        self.met = Some(met);
        self.verdict = if met { "met" } else { "MISSED" }.into();
        self
    }

    /// A target of named parts, each met or not.
    pub(super) fn targets(mut self, parts: &[(String, bool)]) -> Row {
        let text =
            |f: fn(&(String, bool)) -> String| parts.iter().map(f).collect::<Vec<_>>().join(", ");
        self.target = text(|(t, _)| t.clone());
        self.met = Some(parts.iter().all(|(_, met)| *met));
        self.verdict = if self.met == Some(true) {
            "met".into()
        } else {
            text(|(t, met)| {
                let part = t.split_whitespace().next().unwrap_or_default();
                format!("{part} {}", if *met { "met" } else { "MISSED" })
            })
        };
        self
    }
}

pub(super) fn render(results: &Results) -> String {
    let m = &results.machine;
    let mut out = format!(
        "kiln {} ({} build) · {} · {} CPUs, {} · {} · {}\n\n",
        results.kiln_version,
        results.build,
        results.date,
        m.cpus,
        m.cpu_model,
        m.os,
        results.durability
    );
    let header = [
        "scenario",
        "metric",
        "kiln",
        "baseline",
        "kiln ÷ baseline",
        "target",
        "",
    ];
    let cells: Vec<[String; 7]> = results
        .rows
        .iter()
        .map(|r| {
            [
                r.scenario.to_owned(),
                r.metric.clone(),
                r.kiln.clone(),
                r.baseline.clone(),
                r.ratio.map(|x| format!("{x:.2}×")).unwrap_or_default(),
                r.target.clone(),
                r.verdict.clone(),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            let pad = w - cell.chars().count();
            // Numbers are right-aligned, words left-aligned.
            if (2..=4).contains(&i) {
                s.push_str(&" ".repeat(pad));
                s.push_str(cell);
            } else {
                s.push_str(cell);
                s.push_str(&" ".repeat(pad));
            }
            s.push_str("  ");
        }
        format!("{}\n", s.trim_end())
    };
    out.push_str(&line(&header.map(str::to_owned)));
    out.push_str(&line(&widths.map(|w| "─".repeat(w))));
    for row in &cells {
        out.push_str(&line(row));
    }
    out
}
