#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use cache_core::{AutoPrune, Prune};
use rand::Rng;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The background prune task of one object cache.
///
/// Stop it with [`shutdown`](Pruner::shutdown) (waits for the task to end); dropping it aborts
/// the task.
#[derive(Debug)]
pub struct Pruner {
    task: Option<Running>,
}

#[derive(Debug)]
struct Running {
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

impl Pruner {
    /// Starts pruning `prune` (the object cache `purpose` on connector `connector`) as
    /// `settings` say. With `settings.interval` zero no task is started.
    ///
    /// # Panics
    ///
    /// When called outside a Tokio runtime (and the interval is not zero).
    pub fn start(
        purpose: impl Into<String>,
        connector: impl Into<String>,
        prune: Arc<dyn Prune>,
        settings: AutoPrune,
    ) -> Pruner {
        let purpose = purpose.into();
        let connector = connector.into();
        if settings.interval.is_zero() {
            tracing::debug!(%purpose, %connector, "auto prune disabled (interval 0)");
            return Pruner { task: None };
        }
        let first_delay = random_below(settings.interval);
        let (stop, stopped) = watch::channel(false);
        let job = Job {
            metrics: JobMetrics::new(&purpose, &connector),
            purpose,
            connector,
            prune,
            settings,
        };
        let handle = tokio::spawn(job.run(first_delay, stopped));
        Pruner {
            task: Some(Running { stop, handle }),
        }
    }

    /// Whether a background task was started (false when the interval is zero or after
    /// shutdown).
    pub fn is_active(&self) -> bool {
        self.task.is_some()
    }

    /// Stops the task and waits until it has ended; a run in progress is cancelled. No run
    /// starts after this returns.
    pub async fn shutdown(mut self) {
        if let Some(Running { stop, handle }) = self.task.take() {
            let _ = stop.send(true);
            // The task only ends by stopping or being cancelled; neither is worth reporting.
            let _ = handle.await;
        }
    }
}

impl Drop for Pruner {
    fn drop(&mut self) {
        if let Some(running) = self.task.take() {
            running.handle.abort();
        }
    }
}

/// A uniformly random duration in `[0, bound)`; `bound` must not be zero.
fn random_below(bound: Duration) -> Duration {
    let nanos = u64::try_from(bound.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rand::rng().random_range(0..nanos))
}

/// `cache_prune_runs_total`, `cache_pruned_keys_total`, `cache_prune_duration_seconds` of
/// one object cache.
struct JobMetrics {
    ok: metrics::Counter,
    failed: metrics::Counter,
    timeout: metrics::Counter,
    pruned: metrics::Counter,
    duration: metrics::Histogram,
}

impl JobMetrics {
    fn new(purpose: &str, connector: &str) -> Self {
        use cache_core::observe::{self, PRUNE_DURATION, PRUNE_RUNS, PRUNED_KEYS};
        observe::describe();
        let (p, c) = (purpose.to_owned(), connector.to_owned());
        let runs = |outcome: &'static str| {
            metrics::counter!(
                PRUNE_RUNS,
                "purpose" => p.clone(),
                "connector" => c.clone(),
                "outcome" => outcome
            )
        };
        JobMetrics {
            ok: runs("ok"),
            failed: runs("failed"),
            timeout: runs("timeout"),
            pruned: metrics::counter!(PRUNED_KEYS, "purpose" => p.clone(), "connector" => c.clone()),
            duration: metrics::histogram!(PRUNE_DURATION, "purpose" => p.clone(), "connector" => c.clone()),
        }
    }
}

struct Job {
    metrics: JobMetrics,
    purpose: String,
    connector: String,
    prune: Arc<dyn Prune>,
    settings: AutoPrune,
}

impl Job {
    async fn run(self, first_delay: Duration, mut stopped: watch::Receiver<bool>) {
        let mut next = after(first_delay);
        loop {
            tokio::select! {
                biased;
                _ = stopped.wait_for(|stop| *stop) => return,
                () = tokio::time::sleep_until(next) => {}
            }
            tokio::select! {
                biased;
                _ = stopped.wait_for(|stop| *stop) => return,
                () = self.run_once() => {}
            }
            next = after(self.settings.interval);
        }
    }

    async fn run_once(&self) {
        let (purpose, connector) = (self.purpose.as_str(), self.connector.as_str());
        let started = Instant::now();
        let timeout = self.settings.timeout;
        let result = if timeout.is_zero() {
            Ok(self.prune.prune().await)
        } else {
            tokio::time::timeout(timeout, self.prune.prune()).await
        };
        let took = started.elapsed();
        self.metrics.duration.record(took);
        match result {
            Ok(Ok(removed)) => {
                self.metrics.ok.increment(1);
                self.metrics.pruned.increment(removed);
                tracing::debug!(purpose, connector, ?took, removed, "prune finished");
            }
            Ok(Err(error)) => {
                self.metrics.failed.increment(1);
                tracing::warn!(
                purpose,
                connector,
                ?took,
                %error,
                "prune failed; retrying after the interval"
                );
            }
            Err(_) => {
                self.metrics.timeout.increment(1);
                tracing::warn!(
                    purpose,
                    connector,
                    ?timeout,
                    "prune cancelled: it took longer than AutoPrune.Timeout; raise the timeout \
                     or prune more often"
                );
            }
        }
    }
}

/// The instant `delay` from now; an interval too long to represent (e.g. `400000000000y`)
/// means a run in a century — never a panic that would stop pruning silently.
fn after(delay: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(delay)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use std::sync::Mutex;

    #[test]
    fn an_interval_too_long_to_represent_is_a_century_not_a_panic() {
        let later = after(Duration::MAX);
        assert!(later > Instant::now() + Duration::from_secs(50 * 365 * 24 * 3600));
    }

    /// A prune that takes `takes`, records when each run started and finished, and fails when
    /// asked to.
    #[derive(Default)]
    struct Recorder {
        takes: Duration,
        fail: bool,
        starts: Mutex<Vec<Instant>>,
        ends: Mutex<Vec<Instant>>,
    }

    impl Recorder {
        fn new(takes: Duration, fail: bool) -> Arc<Self> {
            Arc::new(Recorder {
                takes,
                fail,
                ..Recorder::default()
            })
        }
        fn starts(&self) -> Vec<Instant> {
            self.starts.lock().unwrap().clone()
        }
        fn ends(&self) -> Vec<Instant> {
            self.ends.lock().unwrap().clone()
        }
    }

    #[async_trait]
    impl Prune for Recorder {
        async fn prune(&self) -> cache_core::Result<u64> {
            self.starts.lock().unwrap().push(Instant::now());
            tokio::time::sleep(self.takes).await;
            self.ends.lock().unwrap().push(Instant::now());
            if self.fail {
                Err(cache_core::Error::unavailable("backend down"))
            } else {
                Ok(1)
            }
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// Captures log output (the subscriber is thread-local; paused-time tests run on one thread).
    #[derive(Clone, Default)]
    struct Logs(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Logs {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Logs {
        fn install(&self) -> tracing::subscriber::DefaultGuard {
            let logs = self.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_ansi(false)
                .with_max_level(tracing::Level::DEBUG)
                .with_writer(move || logs.clone())
                .finish();
            tracing::subscriber::set_default(subscriber)
        }
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn first_run_starts_after_a_random_delay_below_the_interval() {
        let interval = secs(10);
        let mut delays = Vec::new();
        for _ in 0..20 {
            let prune = Recorder::new(Duration::ZERO, false);
            let t0 = Instant::now();
            let pruner = Pruner::start("p", "c", prune.clone(), AutoPrune::new(interval, secs(0)));
            tokio::time::sleep(interval - Duration::from_millis(1)).await;
            let starts = prune.starts();
            assert_eq!(starts.len(), 1, "exactly one run within the first interval");
            let delay = starts[0] - t0;
            assert!(
                delay < interval,
                "first delay {delay:?} not below {interval:?}"
            );
            delays.push(delay);
            pruner.shutdown().await;
        }
        delays.sort();
        delays.dedup();
        assert!(
            delays.len() > 1,
            "the first delay is random, got {delays:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn next_run_starts_one_interval_after_the_previous_run_finished() {
        let (interval, takes) = (secs(10), secs(3));
        let prune = Recorder::new(takes, false);
        let pruner = Pruner::start("p", "c", prune.clone(), AutoPrune::new(interval, secs(0)));
        tokio::time::sleep(secs(70)).await;
        pruner.shutdown().await;
        let (starts, ends) = (prune.starts(), prune.ends());
        assert!(starts.len() >= 5, "got {} runs", starts.len());
        for (i, pair) in starts.windows(2).enumerate() {
            let gap = pair[1] - ends[i];
            assert!(
                gap >= interval && gap < interval + Duration::from_millis(5),
                "run {} started {gap:?} after run {i} finished, want {interval:?}",
                i + 1
            );
            assert!(pair[1] - pair[0] >= interval + takes);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_longer_than_the_timeout_is_cancelled_and_logged_and_the_next_run_happens() {
        let logs = Logs::default();
        let _guard = logs.install();
        let (interval, timeout) = (secs(10), secs(2));
        let prune = Recorder::new(secs(100), false);
        let pruner = Pruner::start(
            "orgs",
            "memory",
            prune.clone(),
            AutoPrune::new(interval, timeout),
        );
        tokio::time::sleep(secs(40)).await;
        pruner.shutdown().await;
        let starts = prune.starts();
        assert!(
            starts.len() >= 3,
            "runs keep coming after timeouts: {}",
            starts.len()
        );
        assert!(prune.ends().is_empty(), "every run was cancelled");
        for pair in starts.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(
                gap >= timeout + interval && gap < timeout + interval + Duration::from_millis(5)
            );
        }
        let text = logs.text();
        assert!(text.contains("prune cancelled"), "{text}");
        assert!(
            text.contains("purpose=\"orgs\"") || text.contains("purpose=orgs"),
            "{text}"
        );
        assert!(
            text.contains("connector=\"memory\"") || text.contains("connector=memory"),
            "{text}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn errors_are_logged_with_the_purpose_and_do_not_stop_the_task() {
        let logs = Logs::default();
        let _guard = logs.install();
        let prune = Recorder::new(Duration::ZERO, true);
        let pruner = Pruner::start(
            "instances",
            "postgres",
            prune.clone(),
            AutoPrune::new(secs(10), secs(5)),
        );
        tokio::time::sleep(secs(45)).await;
        assert!(prune.starts().len() >= 4, "got {}", prune.starts().len());
        pruner.shutdown().await;
        let text = logs.text();
        assert!(text.contains("prune failed"), "{text}");
        assert!(text.contains("backend down"), "{text}");
        assert!(
            text.contains("instances") && text.contains("postgres"),
            "{text}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_run_happens_after_shutdown() {
        let prune = Recorder::new(secs(1), false);
        let pruner = Pruner::start("p", "c", prune.clone(), AutoPrune::new(secs(10), secs(0)));
        tokio::time::sleep(secs(25)).await;
        let before = prune.starts().len();
        assert!(before >= 2);
        pruner.shutdown().await;
        tokio::time::sleep(secs(1000)).await;
        assert_eq!(prune.starts().len(), before);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_cancels_a_run_in_progress_without_waiting_for_it() {
        let prune = Recorder::new(secs(1000), false);
        let pruner = Pruner::start("p", "c", prune.clone(), AutoPrune::new(secs(10), secs(0)));
        tokio::time::sleep(secs(10)).await; // the first run has started and is still running
        assert_eq!(prune.starts().len(), 1);
        let t = Instant::now();
        pruner.shutdown().await;
        assert!(t.elapsed() < secs(1), "shutdown waited {:?}", t.elapsed());
        tokio::time::sleep(secs(2000)).await;
        assert!(prune.ends().is_empty(), "the run was cancelled");
        assert_eq!(prune.starts().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_pruner_aborts_the_task() {
        let prune = Recorder::new(Duration::ZERO, false);
        let pruner = Pruner::start("p", "c", prune.clone(), AutoPrune::new(secs(10), secs(0)));
        tokio::time::sleep(secs(15)).await;
        let before = prune.starts().len();
        drop(pruner);
        tokio::time::sleep(secs(100)).await;
        assert_eq!(prune.starts().len(), before);
    }

    #[tokio::test(start_paused = true)]
    async fn interval_zero_starts_no_task() {
        let prune = Recorder::new(Duration::ZERO, false);
        let pruner = Pruner::start(
            "p",
            "c",
            prune.clone(),
            AutoPrune::new(Duration::ZERO, secs(1)),
        );
        assert!(!pruner.is_active());
        tokio::time::sleep(secs(1000)).await;
        assert!(prune.starts().is_empty());
        pruner.shutdown().await;
    }

    #[test]
    fn interval_zero_needs_no_runtime() {
        let pruner = Pruner::start(
            "p",
            "c",
            Recorder::new(Duration::ZERO, false),
            AutoPrune::new(Duration::ZERO, Duration::ZERO),
        );
        assert!(!pruner.is_active());
    }

    #[tokio::test(start_paused = true)]
    async fn runs_are_counted_by_outcome_with_the_keys_they_removed_and_timed() {
        use cache_core::observe::{PRUNE_DURATION, PRUNE_RUNS, PRUNED_KEYS};
        use cache_core::testkit::metrics::{counter, histogram, install};
        install();
        let labels = |purpose: &'static str, outcome: &'static str| {
            [
                ("purpose", purpose),
                ("connector", "metered"),
                ("outcome", outcome),
            ]
        };
        let settings = AutoPrune::new(secs(10), secs(2));
        let cases = [
            ("prune-ok", Recorder::new(Duration::ZERO, false)),
            ("prune-failed", Recorder::new(Duration::ZERO, true)),
            ("prune-slow", Recorder::new(secs(100), false)),
        ];
        let pruners: Vec<Pruner> = cases
            .iter()
            .map(|(purpose, prune)| Pruner::start(*purpose, "metered", prune.clone(), settings))
            .collect();
        tokio::time::sleep(secs(25)).await;
        for pruner in pruners {
            pruner.shutdown().await;
        }
        let ok_runs = counter(PRUNE_RUNS, &labels("prune-ok", "ok"));
        assert_eq!(ok_runs, cases[0].1.ends().len() as u64);
        assert!(ok_runs >= 2, "{ok_runs}");
        assert_eq!(
            counter(PRUNED_KEYS, &[("purpose", "prune-ok")]),
            ok_runs,
            "one key per run"
        );
        assert_eq!(
            counter(PRUNE_RUNS, &labels("prune-failed", "failed")),
            cases[1].1.ends().len() as u64
        );
        assert_eq!(counter(PRUNE_RUNS, &labels("prune-failed", "ok")), 0);
        assert!(counter(PRUNE_RUNS, &labels("prune-slow", "timeout")) >= 1);
        assert!(cases[2].1.ends().is_empty());
        let took = histogram(PRUNE_DURATION, &[("purpose", "prune-slow")]);
        assert!(
            !took.is_empty() && took.iter().all(|s| (*s - 2.0).abs() < 0.01),
            "{took:?}"
        );
    }
}
