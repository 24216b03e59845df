//! Turning an upload into a runnable component: the checks of the bytes, compilation, linking
//! against kiln's host imports (with a readable message for a missing import), and compiled
//! artifacts written to and loaded from the host's data dir.
//!
//! An upload that cannot run comes back as a [`CompileError`], never a panic. The one `unsafe` of
//! the crate is here, in [`Sandbox::load_artifact`]: nothing but files this host wrote may be
//! loaded that way.

use std::sync::atomic::Ordering;

use wasmtime::component::{Component, types::ComponentItem};

use super::{HostState, Sandbox, bindings};

/// A compiled, linked component, ready to instantiate.
#[derive(Clone)]
pub struct Prepared {
    pub(super) pre: bindings::TaskPre<HostState>,
    component: Component,
    /// Compiled by Cranelift (the code runs at full speed and can be saved as an artifact);
    /// false for the quick tier's.
    optimized: bool,
}

impl Prepared {
    /// Whether this is the optimizing compiler's code (else the quick tier's, to be replaced).
    pub fn is_optimized(&self) -> bool {
        self.optimized
    }

    /// The engine the component was compiled for; its stores must be of it.
    pub(super) fn engine(&self) -> &wasmtime::Engine {
        self.component.engine()
    }

    /// Bytes of machine code the compiled component holds in memory.
    pub fn code_bytes(&self) -> usize {
        let range = self.component.image_range();
        (range.end as usize).saturating_sub(range.start as usize)
    }
}

/// Why an upload could not become a runnable component.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error(
        "the upload is not WebAssembly (it does not start with the `\\0asm` magic bytes); upload the `.wasm` file your build produced"
    )]
    NotWasm,
    #[error(
        "the upload is a core WebAssembly module, not a component; build it with `cargo build --target wasm32-wasip2` (or wrap a core module with `wasm-tools component new`)"
    )]
    CoreModule,
    #[error("the component is invalid: {0}")]
    Invalid(String),
    #[error(
        "the component does not export {missing}; build it against kiln's `kiln:task/task` world (the Rust SDK's `kiln_sdk::tasks!` does this)"
    )]
    MissingExports { missing: String },
    #[error(
        "the component imports {detail}, which kiln does not provide; kiln provides the `kiln:task` interfaces, the WASI 0.2 interfaces (a scratch `/tmp` as the only directory; `wasi:sockets` linked but refusing every socket and name lookup) and `wasi:http/outgoing-handler`"
    )]
    UnsupportedImport { detail: String },
}

/// That an upload starts as a component does (the wasm magic and a component's version), which
/// costs nothing to check before compiling it.
pub fn check_header(bytes: &[u8]) -> Result<(), CompileError> {
    const MAGIC: &[u8; 4] = b"\0asm";
    const CORE_VERSION: [u8; 4] = [1, 0, 0, 0];
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        return Err(CompileError::NotWasm);
    }
    if bytes[4..8] == CORE_VERSION {
        return Err(CompileError::CoreModule);
    }
    Ok(())
}

impl Sandbox {
    /// Compiles and links an upload with the optimizing compiler. CPU-heavy: runs on the
    /// blocking pool.
    pub async fn compile(&self, bytes: Vec<u8>) -> Result<Prepared, CompileError> {
        self.compile_with(bytes, false).await
    }

    /// Compiles and links an upload with the quick tier (Winch: about 8× faster, code 1.4–2.8×
    /// slower), or the optimizing compiler when the sandbox has no quick tier.
    pub async fn compile_quick(&self, bytes: Vec<u8>) -> Result<Prepared, CompileError> {
        self.compile_with(bytes, true).await
    }

    async fn compile_with(&self, bytes: Vec<u8>, quick: bool) -> Result<Prepared, CompileError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.compile_blocking(&bytes, quick))
            .await
            .map_err(|e| CompileError::Invalid(format!("compilation stopped: {e}")))?
    }

    fn compile_blocking(&self, bytes: &[u8], quick: bool) -> Result<Prepared, CompileError> {
        check_header(bytes)?;
        let (engine, linker, optimized) = match (&self.inner.quick, quick) {
            (Some(tier), true) => (&tier.engine, &tier.linker, false),
            _ => (&self.inner.engine, &self.inner.linker, true),
        };
        self.inner.compilations.fetch_add(1, Ordering::Relaxed);
        let component =
            Component::new(engine, bytes).map_err(|e| CompileError::Invalid(format!("{e:#}")))?;
        link(component, engine, linker, optimized)
    }

    /// The compiled machine code of a component, to be loaded later with
    /// [`Sandbox::load_artifact`]; only the optimizing compiler's is worth keeping.
    pub fn artifact(&self, prepared: &Prepared) -> anyhow::Result<Vec<u8>> {
        anyhow::ensure!(
            prepared.optimized,
            "the quick tier's code is not kept as an artifact"
        );
        Ok(prepared.component.serialize()?)
    }

    /// Loads an artifact written by [`Sandbox::artifact`] from the host's own data dir.
    pub fn load_artifact(&self, path: &std::path::Path) -> Result<Prepared, CompileError> {
        // Read, not mapped: a mapped file changed under the host (an operator's copy over it)
        // would fault the process the next time a page of it is touched.
        let bytes = std::fs::read(path).map_err(|e| {
            CompileError::Invalid(format!("cannot read the compiled artifact: {e}"))
        })?;
        // SAFETY: `deserialize` trusts the bytes to be machine code wasmtime produced for a
        // compatible engine. kiln only passes files it wrote itself, into its own data dir, named
        // by the component digest and this engine's fingerprint; they never come from a client.
        #[allow(unsafe_code)]
        let component =
            unsafe { Component::deserialize(&self.inner.engine, &bytes) }.map_err(|e| {
                CompileError::Invalid(format!("cannot load the compiled artifact: {e:#}"))
            })?;
        link(component, &self.inner.engine, &self.inner.linker, true)
    }
}

/// Checks exports and imports and links the component against kiln's host interfaces.
fn link(
    component: Component,
    engine: &wasmtime::Engine,
    linker: &wasmtime::component::Linker<HostState>,
    optimized: bool,
) -> Result<Prepared, CompileError> {
    {
        let ty = component.component_type();
        let exported: Vec<String> = ty
            .exports(engine)
            .filter(|(_, item)| matches!(item.ty, ComponentItem::ComponentFunc(_)))
            .map(|(name, _)| name.to_owned())
            .collect();
        let missing: Vec<String> = ["definitions", "run"]
            .into_iter()
            .filter(|f| !exported.iter().any(|e| e == f))
            .map(|f| format!("`{f}`"))
            .collect();
        if !missing.is_empty() {
            return Err(CompileError::MissingExports {
                missing: missing.join(" and "),
            });
        }
        let instance_pre =
            linker
                .instantiate_pre(&component)
                .map_err(|e| CompileError::UnsupportedImport {
                    detail: describe_link_error(&e),
                })?;
        let pre = bindings::TaskPre::new(instance_pre).map_err(|e| {
            CompileError::Invalid(format!("exports do not match kiln:task/task: {e:#}"))
        })?;
        Ok(Prepared {
            pre,
            component,
            optimized,
        })
    }
}

/// wasmtime names the missing import in its link error; keep that part, drop the rest.
fn describe_link_error(error: &wasmtime::Error) -> String {
    let text = format!("{error:#}");
    match text.split_once("component imports ") {
        Some((_, rest)) => rest.split(", but").next().unwrap_or(rest).trim().to_owned(),
        None => text,
    }
}
