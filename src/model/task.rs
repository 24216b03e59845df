//! Tasks as components declare them: machines with their memory and fuel, retry policies, queues,
//! schedules, and the deployments that hold them.

use std::fmt;
use std::time::Duration;

use super::Millis;

/// Machine presets, with Trigger.dev's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Machine {
    Micro,
    #[default]
    Small1x,
    Small2x,
    Medium1x,
    Medium2x,
    Large1x,
    Large2x,
}

impl Machine {
    pub const ALL: [Machine; 7] = [
        Machine::Micro,
        Machine::Small1x,
        Machine::Small2x,
        Machine::Medium1x,
        Machine::Medium2x,
        Machine::Large1x,
        Machine::Large2x,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Machine::Micro => "micro",
            Machine::Small1x => "small-1x",
            Machine::Small2x => "small-2x",
            Machine::Medium1x => "medium-1x",
            Machine::Medium2x => "medium-2x",
            Machine::Large1x => "large-1x",
            Machine::Large2x => "large-2x",
        }
    }

    pub fn parse(s: &str) -> Option<Machine> {
        Machine::ALL.into_iter().find(|m| m.as_str() == s)
    }

    /// Memory a component instance may use in total on this machine: Trigger.dev's preset sizes,
    /// capped at wasm32's 4 GiB address space.
    pub fn memory_bytes(self) -> u64 {
        const MIB: u64 = 1 << 20;
        let mib = match self {
            Machine::Micro => 256,
            Machine::Small1x => 512,
            Machine::Small2x => 1024,
            Machine::Medium1x => 2048,
            Machine::Medium2x | Machine::Large1x | Machine::Large2x => 4096,
        };
        mib * MIB
    }

    /// Fuel budget of one attempt on this machine, given the budget of `small-1x`: scaled with
    /// Trigger.dev's vCPUs (micro 0.25, small-1x 0.5, small-2x and medium-1x 1, medium-2x 2,
    /// large-1x 4, large-2x 8), so a bigger machine may compute longer before a runaway loop ends
    /// as `FUEL_EXHAUSTED`.
    pub fn fuel_budget(self, small_1x: u64) -> u64 {
        let (num, den) = match self {
            Machine::Micro => (1, 2),
            Machine::Small1x => (1, 1),
            Machine::Small2x | Machine::Medium1x => (2, 1),
            Machine::Medium2x => (4, 1),
            Machine::Large1x => (8, 1),
            Machine::Large2x => (16, 1),
        };
        small_1x.saturating_mul(num) / den
    }
}

impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Retry policy of a task, every field resolved (host defaults filled in).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub factor: f64,
    pub min_timeout_ms: u64,
    pub max_timeout_ms: u64,
    pub randomize: bool,
}

impl Default for RetryPolicy {
    /// Trigger.dev's `defaultRetryOptions`.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            factor: 2.0,
            min_timeout_ms: 1_000,
            max_timeout_ms: 60_000,
            randomize: true,
        }
    }
}

/// Trigger.dev's global hard cap on attempts of one run.
pub const MAX_ATTEMPTS_CAP: u32 = 250;

/// A task as declared by a component's `definitions()`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskDefinition {
    pub id: String,
    pub description: Option<String>,
    pub queue: Option<QueueDefinition>,
    pub retry: RetryDefinition,
    pub max_duration: Option<Duration>,
    pub ttl: Option<Duration>,
    pub machine: Option<Machine>,
    /// A declarative cron schedule, validated.
    pub schedule: Option<TaskSchedule>,
}

/// A task's declarative schedule: a validated 5-field cron expression and its IANA time zone.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSchedule {
    pub cron: String,
    pub timezone: String,
}

/// Retry settings as declared: `None` fields take the host defaults.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RetryDefinition {
    pub max_attempts: Option<u32>,
    pub factor: Option<f64>,
    pub min_timeout_ms: Option<u64>,
    pub max_timeout_ms: Option<u64>,
    pub randomize: Option<bool>,
    pub out_of_memory_machine: Option<Machine>,
}

impl RetryDefinition {
    /// Fills the unset fields from `defaults`.
    pub fn resolve(&self, defaults: RetryPolicy) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.max_attempts.unwrap_or(defaults.max_attempts),
            factor: self.factor.unwrap_or(defaults.factor),
            min_timeout_ms: self.min_timeout_ms.unwrap_or(defaults.min_timeout_ms),
            max_timeout_ms: self.max_timeout_ms.unwrap_or(defaults.max_timeout_ms),
            randomize: self.randomize.unwrap_or(defaults.randomize),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct QueueDefinition {
    pub name: String,
    pub concurrency_limit: Option<u32>,
}

/// One component of a deployed version: its content digest, the file name the upload gave it
/// (when it named one), and the tasks it defines.
#[derive(Debug, Clone, PartialEq)]
pub struct DeployedComponent {
    pub digest: String,
    pub name: Option<String>,
    pub tasks: Vec<TaskDefinition>,
}

impl DeployedComponent {
    /// How messages name it: its file name, else its digest.
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.digest)
    }
}

/// A deployed version of an environment: one or more components, in upload order, that define
/// every task of the version between them (each task id in exactly one component).
#[derive(Debug, Clone, PartialEq)]
pub struct Deployment {
    pub id: String,
    pub environment_id: String,
    pub version: String,
    pub created_at: Millis,
    /// At least one.
    pub components: Vec<DeployedComponent>,
}

impl Deployment {
    /// Every task of the version, component by component.
    pub fn tasks(&self) -> impl Iterator<Item = &TaskDefinition> {
        self.components.iter().flat_map(|c| c.tasks.iter())
    }

    /// A task of the version by id.
    pub fn task(&self, id: &str) -> Option<&TaskDefinition> {
        self.tasks().find(|t| t.id == id)
    }

    /// The component that defines a task, which executes its runs.
    pub fn component_of(&self, task_id: &str) -> Option<&DeployedComponent> {
        self.components
            .iter()
            .find(|c| c.tasks.iter().any(|t| t.id == task_id))
    }

    /// The first component's digest: the version's `contentHash` (its only one, usually).
    pub fn first_digest(&self) -> &str {
        self.components.first().map_or("", |c| c.digest.as_str())
    }
}
