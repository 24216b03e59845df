//! File times and identities in the scratch directory as a replay must see them: the times
//! `stat` and `stat-at` answer are journaled and follow the run's clock, and `metadata-hash`
//! answers identities that do not depend on inode numbers.
//!
//! A resumed run starts from an empty `/tmp` and writes again what it wrote before its
//! checkpoint, so the host's own answers would differ on replay: the files' times are those of
//! the rewrite, and their inodes are new. So these four functions of `wasi:filesystem/types` are
//! shadowed in the linker (as `scratch` shadows the growing ones) and delegate to wasmtime-wasi:
//! - `stat` / `stat-at`: the three timestamps are journaled (`Kind::FileTimes`), so a replay
//!   answers the times the first execution read. Answered live, they are moved onto the run's
//!   clock — the host's time plus the difference between the run's clock and the host's, when
//!   it is a second or more (a clock set by hand; none with the system clock) — so they agree
//!   with the guest's wall clock. Everything else `stat` says (type, size, links) is the file
//!   system's own, which the replay rebuilds alike.
//! - `metadata-hash` / `metadata-hash-at`: each distinct file gets a number in the order the
//!   execution first asks about it; the guest asks in the same order on every replay, so the same
//!   file has the same identity before and after a checkpoint.
//!
//! What is still not replayed: after a resume, a file written before the checkpoint carries the
//! time the replay rewrote it (a read before the checkpoint is answered from the journal; a read
//! after it is a new, live reading); an inode number reused by the file system within one
//! execution (a file removed and another made) may give the new file the old one's identity in
//! one execution and not in another; and past [`MAX_FILE_IDS`] distinct files an execution
//! answers the file system's own identities.
//!
//! Nothing here fails the guest on the host's account: a time that does not fit is left as the
//! file system gave it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::filesystem::{Descriptor, WasiFilesystemCtxView};
use wasmtime_wasi::p2::FsError;
use wasmtime_wasi::p2::bindings::filesystem::types::{
    self as fs, DescriptorStat, ErrorCode, HostDescriptor, MetadataHashValue, PathFlags,
};

use super::HostState;
use super::journal::values::{FileTimes, Time};
use super::journal::{Call, Format, Journal, JournalValue, Kind, calls};
use crate::model::{Clock, now_ms};

/// Most files one execution gives identities to: empty files cost no quota, so without a bound a
/// guest could grow the table without end. Past it, files get the file system's own identity.
const MAX_FILE_IDS: usize = 100_000;

/// Identities handed out by one execution, by the file system's own (device and inode).
#[derive(Debug, Default)]
pub(super) struct FileIds(HashMap<(u64, u64), u64>);

impl FileIds {
    /// The execution's identity for the file the file system calls `real`.
    fn of(&mut self, real: MetadataHashValue) -> MetadataHashValue {
        let key = (real.upper, real.lower);
        if self.0.len() >= MAX_FILE_IDS && !self.0.contains_key(&key) {
            return real;
        }
        let next = self.0.len() as u64;
        let n = *self.0.entry(key).or_insert(next);
        MetadataHashValue {
            // "kiln-id" and the number: the same for the same file, distinct for distinct ones.
            upper: 0x6b69_6c6e_2d69_6400,
            lower: n,
        }
    }
}

/// The part of the state a shadowed call needs besides the file-system view.
fn parts(
    state: &mut HostState,
) -> (
    WasiFilesystemCtxView<'_>,
    Arc<Mutex<Journal>>,
    Arc<dyn Clock>,
) {
    state.activity.touch();
    let (journal, clock) = (state.journal.clone(), state.clock.clone());
    (
        WasiFilesystemCtxView {
            ctx: state.wasi.filesystem(),
            table: &mut state.table,
        },
        journal,
        clock,
    )
}

fn code(view: &mut WasiFilesystemCtxView<'_>, e: FsError) -> wasmtime::Result<ErrorCode> {
    fs::Host::convert_error_code(view, e)
}

/// How far the run's clock is from the host's, in nanoseconds (zero below a second: the same
/// clock read twice).
fn clock_offset_ns(clock: &dyn Clock) -> i128 {
    let host = now_ms();
    let offset = i128::from(clock.now()) - i128::from(host);
    if offset.abs() < 1_000 {
        0
    } else {
        offset * 1_000_000
    }
}

fn shifted(t: Option<fs::Datetime>, offset_ns: i128) -> Option<Time> {
    let t = t?;
    let ns = i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanoseconds) + offset_ns;
    let ns = u128::try_from(ns).unwrap_or(0);
    Some(Time {
        seconds: u64::try_from(ns / 1_000_000_000).unwrap_or(u64::MAX),
        nanoseconds: (ns % 1_000_000_000) as u32,
    })
}

fn datetime(t: Option<Time>) -> Option<fs::Datetime> {
    t.map(|t| fs::Datetime {
        seconds: t.seconds,
        nanoseconds: t.nanoseconds,
    })
}

/// The stat with its times as the journal answers them (recorded if live).
fn journaled(
    journal: &Mutex<Journal>,
    clock: &dyn Clock,
    call: &impl Call,
    mut stat: DescriptorStat,
) -> DescriptorStat {
    let live = || {
        let offset = clock_offset_ns(clock);
        FileTimes {
            accessed: shifted(stat.data_access_timestamp, offset),
            modified: shifted(stat.data_modification_timestamp, offset),
            changed: shifted(stat.status_change_timestamp, offset),
        }
        .encode()
    };
    let answer =
        journal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .call(Kind::FileTimes, call, live);
    // A divergence is remembered by the journal and fails the attempt at its next wait or end.
    if let Some(times) = answer
        .ok()
        .and_then(|bytes| FileTimes::decode(Format::CURRENT, &bytes))
    {
        stat.data_access_timestamp = datetime(times.accessed);
        stat.data_modification_timestamp = datetime(times.modified);
        stat.status_change_timestamp = datetime(times.changed);
    }
    stat
}

/// Shadows `stat`, `stat-at`, `metadata-hash` and `metadata-hash-at` of `wasi:filesystem/types`.
pub(super) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut types = linker.instance(super::scratch::FILESYSTEM_TYPES)?;
    types.func_wrap_async(
        "[method]descriptor.stat",
        |mut store, (fd,): (Resource<Descriptor>,)| {
            Box::new(async move {
                let (mut view, journal, clock) = parts(store.data_mut());
                match HostDescriptor::stat(&mut view, fd).await {
                    Ok(stat) => Ok((Ok(journaled(&journal, &*clock, &calls::stat(), stat)),)),
                    Err(e) => Ok((Err(code(&mut view, e)?),)),
                }
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.stat-at",
        |mut store, (fd, flags, path): (Resource<Descriptor>, PathFlags, String)| {
            Box::new(async move {
                let (mut view, journal, clock) = parts(store.data_mut());
                let follow = flags.contains(PathFlags::SYMLINK_FOLLOW);
                match HostDescriptor::stat_at(&mut view, fd, flags, path.clone()).await {
                    Ok(stat) => {
                        let call = calls::stat_at(follow, &path);
                        Ok((Ok(journaled(&journal, &*clock, &call, stat)),))
                    }
                    Err(e) => Ok((Err(code(&mut view, e)?),)),
                }
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.metadata-hash",
        |mut store, (fd,): (Resource<Descriptor>,)| {
            Box::new(async move {
                let state = store.data_mut();
                let real = {
                    let (mut view, _, _) = parts(state);
                    match HostDescriptor::metadata_hash(&mut view, fd).await {
                        Ok(real) => Ok(real),
                        Err(e) => Err(code(&mut view, e)?),
                    }
                };
                Ok((real.map(|real| state.file_ids.of(real)),))
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.metadata-hash-at",
        |mut store, (fd, flags, path): (Resource<Descriptor>, PathFlags, String)| {
            Box::new(async move {
                let state = store.data_mut();
                let real = {
                    let (mut view, _, _) = parts(state);
                    match HostDescriptor::metadata_hash_at(&mut view, fd, flags, path).await {
                        Ok(real) => Ok(real),
                        Err(e) => Err(code(&mut view, e)?),
                    }
                };
                Ok((real.map(|real| state.file_ids.of(real)),))
            })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}
