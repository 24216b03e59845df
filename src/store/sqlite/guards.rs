//! Leaf: the `WHERE` guards of set-based status writes (`store::codec::status_guard`, shared by
//! both backends), and the check that every statement of this backend that writes a run's status
//! is built from them.

pub(super) use crate::store::codec::status_guard;

#[cfg(test)]
mod tests {
    use crate::store::codec::checks;

    #[test]
    fn every_status_write_moves_runs_along_an_edge_of_the_table() {
        checks::every_status_write_moves_runs_along_an_edge_of_the_table(
            super::super::status_writes(),
        );
    }

    #[test]
    fn no_status_is_written_but_through_a_guard() {
        checks::no_status_is_written_but_through_a_guard("sqlite");
    }
}
