//! The one `bindgen!` of kiln: the host side of the `kiln:task/task` world in `wit/`, which is the
//! single source of truth for host and guests. Nothing else here: no second `bindgen!` anywhere,
//! and no host logic (the interfaces are implemented in `host/`).

wasmtime::component::bindgen!({
    path: "wit",
    world: "kiln:task/task",
    imports: {
        "kiln:task/wait.for-duration": async | trappable,
        "kiln:task/wait.until": async | trappable,
        "kiln:task/wait.create-token": async | trappable,
        "kiln:task/wait.for-token": async | trappable,
        "kiln:task/tasks.batch-trigger": async | trappable,
        "kiln:task/tasks.batch-trigger-and-wait": async | trappable,
        "kiln:task/metadata.get": async | trappable,
        "kiln:task/metadata.update": async | trappable,
    },
    exports: { default: async },
});

/// The shared WIT types (`kiln:task/types`): run context, task definitions, errors.
pub(super) use self::kiln::task::types as wit;
