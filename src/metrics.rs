//! Prometheus metrics of this process: HTTP requests, subtask runs, claims,
//! handoff latency, queue depth, heartbeat age, sweeper recoveries, the
//! build and the process itself (CPU, memory, file descriptors).

use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};
use sqlx::PgPool;
use std::sync::LazyLock;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_latency: HistogramVec,
    pub claimed: IntCounterVec,
    pub finished: IntCounterVec,
    pub failed: IntCounterVec,
    pub retried: IntCounterVec,
    pub timed_out: IntCounterVec,
    pub run_duration: HistogramVec,
    pub claim_batch: HistogramVec,
    pub handoff: HistogramVec,
    pub queue_depth: IntGauge,
    pub heartbeat_age: Gauge,
    pub sweeper_recoveries: IntCounter,
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn histogram(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .expect("valid metric");
    r.register(Box::new(h.clone())).expect("unique metric");
    h
}

impl Metrics {
    fn new() -> Metrics {
        let r = Registry::new();
        let secs = vec![
            0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        let queue_depth = IntGauge::new(
            "taskd_queue_depth",
            "READY subtasks in the database, refreshed in the background",
        )
        .expect("valid metric");
        r.register(Box::new(queue_depth.clone()))
            .expect("unique metric");
        let heartbeat_age = Gauge::new(
            "taskd_worker_heartbeat_age_seconds",
            "Seconds since this process's worker last heartbeat successfully",
        )
        .expect("valid metric");
        r.register(Box::new(heartbeat_age.clone()))
            .expect("unique metric");
        let sweeper_recoveries = IntCounter::new(
            "taskd_sweeper_recoveries_total",
            "Lost runs (dead worker or passed timeout) the sweeper recovered",
        )
        .expect("valid metric");
        r.register(Box::new(sweeper_recoveries.clone()))
            .expect("unique metric");
        let build_info = IntGaugeVec::new(
            Opts::new(
                "taskd_build_info",
                "Always 1; the labels say which build this process runs",
            ),
            &["version"],
        )
        .expect("valid metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        r.register(Box::new(build_info)).expect("unique metric");
        // process_cpu_seconds_total, process_resident_memory_bytes,
        // process_open_fds, process_start_time_seconds … from /proc.
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("unique metric");
        Metrics {
            http_requests: counter(
                &r,
                "taskd_http_requests_total",
                "HTTP requests by route, method and status",
                &["route", "method", "status"],
            ),
            http_latency: histogram(
                &r,
                "taskd_http_request_duration_seconds",
                "HTTP request latency by route and method",
                &["route", "method"],
                secs.clone(),
            ),
            claimed: counter(
                &r,
                "taskd_subtasks_claimed_total",
                "Subtask runs claimed, by className",
                &["class_name"],
            ),
            finished: counter(
                &r,
                "taskd_subtasks_finished_total",
                "Subtask runs whose end was written, by className",
                &["class_name"],
            ),
            failed: counter(
                &r,
                "taskd_subtasks_failed_total",
                "Subtask runs that ended FAILED (retried afterwards or not), by className",
                &["class_name"],
            ),
            retried: counter(
                &r,
                "taskd_subtasks_retried_total",
                "Failed subtask runs retried automatically, by className",
                &["class_name"],
            ),
            timed_out: counter(
                &r,
                "taskd_subtasks_timed_out_total",
                "Subtask runs stopped by their timeout, by className",
                &["class_name"],
            ),
            run_duration: histogram(
                &r,
                "taskd_subtask_run_duration_seconds",
                "Time from a run's start to its end, by className and how it ended \
                 (SUCCESSFUL or FAILED; runs handed back or abandoned are not counted)",
                &["class_name", "status"],
                vec![
                    0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
                ],
            ),
            claim_batch: histogram(
                &r,
                "taskd_claim_batch_size",
                "Subtasks claimed per claim statement",
                &[],
                vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0],
            ),
            handoff: histogram(
                &r,
                "taskd_handoff_latency_seconds",
                "READY to RUNNING latency of claimed runs",
                &[],
                secs,
            ),
            queue_depth,
            heartbeat_age,
            sweeper_recoveries,
            registry: r,
        }
    }

    /// Makes the per-className series exist at 0 for these classNames, so
    /// that a scrape shows them (and rates work) before their first run.
    pub fn touch_classes<'a>(&self, classes: impl IntoIterator<Item = &'a str>) {
        for class in classes {
            let class = class_label(class);
            for c in [
                &self.claimed,
                &self.finished,
                &self.failed,
                &self.retried,
                &self.timed_out,
            ] {
                c.with_label_values(&[class]);
            }
            for status in RUN_ENDS {
                self.run_duration.with_label_values(&[class, status]);
            }
        }
    }

    /// Counts a run of `class_name` that ended after `secs`, successfully
    /// or not.
    pub fn observe_run(&self, class_name: &str, succeeded: bool, secs: f64) {
        let status = RUN_ENDS[usize::from(!succeeded)];
        self.run_duration
            .with_label_values(&[class_label(class_name), status])
            .observe(secs);
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// The `status` label of a run's duration.
const RUN_ENDS: [&str; 2] = ["SUCCESSFUL", "FAILED"];

/// This process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The className without its `?` parameters, as a bounded label.
pub fn class_label(class_name: &str) -> &str {
    class_name.split('?').next().unwrap_or(class_name)
}

/// Refreshes the queue-depth gauge every `every` until `shutdown` fires: one
/// count in the background, never one per scrape.
pub async fn refresh_queue_depth(pool: PgPool, every: Duration, shutdown: CancellationToken) {
    loop {
        match crate::store::subtask::ready_count(&pool).await {
            Ok(n) => METRICS.queue_depth.set(n),
            Err(e) => tracing::debug!(error = %e, "queue depth refresh failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_series_family() {
        METRICS.claimed.with_label_values(&["test.noop"]).inc();
        METRICS.claim_batch.with_label_values(&[]).observe(3.0);
        let text = METRICS.render();
        for name in [
            "taskd_subtasks_claimed_total",
            "taskd_claim_batch_size",
            "taskd_queue_depth",
            "taskd_worker_heartbeat_age_seconds",
            "taskd_sweeper_recoveries_total",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
        assert_eq!(class_label("test.sleep?ms=5"), "test.sleep");
    }

    #[test]
    fn build_and_process_series_and_untouched_classes_are_there_from_the_start() {
        METRICS.touch_classes(["test.never_ran?x=1"]);
        let text = METRICS.render();
        assert!(
            text.contains(&format!(
                "taskd_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
        for name in [
            "process_resident_memory_bytes",
            "process_cpu_seconds_total",
            "process_open_fds",
        ] {
            assert!(text.contains(name), "{name} missing");
        }
        for family in ["claimed", "finished", "failed", "retried", "timed_out"] {
            let series =
                format!("taskd_subtasks_{family}_total{{class_name=\"test.never_ran\"}} 0");
            assert!(text.contains(&series), "{series} missing");
        }
        for status in RUN_ENDS {
            let series = format!(
                "taskd_subtask_run_duration_seconds_count{{class_name=\"test.never_ran\",status=\"{status}\"}} 0"
            );
            assert!(text.contains(&series), "{series} missing");
        }
    }
}
