//! `kiln:task/metadata`: reading and changing the metadata of the run, its parent or its root.
//!
//! Reads and refusals are journaled, so a replay sees what the first execution saw; an accepted
//! change is stored by the engine together with the journal so far.

use crate::sandbox::bindings;
use crate::sandbox::bindings::kiln::task::metadata::{
    Operation as WitOperation, Target as WitTarget,
};
use crate::sandbox::classify::host_failure;
use crate::sandbox::journal::{Call, Format, JournalValue, Kind, calls};
use crate::sandbox::{HostState, MetadataChange, MetadataTarget};

impl bindings::kiln::task::metadata::Host for HostState {
    async fn get(&mut self, target: WitTarget) -> wasmtime::Result<String> {
        let target = metadata_target(target);
        let call = calls::metadata_get(target);
        let replayed = self
            .journal()
            .replayed(Kind::MetadataRead, &call)
            .map_err(wasmtime::Error::new)?;
        // Metadata reads are JSON text in every format.
        if let Some(entry) = replayed {
            return Ok(String::from_utf8_lossy(&entry.value).into_owned());
        }
        let value = match self.services.clone() {
            Some(services) => services
                .metadata(target)
                .await
                .map_err(|e| host_failure(format!("could not read metadata: {e}")))?,
            None => "{}".to_owned(),
        };
        self.journal()
            .record(Kind::MetadataRead, &call, value.clone().into_bytes());
        Ok(value)
    }

    async fn update(
        &mut self,
        target: WitTarget,
        operations: Vec<WitOperation>,
    ) -> wasmtime::Result<Result<String, String>> {
        let target = metadata_target(target);
        let changes: Vec<MetadataChange> = operations.into_iter().map(change).collect();
        let (replayed, digest) = {
            let call = calls::metadata_update(target, &changes);
            let replayed = self
                .journal()
                .replayed(Kind::MetadataWrite, &call)
                .map_err(wasmtime::Error::new)?;
            (replayed, call.digest(Format::CURRENT))
        };
        if let Some(entry) = replayed {
            return Result::<String, String>::decode(entry.format, &entry.value)
                .ok_or_else(|| host_failure("the journal's metadata entry is corrupt"));
        }
        let Some(services) = self.services.clone() else {
            return Ok(Err("metadata needs a run".into()));
        };
        let flushed = self.flush()?;
        let result = match services
            .update_metadata(target, changes, flushed.clone(), digest)
            .await
        {
            Ok(result) => result,
            Err(e) => {
                // Nothing was stored: what was flushed goes back, to be stored at the end.
                self.unflush(flushed);
                return Err(host_failure(format!("could not change metadata: {e}")));
            }
        };
        if result.is_err() {
            self.unflush(flushed);
            self.journal().record(
                Kind::MetadataWrite,
                &calls::digested(digest),
                result.encode(),
            );
        }
        Ok(result)
    }
}

fn metadata_target(t: WitTarget) -> MetadataTarget {
    match t {
        WitTarget::Current => MetadataTarget::Current,
        WitTarget::Parent => MetadataTarget::Parent,
        WitTarget::Root => MetadataTarget::Root,
    }
}

fn change(op: WitOperation) -> MetadataChange {
    match op {
        WitOperation::Set((key, v)) => MetadataChange::Set(key, v),
        WitOperation::Del(key) => MetadataChange::Delete(key),
        WitOperation::Append((key, v)) => MetadataChange::Append(key, v),
        WitOperation::Remove((key, v)) => MetadataChange::Remove(key, v),
        WitOperation::Increment((key, by)) => MetadataChange::Increment(key, by),
        WitOperation::Replace(v) => MetadataChange::Replace(v),
    }
}
