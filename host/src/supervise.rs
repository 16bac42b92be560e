//! What happens when a task or a thread of the proxy dies: a task that
//! panics is started again ([`restart_on_panic`]); a worker thread that ends
//! before draining is over is reported ([`Lifeline`]) and the proxy stops
//! with an error ([`Lost`]) rather than serve with a silent hole.

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Pause before a task that panicked is started again.
pub const RESTART_PAUSE: Duration = Duration::from_millis(100);

/// Run the task `make` gives until it ends, starting a new one each time one
/// panics (`what` names it in the log), until `stop`.
pub async fn restart_on_panic<F, Fut>(what: &str, stop: &CancellationToken, mut make: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        match tokio::spawn(make()).await {
            Err(err) if err.is_panic() && !stop.is_cancelled() => {
                tracing::error!("{what}: its task panicked; started again (see the panic above)");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(RESTART_PAUSE) => {}
                }
            }
            _ => return,
        }
    }
}

/// Which worker thread ended before its time, if one did; its token wakes
/// [`crate::listener::serve`], which then shuts the proxy down with an error (an exit status
/// a supervisor restarts on) instead of serving with a silent hole.
#[derive(Clone, Default)]
pub struct Lost {
    /// Cancelled when a thread is lost.
    pub token: CancellationToken,
    thread: Arc<Mutex<Option<String>>>,
}

impl Lost {
    /// The thread that was lost, if one was.
    pub fn which(&self) -> Option<String> {
        self.thread.lock().ok().and_then(|t| t.clone())
    }
}

/// Held by a worker thread for its whole life: dropped before draining is
/// over (its loop returned, or a panic unwound the thread), it reports the
/// thread lost.
pub struct Lifeline {
    thread: String,
    done: CancellationToken,
    lost: Lost,
}

impl Lifeline {
    /// The lifeline of `thread`, which may end once `done` is cancelled.
    pub fn new(thread: String, done: CancellationToken, lost: Lost) -> Self {
        Lifeline { thread, done, lost }
    }
}

impl Drop for Lifeline {
    fn drop(&mut self) {
        if self.done.is_cancelled() {
            return;
        }
        tracing::error!(thread = %self.thread, "worker thread ended unexpectedly; refractium shuts down");
        if let Ok(mut lost) = self.lost.thread.lock() {
            lost.get_or_insert_with(|| self.thread.clone());
        }
        self.lost.token.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::{Lifeline, Lost, restart_on_panic};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio_util::sync::CancellationToken;

    /// A listener task that panics is started again; one that ends is not.
    #[tokio::test]
    async fn a_task_that_panics_is_started_again() {
        let runs = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let counted = runs.clone();
        restart_on_panic("test task", &stop, move || {
            let run = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                if run < 2 {
                    panic!("run {run} fails");
                }
            }
        })
        .await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }

    /// A worker thread that dies before draining is over is reported; one
    /// that ends after it is not.
    #[test]
    fn a_worker_thread_that_dies_is_reported() {
        let (done, lost) = (CancellationToken::new(), Lost::default());
        let lifeline = Lifeline::new("refractium-worker-7".into(), done.clone(), lost.clone());
        let died = std::thread::spawn(move || {
            let _lifeline = lifeline;
            panic!("the event loop broke");
        })
        .join();
        assert!(died.is_err());
        assert!(lost.token.is_cancelled());
        assert_eq!(lost.which().as_deref(), Some("refractium-worker-7"));

        let (done, lost) = (CancellationToken::new(), Lost::default());
        let lifeline = Lifeline::new("refractium-worker-0".into(), done.clone(), lost.clone());
        done.cancel();
        drop(lifeline);
        assert!(!lost.token.is_cancelled() && lost.which().is_none());
    }
}
