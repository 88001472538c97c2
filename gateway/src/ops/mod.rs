//! Operating a node: how it shows itself. [`metrics`] (the golden signals,
//! Prometheus and OTLP), [`trace`] (OpenTelemetry tracing and the log
//! lines), [`otlp`] (export to a collector), [`profile`] (CPU profiles on
//! demand).

pub mod metrics;
pub mod otlp;
pub mod profile;
pub mod stage;
#[cfg(test)]
pub mod testing;
pub mod trace;
