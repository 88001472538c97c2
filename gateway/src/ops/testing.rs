//! Test support for the library's unit tests (compiled only for them).

use std::time::Duration;

/// Waits until `condition` holds, checking every 10 ms, for at most
/// `within`; panics naming `what` otherwise. The one way unit tests wait for
/// something another task or thread does (never a sleep standing for it).
pub async fn eventually(within: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let waited = tokio::time::timeout(within, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "waited {within:?} for {what}, in vain");
}
