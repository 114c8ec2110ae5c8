//! Running a future under an optional time limit, without growing it.
//!
//! An `async fn` wrapper keeps its future argument twice in its state machine (once as the
//! argument, once as the local it is awaited from), so wrapping the request's attempts that way
//! doubled their kilobytes, which every request then copies into its box (`server.rs`). This is a
//! plain function returning one of two futures, each holding the wrapped future once; the per-try
//! timeout (`attempts.rs`) builds its timeout inside a `match` arm for the same reason.

use std::time::Instant;

use futures::FutureExt as _;
use futures::future::Either;

/// Runs `future` until `deadline`, if there is one; `None` means the deadline passed first.
pub(super) fn until<F: Future>(
    deadline: Option<Instant>,
    future: F,
) -> impl Future<Output = Option<F::Output>> {
    match deadline {
        Some(deadline) => {
            Either::Left(tokio::time::timeout_at(deadline.into(), future).map(Result::ok))
        }
        None => Either::Right(future.map(Some)),
    }
}
