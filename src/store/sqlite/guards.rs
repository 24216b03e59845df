//! Leaf: the `WHERE` guards of set-based status writes, taken from the state machine's table of
//! edges (`model::lifecycle`), so a write can only move runs along an edge that exists. Every
//! statement that writes a run's status is built from these (a test checks no other does).

use crate::model::{Condition, RunStatus, Step, guard};

/// `status = 'A'` or `status IN ('A', 'B')`, and the condition the edges need, for a write of
/// `step` to `to` from the statuses `only` names (empty: all the table has).
pub(super) fn status_guard(step: Step, to: RunStatus, only: &[RunStatus]) -> String {
    let (from, when) = guard(step, to, only);
    let statuses = match from.as_slice() {
        [one] => format!("status = '{}'", one.as_str()),
        many => format!(
            "status IN ({})",
            many.iter()
                .map(|s| format!("'{}'", s.as_str()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let condition = match when {
        Condition::Always => "",
        Condition::NeverStarted => " AND attempt_count = 0",
        Condition::Checkpointed => " AND checkpointed = 1",
        Condition::NotCheckpointed => " AND checkpointed = 0",
    };
    format!("{statuses}{condition}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::allowed;

    /// The status a statement writes (`SET status = 'X'`) and the statuses its `WHERE` guards on.
    fn writes_and_guards(sql: &str) -> (Option<RunStatus>, Vec<RunStatus>) {
        let quoted_after = |text: &str, prefix: &str| -> Vec<RunStatus> {
            text.match_indices(prefix)
                .filter_map(|(at, _)| {
                    let rest = &text[at + prefix.len()..];
                    Some(rest[..rest.find('\'')?].to_owned())
                })
                .filter_map(|s| RunStatus::parse(&s))
                .collect()
        };
        let written = quoted_after(sql, "SET status = '").into_iter().next();
        let (_, guard) = sql.split_once(" WHERE ").unwrap_or_default();
        let mut guards = quoted_after(guard, "status = '");
        for (at, _) in guard.match_indices("status IN (") {
            let list = &guard[at..];
            let list = &list[..list.find(')').unwrap_or(list.len())];
            guards.extend(
                list.split('\'')
                    .skip(1)
                    .step_by(2)
                    .filter_map(RunStatus::parse),
            );
        }
        (written, guards)
    }

    #[test]
    fn every_status_write_moves_runs_along_an_edge_of_the_table() {
        let statements = super::super::status_writes();
        assert!(statements.len() >= 8, "every status write is listed");
        for (name, sql) in statements {
            let (written, guards) = writes_and_guards(sql);
            let written = written.unwrap_or_else(|| panic!("{name} writes no status: {sql}"));
            assert!(!guards.is_empty(), "{name}: the write is guarded: {sql}");
            for from in guards {
                assert!(
                    allowed(from, written),
                    "{name} writes {written} over {from}, which the table does not allow: {sql}"
                );
            }
        }
    }

    #[test]
    fn no_status_is_written_but_through_a_guard() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store/sqlite");
        for entry in std::fs::read_dir(&dir).expect("the store's sources") {
            let path = entry.expect("an entry").path();
            if path.extension().is_none_or(|e| e != "rs") || path.ends_with("guards.rs") {
                continue;
            }
            let source = std::fs::read_to_string(&path).expect("UTF-8 source");
            // Tests set up whatever states they need; the store's own statements come first.
            let text = source.split("#[cfg(test)]").next().unwrap_or_default();
            let file = path.file_name().unwrap_or_default().to_string_lossy();
            for (at, _) in text.match_indices("UPDATE runs SET ") {
                let rest = &text[at + "UPDATE runs SET ".len()..];
                let set = &rest[..rest.find("WHERE").unwrap_or(rest.len())];
                let Some(write) = set.find("status = ") else {
                    continue;
                };
                let value = &set[write + "status = ".len()..];
                // The one compare-and-set of an engine-computed change, checked when it runs.
                let runtime = file == "lifecycle.rs" && value.starts_with('?');
                assert!(
                    runtime || value.starts_with("'{"),
                    "{file}: a run status written literally (`status = {}`): build the statement with status_guard",
                    &value[..value.len().min(20)]
                );
            }
        }
    }
}
