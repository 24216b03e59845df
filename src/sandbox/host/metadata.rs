//! `kiln:task/metadata`: reading and changing the metadata of the run, its parent or its root.
//!
//! Reads and refusals are journaled, so a replay sees what the first execution saw; an accepted
//! change is stored by the engine together with the journal so far.

use crate::sandbox::bindings;
use crate::sandbox::bindings::kiln::task::metadata::{
    Operation as WitOperation, Target as WitTarget,
};
use crate::sandbox::journal::{self, Digest, Kind};
use crate::sandbox::{HostState, MetadataChange, MetadataTarget};

impl MetadataChange {
    /// Adds the change to a call's digest (values are not copied).
    fn digest(d: Digest, change: &MetadataChange) -> Digest {
        match change {
            MetadataChange::Set(k, v) => d.part(b"set").part(k.as_bytes()).part(v.as_bytes()),
            MetadataChange::Delete(k) => d.part(b"del").part(k.as_bytes()),
            MetadataChange::Append(k, v) => d.part(b"append").part(k.as_bytes()).part(v.as_bytes()),
            MetadataChange::Remove(k, v) => d.part(b"remove").part(k.as_bytes()).part(v.as_bytes()),
            MetadataChange::Increment(k, by) => d
                .part(b"increment")
                .part(k.as_bytes())
                .part(&by.to_le_bytes()),
            MetadataChange::Replace(v) => d.part(b"replace").part(v.as_bytes()),
        }
    }
}

impl bindings::kiln::task::metadata::Host for HostState {
    async fn get(&mut self, target: WitTarget) -> wasmtime::Result<String> {
        let target = metadata_target(target);
        let digest = journal::digest(&[b"metadata.get", format!("{target:?}").as_bytes()]);
        let replayed = self
            .journal()
            .replayed(Kind::MetadataRead, digest)
            .map_err(wasmtime::Error::new)?;
        if let Some(value) = replayed {
            return Ok(String::from_utf8_lossy(&value).into_owned());
        }
        let value = match self.services.clone() {
            Some(services) => services
                .metadata(target)
                .await
                .map_err(|e| wasmtime::Error::msg(format!("could not read metadata: {e}")))?,
            None => "{}".to_owned(),
        };
        self.journal()
            .record(Kind::MetadataRead, digest, value.clone().into_bytes());
        Ok(value)
    }

    async fn update(
        &mut self,
        target: WitTarget,
        operations: Vec<WitOperation>,
    ) -> wasmtime::Result<Result<String, String>> {
        let target = metadata_target(target);
        let changes: Vec<MetadataChange> = operations.into_iter().map(change).collect();
        let digest = changes
            .iter()
            .fold(
                Digest::new().part(b"metadata.update").part(&[target as u8]),
                MetadataChange::digest,
            )
            .finish();
        let replayed = self
            .journal()
            .replayed(Kind::MetadataWrite, digest)
            .map_err(wasmtime::Error::new)?;
        if let Some(value) = replayed {
            return serde_json::from_slice(&value).map_err(|e| {
                wasmtime::Error::msg(format!("the journal's metadata entry is corrupt: {e}"))
            });
        }
        let Some(services) = self.services.clone() else {
            return Ok(Err("metadata needs a run".into()));
        };
        let flushed = self.flush()?;
        let result = services
            .update_metadata(target, changes, flushed.clone(), digest)
            .await
            .map_err(|e| wasmtime::Error::msg(format!("could not change metadata: {e}")))?;
        if result.is_err() {
            self.unflush(flushed);
            self.journal().record(
                Kind::MetadataWrite,
                digest,
                serde_json::to_vec(&result).unwrap_or_default(),
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
