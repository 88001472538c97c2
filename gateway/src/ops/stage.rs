//! One stage of a request as telemetry sees it: its span (a child of the
//! request span, recorded only for sampled requests: see [`crate::stage_span`])
//! and its latency in `weir_stage_duration_seconds`. The handler wraps each
//! stage in one of these instead of interleaving timers and records with
//! the stage's work.

use std::future::Future;
use std::time::Instant;

use tracing::Instrument;

use crate::model::Reject;
use crate::ops::metrics::{Metrics, Stage};

/// A stage's span and, when it has one, its latency metric.
pub struct StageRun<'m> {
    pub span: tracing::Span,
    timer: Option<(&'m Metrics, Stage)>,
}

impl<'m> StageRun<'m> {
    /// A stage with a span only.
    pub fn new(span: tracing::Span) -> StageRun<'m> {
        StageRun { span, timer: None }
    }

    /// A stage with a span, timed into `stage`'s latency.
    pub fn timed(span: tracing::Span, metrics: &'m Metrics, stage: Stage) -> StageRun<'m> {
        StageRun {
            span,
            timer: Some((metrics, stage)),
        }
    }

    /// Runs `work` inside the span, timed.
    pub fn run<T>(&self, work: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let out = self.span.in_scope(work);
        self.record(started);
        out
    }

    /// Runs `work`, which may refuse the request: a refusal marks the span as
    /// where it was refused.
    pub fn try_run<T>(&self, work: impl FnOnce() -> Result<T, Reject>) -> Result<T, Reject> {
        self.run(work).inspect_err(|reject| self.refused(reject))
    }

    /// [`StageRun::run`] for a stage that waits.
    pub async fn run_async<T>(&self, work: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let out = work.instrument(self.span.clone()).await;
        self.record(started);
        out
    }

    /// [`StageRun::try_run`] for a stage that waits.
    pub async fn try_run_async<T>(
        &self,
        work: impl Future<Output = Result<T, Reject>>,
    ) -> Result<T, Reject> {
        self.run_async(work)
            .await
            .inspect_err(|reject| self.refused(reject))
    }

    fn record(&self, started: Instant) {
        if let Some((metrics, stage)) = self.timer {
            metrics.stage(stage, started.elapsed().as_secs_f64());
        }
    }

    fn refused(&self, reject: &Reject) {
        self.span.record("error.type", reject.error.as_str());
    }
}
