//! Tenants: an environment of a project, and the limits an admin may set for it.

/// One environment of one project; every run, deployment and key belongs to exactly one.
#[derive(Debug, Clone, PartialEq)]
pub struct Environment {
    pub id: String,
    pub project_slug: String,
    pub slug: String,
    /// Limits set for this environment (`None`: the host's).
    pub limits: EnvironmentLimits,
}

/// Per-environment limits an admin may set below the host's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EnvironmentLimits {
    /// Largest component upload, in bytes.
    pub max_component_bytes: Option<u64>,
    /// Largest trigger payload, in bytes.
    pub max_payload_bytes: Option<u64>,
}
