//! Every journaled host call's digest, under each journal [`Format`] a replay may meet: how a
//! replay recognises that the guest made the same call with the same arguments.
//!
//! [`Format::V2`] digests the canonical encoding of `canon` (the format's number, the call's
//! name, then each argument field by field). [`Format::V1`] is what kiln wrote before journal
//! formats had numbers, kept exactly — FNV-1a over separated parts, some of them the text Rust's
//! `Debug` printed for a type — so runs checkpointed by that kiln still resume; its `Debug` text
//! is spelled out here rather than derived, so a changed struct cannot change it. Both are pinned
//! by the tests below: a change to a digest fails them instead of failing every waiting run.
//!
//! Nothing here may depend on a type's `Debug`, `Display` or serde shape.

use super::canon::{Canon, Fnv};
use super::{Call, Format};
use crate::sandbox::{ChildItem, MetadataChange, MetadataTarget, TokenRequest};

/// A call already digested in the current format, to record after its arguments have moved.
pub fn digested(digest: u64) -> impl Call {
    move |format: Format| match format {
        Format::CURRENT => digest,
        // Only recorded, so never compared with an entry of another format.
        _ => 0,
    }
}

fn v2(name: &str) -> Canon<Fnv> {
    Canon::call(Format::V2.number(), name)
}

pub fn wall_clock() -> impl Call {
    |format: Format| match format {
        Format::V1 => 0,
        Format::V2 => v2("wall-clock.now").finish(),
    }
}

pub fn monotonic_clock() -> impl Call {
    |format: Format| match format {
        Format::V1 => 0,
        Format::V2 => v2("monotonic-clock.now").finish(),
    }
}

pub fn for_duration(ms: u64) -> impl Call {
    move |format: Format| match format {
        Format::V1 => v1::parts(&[b"for-duration", &ms.to_le_bytes()]),
        Format::V2 => v2("wait.for-duration").u64(ms).finish(),
    }
}

pub fn until(at_ms: u64) -> impl Call {
    move |format: Format| match format {
        Format::V1 => v1::parts(&[b"until", &at_ms.to_le_bytes()]),
        Format::V2 => v2("wait.until").u64(at_ms).finish(),
    }
}

pub fn create_token(request: &TokenRequest) -> impl Call + '_ {
    move |format: Format| match format {
        Format::V1 => v1::parts(&[b"create-token", v1::token_request(request).as_bytes()]),
        Format::V2 => v2("wait.create-token")
            .opt_u64(request.timeout_ms)
            .opt_str(request.idempotency_key.as_deref())
            .opt_u64(request.idempotency_key_ttl_ms)
            .list(&request.tags, |c, t| c.str(t))
            .finish(),
    }
}

/// Waiting for a token: the suspension marker and the result share it.
pub fn for_token(id: &str) -> impl Call + '_ {
    move |format: Format| match format {
        Format::V1 => v1::parts(&[b"for-token", id.as_bytes()]),
        Format::V2 => v2("wait.for-token").str(id).finish(),
    }
}

/// Triggering child runs (`wait`: the parent waits for them).
pub fn trigger(items: &[ChildItem], wait: bool) -> impl Call + '_ {
    move |format: Format| match format {
        Format::V1 => v1::trigger(items, wait),
        Format::V2 => v2(if wait {
            "tasks.batch-trigger-and-wait"
        } else {
            "tasks.batch-trigger"
        })
        .list(items, |c, i| {
            c.str(&i.task_id)
                .str(&i.payload)
                .opt_str(i.idempotency_key.as_deref())
                .list(&i.tags, |c, t| c.str(t))
                .opt_u64(i.delay_ms)
                .opt_u64(i.ttl_ms)
                .opt_str(i.queue.as_deref())
                .opt_str(i.concurrency_key.as_deref())
                .opt_str(i.machine.as_deref())
                .opt_u64(i.max_attempts.map(u64::from))
                .opt_str(i.metadata.as_deref())
        })
        .finish(),
    }
}

/// Waiting for child runs: the suspension marker and the results share it.
pub fn wait_children(ids: &[String]) -> impl Call + '_ {
    move |format: Format| match format {
        Format::V1 => v1::parts(&[b"wait-children", ids.join(",").as_bytes()]),
        Format::V2 => v2("tasks.wait").list(ids, |c, id| c.str(id)).finish(),
    }
}

fn target_tag(target: MetadataTarget) -> u8 {
    match target {
        MetadataTarget::Current => 0,
        MetadataTarget::Parent => 1,
        MetadataTarget::Root => 2,
    }
}

pub fn metadata_get(target: MetadataTarget) -> impl Call {
    move |format: Format| match format {
        Format::V1 => v1::parts(&[b"metadata.get", v1::target_name(target).as_bytes()]),
        Format::V2 => v2("metadata.get").tag(target_tag(target)).finish(),
    }
}

pub fn metadata_update(target: MetadataTarget, changes: &[MetadataChange]) -> impl Call + '_ {
    move |format: Format| match format {
        Format::V1 => v1::metadata_update(target, changes),
        Format::V2 => v2("metadata.update")
            .tag(target_tag(target))
            .list(changes, |c, change| match change {
                MetadataChange::Set(k, v) => c.tag(0).str(k).str(v),
                MetadataChange::Delete(k) => c.tag(1).str(k),
                MetadataChange::Append(k, v) => c.tag(2).str(k).str(v),
                MetadataChange::Remove(k, v) => c.tag(3).str(k).str(v),
                MetadataChange::Increment(k, by) => c.tag(4).str(k).f64(*by),
                MetadataChange::Replace(v) => c.tag(5).str(v),
            })
            .finish(),
    }
}

/// An outbound HTTP request, by method and URI (its number in the attempt is its key).
pub fn http<'a>(method: &'a str, uri: &'a str) -> impl Call + 'a {
    move |format: Format| match format {
        Format::V1 => v1::parts(&[method.as_bytes(), uri.as_bytes()]),
        Format::V2 => v2("http.outgoing-handler.handle")
            .str(method)
            .str(uri)
            .finish(),
    }
}

/// Only the current format journals this call; an entry of an earlier one is never compared
/// with it (`Format::journals`).
fn current_only(format: Format, digest: impl FnOnce() -> u64) -> u64 {
    match format {
        Format::V1 => 0,
        Format::V2 => digest(),
    }
}

/// A descriptor's `stat` (the times it answered are journaled).
pub fn stat() -> impl Call {
    |format: Format| current_only(format, || v2("filesystem.stat").finish())
}

/// `stat-at` of a path under a descriptor, following symlinks or not.
pub fn stat_at(follow: bool, path: &str) -> impl Call + '_ {
    move |format: Format| {
        current_only(format, || {
            v2("filesystem.stat-at").bool(follow).str(path).finish()
        })
    }
}

/// The first journal format's digests, frozen.
mod v1 {
    use super::*;

    /// FNV-1a over the parts, each followed by a `0xff` separator.
    pub(super) fn parts(parts: &[&[u8]]) -> u64 {
        parts.iter().fold(Parts::new(), |d, p| d.part(p)).finish()
    }

    #[derive(Clone, Copy)]
    struct Parts(u64);

    impl Parts {
        fn new() -> Parts {
            Parts(Fnv::OFFSET)
        }

        fn part(self, bytes: &[u8]) -> Parts {
            use super::super::canon::Sink;
            let mut fnv = Fnv(self.0);
            fnv.put(bytes);
            fnv.put(&[0xff]);
            Parts(fnv.0)
        }

        fn optional(self, bytes: Option<&[u8]>) -> Parts {
            match bytes {
                None => self.part(&[0]),
                Some(b) => self.part(&[1]).part(b),
            }
        }

        fn finish(self) -> u64 {
            self.0
        }
    }

    /// What `format!("{:?}")` of the token request printed when this format was current.
    pub(super) fn token_request(r: &TokenRequest) -> String {
        format!(
            "TokenRequest {{ timeout_ms: {:?}, idempotency_key: {:?}, idempotency_key_ttl_ms: {:?}, tags: {:?} }}",
            r.timeout_ms, r.idempotency_key, r.idempotency_key_ttl_ms, r.tags
        )
    }

    /// What `format!("{:?}")` of the metadata target printed.
    pub(super) fn target_name(target: MetadataTarget) -> &'static str {
        match target {
            MetadataTarget::Current => "Current",
            MetadataTarget::Parent => "Parent",
            MetadataTarget::Root => "Root",
        }
    }

    pub(super) fn trigger(items: &[ChildItem], wait: bool) -> u64 {
        let start = Parts::new().part(if wait {
            b"trigger-and-wait"
        } else {
            b"trigger"
        });
        items.iter().fold(start, item).finish()
    }

    fn item(d: Parts, item: &ChildItem) -> Parts {
        let number = |n: Option<u64>| n.map(u64::to_le_bytes);
        let d = d
            .part(item.task_id.as_bytes())
            .part(item.payload.as_bytes())
            .optional(item.idempotency_key.as_deref().map(str::as_bytes));
        // The count was written as one byte (wrapping) in this format.
        let d = item
            .tags
            .iter()
            .fold(d.part(&[item.tags.len() as u8]), |d, t| {
                d.part(t.as_bytes())
            });
        d.optional(number(item.delay_ms).as_ref().map(|b| &b[..]))
            .optional(number(item.ttl_ms).as_ref().map(|b| &b[..]))
            .optional(item.queue.as_deref().map(str::as_bytes))
            .optional(item.concurrency_key.as_deref().map(str::as_bytes))
            .optional(item.machine.as_deref().map(str::as_bytes))
            .optional(
                number(item.max_attempts.map(u64::from))
                    .as_ref()
                    .map(|b| &b[..]),
            )
            .optional(item.metadata.as_deref().map(str::as_bytes))
    }

    pub(super) fn metadata_update(target: MetadataTarget, changes: &[MetadataChange]) -> u64 {
        let start = Parts::new()
            .part(b"metadata.update")
            .part(&[target_tag(target)]);
        changes
            .iter()
            .fold(start, |d, change| match change {
                MetadataChange::Set(k, v) => d.part(b"set").part(k.as_bytes()).part(v.as_bytes()),
                MetadataChange::Delete(k) => d.part(b"del").part(k.as_bytes()),
                MetadataChange::Append(k, v) => {
                    d.part(b"append").part(k.as_bytes()).part(v.as_bytes())
                }
                MetadataChange::Remove(k, v) => {
                    d.part(b"remove").part(k.as_bytes()).part(v.as_bytes())
                }
                MetadataChange::Increment(k, by) => d
                    .part(b"increment")
                    .part(k.as_bytes())
                    .part(&by.to_le_bytes()),
                MetadataChange::Replace(v) => d.part(b"replace").part(v.as_bytes()),
            })
            .finish()
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(crate) fn request() -> TokenRequest {
        TokenRequest {
            timeout_ms: Some(60_000),
            idempotency_key: Some("key-1".into()),
            idempotency_key_ttl_ms: None,
            tags: vec!["approval".into(), "b".into()],
        }
    }

    fn item() -> ChildItem {
        ChildItem {
            task_id: "child".into(),
            payload: r#"{"n":1}"#.into(),
            idempotency_key: Some("k".into()),
            tags: vec!["t".into()],
            delay_ms: Some(1000),
            ttl_ms: None,
            queue: Some("q".into()),
            concurrency_key: None,
            machine: Some("small-2x".into()),
            max_attempts: Some(3),
            metadata: Some("{}".into()),
        }
    }

    fn changes() -> Vec<MetadataChange> {
        vec![
            MetadataChange::Set("a".into(), "1".into()),
            MetadataChange::Delete("b".into()),
            MetadataChange::Append("c".into(), r#""x""#.into()),
            MetadataChange::Remove("d".into(), "2".into()),
            MetadataChange::Increment("e".into(), 1.5),
            MetadataChange::Replace("{}".into()),
        ]
    }

    /// Each call's digest under both formats. The V1 values were computed by the kiln that wrote
    /// that format (its own code, before formats had numbers); they must never change.
    fn pinned() -> Vec<(&'static str, u64, u64)> {
        let (request, items, changes) = (request(), [item()], changes());
        let ids = ["run_a".to_owned(), "run_b".to_owned()];
        let both = |name, call: &dyn Call| (name, call.digest(Format::V1), call.digest(Format::V2));
        vec![
            both("wall-clock", &wall_clock()),
            both("monotonic-clock", &monotonic_clock()),
            both("for-duration", &for_duration(3_600_000)),
            both("until", &until(1_700_000_000_000)),
            both("create-token", &create_token(&request)),
            both("for-token", &for_token("waitpoint_abc")),
            both("trigger", &trigger(&items, false)),
            both("trigger-and-wait", &trigger(&items, true)),
            both("wait-children", &wait_children(&ids)),
            both("metadata.get", &metadata_get(MetadataTarget::Parent)),
            both(
                "metadata.update",
                &metadata_update(MetadataTarget::Root, &changes),
            ),
            both("http", &http("GET", "https://example.com/x?y=1")),
            both("stat", &stat()),
            both("stat-at", &stat_at(true, "a.txt")),
        ]
    }

    #[test]
    fn digests_of_the_first_format_are_the_ones_that_kiln_wrote() {
        let v1: Vec<(&str, u64)> = pinned().into_iter().map(|(n, d, _)| (n, d)).collect();
        assert_eq!(
            v1,
            [
                ("wall-clock", 0),
                ("monotonic-clock", 0),
                ("for-duration", 0x27c6_484d_b7bb_247d),
                ("until", 0x8b0c_b5c8_ef24_9a75),
                ("create-token", 0xb602_5b19_c0a9_8ad2),
                ("for-token", 0x21e1_c37e_f143_f95a),
                ("trigger", 0x20a4_7ce7_dd11_d29a),
                ("trigger-and-wait", 0x87fc_44fa_9a6f_8b5e),
                ("wait-children", 0xa89b_744f_e733_bc4f),
                ("metadata.get", 0xa41e_53de_bbf1_0624),
                ("metadata.update", 0x8735_ff5b_290f_17ec),
                ("http", 0x667f_50b4_8e45_f32a),
                ("stat", 0),
                ("stat-at", 0),
            ]
        );
        assert_eq!(
            v1::token_request(&request()),
            r#"TokenRequest { timeout_ms: Some(60000), idempotency_key: Some("key-1"), idempotency_key_ttl_ms: None, tags: ["approval", "b"] }"#
        );
    }

    /// The current format's digests (checked by hand against the encoding `canon` describes:
    /// e.g. `for-duration` is FNV-1a of `02 | 11 00 00 00 "wait.for-duration" | 3600000 as u64`).
    #[test]
    fn digests_of_the_current_format_are_pinned() {
        let v2: Vec<(&str, u64)> = pinned().into_iter().map(|(n, _, d)| (n, d)).collect();
        assert_eq!(
            v2,
            [
                ("wall-clock", 0x9b96_0922_3a27_6dc2),
                ("monotonic-clock", 0x9e9b_209e_c199_559f),
                ("for-duration", 0xb920_e33e_d1e3_0bd7),
                ("until", 0x73ae_87c6_db74_0c08),
                ("create-token", 0xc65c_63f4_df62_fa47),
                ("for-token", 0x25e8_eee4_d29b_20e8),
                ("trigger", 0x5b6f_c52e_e28e_9459),
                ("trigger-and-wait", 0x0539_fd8d_9cd5_f0a8),
                ("wait-children", 0x1f16_9dce_812b_102d),
                ("metadata.get", 0xa25d_30cf_21e3_7da9),
                ("metadata.update", 0xe086_3eb2_6098_3c8e),
                ("http", 0xf41f_30d3_ef48_78fb),
                ("stat", 0xf52c_ae65_b423_5ef3),
                ("stat-at", 0xe5cc_6daf_20ae_3a79),
            ],
            "a digest changed: every run checkpointed before would fail as nondeterministic; add a journal format instead"
        );
    }

    #[test]
    fn every_field_of_a_call_changes_its_digest() {
        let base = create_token(&request()).digest(Format::V2);
        let mut r = request();
        r.tags = vec!["approvalb".into()];
        assert_ne!(
            create_token(&r).digest(Format::V2),
            base,
            "tags are length-prefixed"
        );
        let mut r = request();
        r.idempotency_key_ttl_ms = Some(0);
        assert_ne!(create_token(&r).digest(Format::V2), base);

        let base = trigger(&[item()], false).digest(Format::V2);
        for change in [
            |i: &mut ChildItem| i.concurrency_key = Some(String::new()),
            |i: &mut ChildItem| i.max_attempts = None,
            |i: &mut ChildItem| i.payload.push(' '),
            |i: &mut ChildItem| i.tags = vec!["t".into(); 257],
        ] {
            let mut i = item();
            change(&mut i);
            assert_ne!(trigger(&[i], false).digest(Format::V2), base);
        }
        assert_ne!(trigger(&[item(), item()], false).digest(Format::V2), base);
        assert_ne!(
            metadata_update(MetadataTarget::Current, &changes()).digest(Format::V2),
            metadata_update(MetadataTarget::Root, &changes()).digest(Format::V2)
        );
    }
}
