//! Leaf: how a facade call's arguments travel to a backend that runs its calls on a runtime of
//! its own (PostgreSQL: its queries and connections never wait behind guests that keep the
//! caller's runtime busy). A borrowed `&str` is carried as a `String` and lent again; every other
//! argument is owned already and moves as it is.

use crate::metadata::MetadataOp;
use crate::model::*;
use crate::store::*;

/// An argument made `'static` to cross to the backend's runtime.
pub(crate) trait Carry {
    type Carried: Pass + Send + 'static;
    fn carry(self) -> Self::Carried;
}

/// A carried argument handed to the backend's method, once.
pub(crate) trait Pass {
    type Out<'a>
    where
        Self: 'a;
    fn pass(&mut self) -> Self::Out<'_>;
}

impl Carry for &str {
    type Carried = String;
    fn carry(self) -> String {
        self.to_owned()
    }
}

impl Pass for String {
    type Out<'a> = &'a str;
    fn pass(&mut self) -> &str {
        self
    }
}

/// An owned argument on its way: taken out when passed.
pub(crate) struct Held<T>(Option<T>);

impl<T> Pass for Held<T> {
    type Out<'a>
        = T
    where
        T: 'a;
    fn pass(&mut self) -> T {
        match self.0.take() {
            Some(value) => value,
            // The facade passes each argument once, right after carrying it.
            None => unreachable!("a carried argument is passed once"),
        }
    }
}

macro_rules! carried_as_is {
    ($($t:ty),* $(,)?) => {
        $(
            impl Carry for $t {
                type Carried = Held<$t>;
                fn carry(self) -> Held<$t> {
                    Held(Some(self))
                }
            }
        )*
    };
}

carried_as_is!(
    bool,
    i64,
    u32,
    usize,
    [u8; 32],
    String,
    Option<String>,
    Option<u32>,
    Option<Millis>,
    Vec<u8>,
    Vec<String>,
    Vec<(Lane, usize)>,
    Vec<DeclaredSchedule>,
    Vec<MetadataOp>,
    Vec<NewBatchItem>,
    Vec<NewComponent>,
    Vec<NewRun>,
    Vec<ScheduleFire>,
    Vec<StoredVar>,
    BulkProgress,
    EnvironmentChange,
    FinishAttempt,
    JournalWith<[Inserted]>,
    Option<JournalWith<(WaitToken, bool)>>,
    Option<JournalWith<str>>,
    NewBatch,
    NewBulkAction,
    NewKey,
    NewToken,
    QueueRef,
    RunError,
    RunFilter,
    RunStatus,
    RunUpdate,
    ScheduleSpec,
    TokenFilter,
    crate::secrets::Sealed,
);
