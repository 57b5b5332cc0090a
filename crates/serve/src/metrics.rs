//! Prometheus metrics, rendered in the text exposition format by [`Metrics::render`].
//!
//! - `unlearnrec_http_requests_total{route,method,status}`: requests by route template and status code.
//! - `unlearnrec_http_request_duration_seconds{route}`: a latency histogram per route.
//! - `unlearnrec_forget_queue_depth`: queued requests, as the worker last saw them.
//! - `unlearnrec_model_version`: the served model version.
//! - `unlearnrec_batches_total`, `unlearnrec_forget_applied_total`, `unlearnrec_forget_failed_total`,
//!   `unlearnrec_apply_errors_total`, `unlearnrec_batch_duration_seconds_{sum,count}`.
//! - `unlearnrec_last_retrain_timestamp_seconds{version}`: when the last consolidation (exact retrain) of the
//!   schedule was swapped in (Unix seconds), labelled with its model version; absent before the first.
//! - `unlearnrec_consolidations_total`: consolidations swapped in (exact retrain plus a fresh unlearner,
//!   [`crate::retrain`]) since the process started.
//! - `unlearnrec_edges_since_anchor`: edges (training and validation) removed since the served model's anchor,
//!   the last exactly trained model it is unlearned from; what the size trigger
//!   (`--consolidate-after-edges`) compares, and 0 right after a consolidation with nothing pending.
//! - `unlearnrec_forget_to_applied_seconds`: a histogram of the time from a forget request's commit (its
//!   `202`) to the ledger transaction that marked it applied, from the two times the ledger records for each
//!   request ([`crate::ledger::Ledger::commit_batch`]): right across batches (a request that waited through
//!   several batches, or was committed before a restart and applied after it, counts its whole wait).
//!   Requests applied by this process; buckets [`WAIT_BUCKETS`].
//! - `unlearnrec_worker_up`: 1 while the worker runs, 0 after it panicked until it is restarted;
//!   `unlearnrec_worker_restarts_total`: restarts after a panic.
//! - `unlearnrec_forget_rejected_total{reason}`: forget routes refused for load: `queue_full` (the queue is at
//!   `--max-queue`) or `rate_limited` (the token's rate limit); both answered 429 with `Retry-After`.
//! - `unlearnrec_forget_to_applied_p50_seconds`, `unlearnrec_forget_to_applied_p95_seconds`: the median and
//!   95th percentile (nearest rank) of the same time over the last [`WINDOW`] applied requests, the window
//!   seeded from the ledger on start so that it spans restarts; absent until a request was applied.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the latency buckets, seconds.
pub const BUCKETS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// Upper bounds of the forget-to-applied buckets, seconds (a batch takes milliseconds zero-shot, seconds to
/// minutes with fine-tuning on large data).
pub const WAIT_BUCKETS: [f64; 15] =
    [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0];

/// Applied requests the forget-to-applied percentiles are taken over.
pub const WINDOW: usize = 1000;

struct Histogram<const N: usize> {
    counts: [u64; N],
    count: u64,
    sum: f64,
}

impl<const N: usize> Default for Histogram<N> {
    fn default() -> Self {
        Self { counts: [0; N], count: 0, sum: 0.0 }
    }
}

impl<const N: usize> Histogram<N> {
    fn observe(&mut self, bounds: &[f64; N], v: f64) {
        if let Some(b) = bounds.iter().position(|&le| v <= le) {
            self.counts[b] += 1;
        }
        self.count += 1;
        self.sum += v;
    }

    /// The `_bucket`, `_sum` and `_count` lines of `name` with `labels` (`k="v",` pairs, possibly empty).
    fn render(&self, s: &mut String, name: &str, labels: &str, bounds: &[f64; N]) {
        let mut cum = 0;
        for (le, c) in bounds.iter().zip(&self.counts) {
            cum += c;
            let _ = writeln!(s, "{name}_bucket{{{labels}le=\"{le}\"}} {cum}");
        }
        let _ = writeln!(s, "{name}_bucket{{{labels}le=\"+Inf\"}} {}", self.count);
        let labels = labels.trim_end_matches(',');
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(s, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(s, "{name}_count{braces} {}", self.count);
    }
}

/// The `p`-th percentile (nearest rank) of `xs`, `None` when empty.
pub fn percentile(xs: impl IntoIterator<Item = f64>, p: f64) -> Option<f64> {
    let mut v: Vec<f64> = xs.into_iter().collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

#[derive(Default)]
struct Inner {
    requests: BTreeMap<(String, String, u16), u64>,
    latency: BTreeMap<String, Histogram<{ BUCKETS.len() }>>,
    waited: Histogram<{ WAIT_BUCKETS.len() }>,
    /// The last [`WINDOW`] forget-to-applied times, oldest first.
    recent: VecDeque<f64>,
    consolidations: u64,
    batches: u64,
    applied: u64,
    batch_secs: f64,
    failed: u64,
    apply_errors: u64,
    last_retrain: Option<(u64, f64)>,
    /// Why the worker is down (it panicked and is not restarted yet, or gave up); `None` while it runs.
    worker_down: Option<String>,
    worker_restarts: u64,
    queue_full: u64,
    rate_limited: u64,
}

/// The service's counters.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
    queue_depth: AtomicU64,
    model_version: AtomicU64,
    edges_since_anchor: AtomicU64,
}

impl Metrics {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records one HTTP request.
    pub fn request(&self, route: &str, method: &str, status: u16, secs: f64) {
        let mut m = self.inner();
        *m.requests.entry((route.to_string(), method.to_string(), status)).or_default() += 1;
        m.latency.entry(route.to_string()).or_default().observe(&BUCKETS, secs);
    }

    /// Records the forget-to-applied times of requests just applied.
    pub fn waited(&self, secs: &[f64]) {
        let mut m = self.inner();
        for &t in secs {
            m.waited.observe(&WAIT_BUCKETS, t);
        }
        push_recent(&mut m.recent, secs.iter().copied());
    }

    /// Fills the percentile window (not the histogram) with forget-to-applied times applied before this
    /// process started, the latest first ([`crate::ledger::Ledger::recent_latencies`]).
    pub fn seed_waited(&self, latest_first: &[f64]) {
        let mut m = self.inner();
        let recent = std::mem::take(&mut m.recent);
        push_recent(&mut m.recent, latest_first.iter().rev().copied().chain(recent));
    }

    /// Sets the edges removed since the served model's anchor.
    pub fn set_edges_since_anchor(&self, n: u64) {
        self.edges_since_anchor.store(n, Ordering::Relaxed);
    }

    /// Sets the queue depth.
    pub fn set_queue_depth(&self, n: u64) {
        self.queue_depth.store(n, Ordering::Relaxed);
    }

    /// The queue depth last set.
    pub fn queue_depth(&self) -> u64 {
        self.queue_depth.load(Ordering::Relaxed)
    }

    /// Sets the served model version.
    pub fn set_model_version(&self, v: u64) {
        self.model_version.store(v, Ordering::Relaxed);
    }

    /// Records an applied batch.
    pub fn batch_done(&self, requests: u64, secs: f64, version: u64) {
        let mut m = self.inner();
        m.batches += 1;
        m.applied += requests;
        m.batch_secs += secs;
        self.set_model_version(version);
    }

    /// Records a consolidation swapped in as version `version`, now.
    pub fn consolidated(&self, version: u64) {
        let mut m = self.inner();
        m.last_retrain = Some((version, crate::ledger::now_unix()));
        m.consolidations += 1;
        self.set_model_version(version);
    }

    /// Records a failed request.
    pub fn failed(&self) {
        self.inner().failed += 1;
    }

    /// Records a batch that could not be written (left queued).
    pub fn apply_error(&self) {
        self.inner().apply_errors += 1;
    }

    /// Records that the worker is down, and why (`/v1/health` answers 503 with the reason).
    pub fn worker_down(&self, reason: impl Into<String>) {
        self.inner().worker_down = Some(reason.into());
    }

    /// Records that the worker was restarted and runs again.
    pub fn worker_restarted(&self) {
        let mut m = self.inner();
        m.worker_down = None;
        m.worker_restarts += 1;
    }

    /// Why the worker is down; `None` while it runs.
    pub fn worker_status(&self) -> Option<String> {
        self.inner().worker_down.clone()
    }

    /// Restarts of the worker after a panic.
    pub fn worker_restarts(&self) -> u64 {
        self.inner().worker_restarts
    }

    /// Records a forget route refused because the queue is full.
    pub fn queue_full(&self) {
        self.inner().queue_full += 1;
    }

    /// Records a forget route refused by the rate limit.
    pub fn rate_limited(&self) {
        self.inner().rate_limited += 1;
    }

    /// The mean time to apply a batch so far, seconds (`None` before the first).
    pub fn mean_batch_secs(&self) -> Option<f64> {
        let m = self.inner();
        (m.batches > 0).then(|| m.batch_secs / m.batches as f64)
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let m = self.inner();
        let mut s = String::new();
        let esc = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
        s.push_str("# HELP unlearnrec_http_requests_total HTTP requests by route, method and status.\n");
        s.push_str("# TYPE unlearnrec_http_requests_total counter\n");
        for ((route, method, status), n) in &m.requests {
            let _ = writeln!(
                s,
                "unlearnrec_http_requests_total{{route=\"{}\",method=\"{}\",status=\"{status}\"}} {n}",
                esc(route),
                esc(method)
            );
        }
        s.push_str("# HELP unlearnrec_http_request_duration_seconds HTTP request latency by route.\n");
        s.push_str("# TYPE unlearnrec_http_request_duration_seconds histogram\n");
        for (route, h) in &m.latency {
            let labels = format!("route=\"{}\",", esc(route));
            h.render(&mut s, "unlearnrec_http_request_duration_seconds", &labels, &BUCKETS);
        }
        let name = "unlearnrec_forget_to_applied_seconds";
        let _ = writeln!(
            s,
            "# HELP {name} Time from a forget request's commit (202) to the ledger transaction that applied it.\n# TYPE {name} histogram"
        );
        m.waited.render(&mut s, name, "", &WAIT_BUCKETS);
        for (p, name) in
            [(50.0, "unlearnrec_forget_to_applied_p50_seconds"), (95.0, "unlearnrec_forget_to_applied_p95_seconds")]
        {
            if let Some(v) = percentile(m.recent.iter().copied(), p) {
                let _ = writeln!(
                    s,
                    "# HELP {name} Percentile {p} of the forget-to-applied time over the last {WINDOW} applied requests.\n# TYPE {name} gauge\n{name} {v}"
                );
            }
        }
        let gauges = [
            (
                "unlearnrec_forget_queue_depth",
                "Forget requests queued in the ledger.",
                self.queue_depth.load(Ordering::Relaxed),
            ),
            ("unlearnrec_model_version", "The served model version.", self.model_version.load(Ordering::Relaxed)),
            (
                "unlearnrec_worker_up",
                "1 while the worker runs, 0 while it is down after a panic.",
                u64::from(m.worker_down.is_none()),
            ),
            (
                "unlearnrec_edges_since_anchor",
                "Edges removed since the served model's anchor (its last exactly trained model).",
                self.edges_since_anchor.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        if let Some((version, at)) = m.last_retrain {
            let name = "unlearnrec_last_retrain_timestamp_seconds";
            let _ = writeln!(
                s,
                "# HELP {name} When the last exact retrain was swapped in (Unix seconds), by its model version.\n# TYPE {name} gauge\n{name}{{version=\"{version}\"}} {at}"
            );
        }
        let counters = [
            ("unlearnrec_batches_total", "Batches applied.", m.batches),
            ("unlearnrec_forget_applied_total", "Forget requests applied.", m.applied),
            ("unlearnrec_forget_failed_total", "Forget requests that failed.", m.failed),
            (
                "unlearnrec_consolidations_total",
                "Consolidations (exact retrain and fresh unlearner) swapped in.",
                m.consolidations,
            ),
            (
                "unlearnrec_apply_errors_total",
                "Batches whose files or ledger commit failed (left queued).",
                m.apply_errors,
            ),
            ("unlearnrec_worker_restarts_total", "Restarts of the worker after a panic.", m.worker_restarts),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        }
        let name = "unlearnrec_forget_rejected_total";
        let _ = writeln!(
            s,
            "# HELP {name} Forget routes refused with 429: the queue is full, or the token's rate limit.\n# TYPE {name} counter\n{name}{{reason=\"queue_full\"}} {}\n{name}{{reason=\"rate_limited\"}} {}",
            m.queue_full, m.rate_limited
        );
        let _ = writeln!(
            s,
            "# HELP unlearnrec_batch_duration_seconds Time to apply batches.\n# TYPE unlearnrec_batch_duration_seconds summary\nunlearnrec_batch_duration_seconds_sum {}\nunlearnrec_batch_duration_seconds_count {}",
            m.batch_secs, m.batches
        );
        s
    }
}

/// Appends to the window, keeping the last [`WINDOW`].
fn push_recent(recent: &mut VecDeque<f64>, new: impl IntoIterator<Item = f64>) {
    recent.extend(new);
    while recent.len() > WINDOW {
        recent.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_cumulative_buckets() {
        let m = Metrics::default();
        m.request("/v1/recommend", "GET", 200, 0.002);
        m.request("/v1/recommend", "GET", 200, 0.3);
        m.request("/v1/recommend", "GET", 404, 9.0);
        m.set_queue_depth(4);
        m.batch_done(3, 0.5, 2);
        let s = m.render();
        assert!(
            s.contains("unlearnrec_http_requests_total{route=\"/v1/recommend\",method=\"GET\",status=\"200\"} 2"),
            "{s}"
        );
        assert!(s.contains("unlearnrec_http_request_duration_seconds_bucket{route=\"/v1/recommend\",le=\"0.0025\"} 1"));
        assert!(s.contains("unlearnrec_http_request_duration_seconds_bucket{route=\"/v1/recommend\",le=\"0.5\"} 2"));
        assert!(s.contains("unlearnrec_http_request_duration_seconds_bucket{route=\"/v1/recommend\",le=\"+Inf\"} 3"));
        assert!(s.contains("unlearnrec_forget_queue_depth 4"));
        assert!(s.contains("unlearnrec_model_version 2"));
        assert!(s.contains("unlearnrec_forget_applied_total 3"));
        assert!(!s.contains("unlearnrec_last_retrain"));
        assert!(s.contains("unlearnrec_consolidations_total 0"));
        m.consolidated(3);
        let s = m.render();
        assert!(s.contains("unlearnrec_last_retrain_timestamp_seconds{version=\"3\"} "), "{s}");
        assert!(s.contains("unlearnrec_model_version 3"));
        assert!(s.contains("unlearnrec_consolidations_total 1"));
    }

    #[test]
    fn forget_to_applied_histogram_and_percentiles_over_the_window() {
        let m = Metrics::default();
        let s = m.render();
        assert!(s.contains("unlearnrec_forget_to_applied_seconds_count 0"), "{s}");
        assert!(!s.contains("unlearnrec_forget_to_applied_p50_seconds"), "{s}");
        // Applied before a restart: only the window.
        m.seed_waited(&[100.0, 200.0]);
        m.waited(&[0.02, 0.3]);
        m.waited(&[4.0]);
        let s = m.render();
        assert!(s.contains("unlearnrec_forget_to_applied_seconds_bucket{le=\"0.025\"} 1"), "{s}");
        assert!(s.contains("unlearnrec_forget_to_applied_seconds_bucket{le=\"0.5\"} 2"), "{s}");
        assert!(s.contains("unlearnrec_forget_to_applied_seconds_bucket{le=\"+Inf\"} 3"), "{s}");
        assert!(s.contains("unlearnrec_forget_to_applied_seconds_count 3"), "{s}");
        assert!(s.contains("unlearnrec_forget_to_applied_seconds_sum 4.3"), "{s}");
        // Window: 200, 100, 0.02, 0.3, 4 -> sorted 0.02 0.3 4 100 200.
        assert!(s.contains("unlearnrec_forget_to_applied_p50_seconds 4\n"), "{s}");
        assert!(s.contains("unlearnrec_forget_to_applied_p95_seconds 200\n"), "{s}");
        // The window keeps the last WINDOW: the seeded 100 and 200 drop out first.
        m.waited(&vec![1.0; WINDOW - 3]);
        let s = m.render();
        assert!(s.contains("unlearnrec_forget_to_applied_p95_seconds 1\n"), "{s}");
        m.set_edges_since_anchor(17);
        assert!(m.render().contains("unlearnrec_edges_since_anchor 17\n"));
    }

    #[test]
    fn nearest_rank_percentiles() {
        assert_eq!(percentile([], 50.0), None);
        assert_eq!(percentile([3.0], 95.0), Some(3.0));
        let xs: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(xs.iter().copied(), 50.0), Some(50.0));
        assert_eq!(percentile(xs.iter().copied(), 95.0), Some(95.0));
        assert_eq!(percentile(xs.iter().rev().copied(), 100.0), Some(100.0));
    }
}
