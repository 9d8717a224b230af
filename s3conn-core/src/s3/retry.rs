//! Sending a request again after a failure on the way.
//!
//! object_store retries server errors and throttling itself, and transport failures
//! (a reset, a timeout) of requests it knows to be idempotent. It does not send a
//! conditional PUT, a `CreateMultipartUpload` or a bulk delete again after a reset, since
//! the first may have landed. The sink can: every write it makes is either idempotent or
//! resolved when it meets its own earlier landing (a conditional create answers
//! `AlreadyExists`, which the caller checks against what it meant to write).

use std::future::Future;
use std::time::Duration;

/// How many times a request whose outcome is unknown is sent in all.
pub(crate) const MAX_SENDS: u32 = 4;

/// A failure on the way (a reset, a timeout, a server error the client gave up on), after
/// which the same request may succeed.
pub(crate) fn is_transient(e: &object_store::Error) -> bool {
    matches!(
        e,
        object_store::Error::Generic { .. } | object_store::Error::JoinError { .. }
    )
}

/// Run `call`, and again (up to [`MAX_SENDS`] in all, with a growing pause) while it fails
/// on the way.
pub(crate) async fn send<T, F, Fut>(what: &str, mut call: F) -> object_store::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = object_store::Result<T>>,
{
    let mut sends = 1;
    loop {
        match call().await {
            Err(e) if is_transient(&e) && sends < MAX_SENDS => {
                tracing::info!(call = what, error = %e, sends, "a request failed on the way; sending it again");
                tokio::time::sleep(Duration::from_millis(100 << sends)).await;
                sends += 1;
            }
            other => return other,
        }
    }
}
