//! A run's scratch directory, preopened as `/tmp`, with a size quota.
//!
//! Directories come from a pool under `<data-dir>/scratch` and are lent to one execution at a
//! time: empty when lent, emptied when given back. Between executions a run keeps nothing on disk —
//! a run resumed after a wait replays what it did before, its writes included, so it finds `/tmp`
//! as it left it (and a write is never done twice). A run that does not touch `/tmp` costs no
//! file-system writes at all (making and removing a directory per run would add metadata writes
//! to every fsync of the database on the same disk).
//!
//! wasmtime-wasi has no quota of its own, so the four `wasi:filesystem/types` functions that can
//! make files bigger — `descriptor.write`, `write-via-stream`, `append-via-stream` and `set-size` —
//! are shadowed by versions that count bytes against the run's quota before they delegate to
//! wasmtime-wasi; the streams they hand out count each write. Past the quota the write fails with
//! "no space left" (`insufficient-space` for the guest) and the run's log says why. Paths cannot
//! leave the directory: wasmtime-wasi resolves every path beneath its preopen (`openat2` with
//! `RESOLVE_BENEATH` on Linux), which refuses `..`, absolute paths and symlinks that lead out.
//!
//! The count is of bytes written (an overwrite counts again), which errs on the safe side.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::filesystem::{Descriptor, WasiFilesystemCtxView};
use wasmtime_wasi::p2::bindings::filesystem::types::{self as fs, ErrorCode, HostDescriptor};
use wasmtime_wasi::p2::{
    DynOutputStream, FsError, OutputStream, Pollable, StreamError, StreamResult,
};

use super::HostState;
use super::output::LogBuffer;
use crate::model::LogLevel;

/// Scratch directories to lend, under one root.
pub(super) struct ScratchPool {
    root: PathBuf,
    free: Mutex<Vec<PathBuf>>,
    made: AtomicU64,
}

impl ScratchPool {
    /// Empties `root` (what a stopped host left there belongs to no execution) and makes it.
    pub(super) fn new(root: &Path) -> std::io::Result<ScratchPool> {
        match std::fs::remove_dir_all(root) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::fs::create_dir_all(root)?;
        Ok(ScratchPool {
            root: root.to_path_buf(),
            free: Mutex::new(Vec::new()),
            made: AtomicU64::new(0),
        })
    }

    /// An empty directory for one execution.
    pub(super) fn lend(self: &Arc<Self>) -> std::io::Result<ScratchLease> {
        let free = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let dir = match free {
            Some(dir) => dir,
            None => {
                let n = self.made.fetch_add(1, Ordering::Relaxed);
                let dir = self.root.join(format!("slot-{n}"));
                std::fs::create_dir(&dir)?;
                dir
            }
        };
        Ok(ScratchLease {
            dir,
            pool: self.clone(),
        })
    }
}

/// A scratch directory lent to one execution; emptied and given back when dropped.
pub(super) struct ScratchLease {
    pub(super) dir: PathBuf,
    pool: Arc<ScratchPool>,
}

impl Drop for ScratchLease {
    fn drop(&mut self) {
        let dir = std::mem::take(&mut self.dir);
        let pool = self.pool.clone();
        let used = std::fs::read_dir(&dir).map_or(true, |mut d| d.next().is_some());
        if !used {
            pool.free
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(dir);
            return;
        }
        let give_back = move || {
            let clean = std::fs::remove_dir_all(&dir).is_ok() && std::fs::create_dir(&dir).is_ok();
            if clean {
                pool.free
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(dir);
            } else {
                tracing::warn!(dir = %dir.display(), "a scratch directory could not be emptied; it is left out of the pool");
            }
        };
        // Emptying what a guest wrote (up to its quota) is file-system work for the blocking
        // pool, not for the async thread that ran the attempt.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(give_back)),
            Err(_) => give_back(),
        }
    }
}

/// The interface whose writes are counted (the version wasmtime-wasi 48 registers).
pub(super) const FILESYSTEM_TYPES: &str = "wasi:filesystem/types@0.2.12";

/// Bytes a run's scratch directory may take in all, and what it has taken.
pub struct ScratchQuota {
    limit: u64,
    used: AtomicU64,
    /// Whether the log already says the quota was reached (said once per execution).
    reported: AtomicBool,
    logs: Arc<Mutex<LogBuffer>>,
}

impl ScratchQuota {
    pub(super) fn new(limit: u64, logs: Arc<Mutex<LogBuffer>>) -> ScratchQuota {
        ScratchQuota {
            limit,
            used: AtomicU64::new(0),
            reported: AtomicBool::new(false),
            logs,
        }
    }

    /// Takes `n` bytes of the quota, or refuses (and says so in the run's log, once).
    fn reserve(&self, n: u64) -> bool {
        let taken = self
            .used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                used.checked_add(n).filter(|total| *total <= self.limit)
            })
            .is_ok();
        if !taken && !self.reported.swap(true, Ordering::SeqCst) {
            self.logs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(
                    LogLevel::Error,
                    format!(
                        "the scratch directory /tmp is full: the run's machine allows {} bytes of writes there; a larger machine allows more",
                        self.limit
                    ),
                    None,
                );
        }
        taken
    }

    /// Gives back bytes a write took but did not use.
    fn release(&self, n: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                Some(used.saturating_sub(n))
            });
    }
}

fn no_space() -> std::io::Error {
    std::io::Error::from_raw_os_error(28) // ENOSPC
}

/// A stream into a file of the scratch directory that counts its writes.
struct CountedStream {
    inner: DynOutputStream,
    quota: Arc<ScratchQuota>,
}

#[wasmtime_wasi::async_trait]
impl Pollable for CountedStream {
    async fn ready(&mut self) {
        self.inner.ready().await
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for CountedStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        if !self.quota.reserve(bytes.len() as u64) {
            return Err(StreamError::LastOperationFailed(no_space().into()));
        }
        self.inner.write(bytes)
    }

    fn flush(&mut self) -> StreamResult<()> {
        self.inner.flush()
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        self.inner.check_write()
    }

    async fn cancel(&mut self) {
        self.inner.cancel().await
    }
}

fn view(state: &mut HostState) -> (WasiFilesystemCtxView<'_>, Option<Arc<ScratchQuota>>) {
    // A write is the guest going on (after a denied memory growth, say).
    state.activity.touch();
    let quota = state.scratch_quota.clone();
    (
        WasiFilesystemCtxView {
            ctx: state.wasi.filesystem(),
            table: &mut state.table,
        },
        quota,
    )
}

/// An `FsError` as the guest's `error-code` (a trap stays a trap).
fn code(view: &mut WasiFilesystemCtxView<'_>, e: FsError) -> wasmtime::Result<ErrorCode> {
    fs::Host::convert_error_code(view, e)
}

/// Wraps the stream a write-via-stream or append-via-stream made.
fn counted(
    view: &mut WasiFilesystemCtxView<'_>,
    quota: Option<Arc<ScratchQuota>>,
    made: Result<Resource<DynOutputStream>, FsError>,
) -> wasmtime::Result<Result<Resource<DynOutputStream>, ErrorCode>> {
    let stream = match made {
        Ok(stream) => stream,
        Err(e) => return Ok(Err(code(view, e)?)),
    };
    let Some(quota) = quota else {
        return Ok(Ok(stream));
    };
    let inner: DynOutputStream = view.table.delete(stream)?;
    let wrapped: DynOutputStream = Box::new(CountedStream { inner, quota });
    Ok(Ok(view.table.push(wrapped)?))
}

/// Shadows the writing functions of `wasi:filesystem/types` with counted ones.
pub(super) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut types = linker.instance(FILESYSTEM_TYPES)?;
    types.func_wrap_async(
        "[method]descriptor.write",
        |mut store, (fd, buffer, offset): (Resource<Descriptor>, Vec<u8>, u64)| {
            Box::new(async move {
                let (mut view, quota) = view(store.data_mut());
                let len = buffer.len() as u64;
                if let Some(q) = &quota
                    && !q.reserve(len)
                {
                    return Ok((Err(ErrorCode::InsufficientSpace),));
                }
                match HostDescriptor::write(&mut view, fd, buffer, offset).await {
                    Ok(written) => {
                        if let Some(q) = &quota {
                            q.release(len.saturating_sub(written));
                        }
                        Ok((Ok(written),))
                    }
                    Err(e) => {
                        if let Some(q) = &quota {
                            q.release(len);
                        }
                        Ok((Err(code(&mut view, e)?),))
                    }
                }
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.set-size",
        |mut store, (fd, size): (Resource<Descriptor>, u64)| {
            Box::new(async move {
                let (mut view, quota) = view(store.data_mut());
                if let Some(q) = &quota {
                    // Growing a file takes the quota for the bytes it adds.
                    let current = match view.table.get(&fd)? {
                        Descriptor::File(f) => f.file.metadata().map(|m| m.len()).unwrap_or(0),
                        Descriptor::Dir(_) => size,
                    };
                    if size > current && !q.reserve(size - current) {
                        return Ok((Err(ErrorCode::InsufficientSpace),));
                    }
                }
                match HostDescriptor::set_size(&mut view, fd, size).await {
                    Ok(()) => Ok((Ok(()),)),
                    Err(e) => Ok((Err(code(&mut view, e)?),)),
                }
            })
        },
    )?;
    types.func_wrap(
        "[method]descriptor.write-via-stream",
        |mut store, (fd, offset): (Resource<Descriptor>, u64)| {
            let (mut view, quota) = view(store.data_mut());
            let made = HostDescriptor::write_via_stream(&mut view, fd, offset);
            Ok((counted(&mut view, quota, made)?,))
        },
    )?;
    types.func_wrap(
        "[method]descriptor.append-via-stream",
        |mut store, (fd,): (Resource<Descriptor>,)| {
            let (mut view, quota) = view(store.data_mut());
            let made = HostDescriptor::append_via_stream(&mut view, fd);
            Ok((counted(&mut view, quota, made)?,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}
