//! A node's background tasks: each holds the gateway only while it works,
//! and the node aborts them all before it lets the producer go.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::{reload, Gateway};

/// Starts every background task of a node.
pub(super) fn spawn(gateway: &Arc<Gateway>) -> std::io::Result<Vec<JoinHandle<()>>> {
    let mut tasks = vec![
        tokio::spawn(load_filters(Arc::downgrade(gateway))),
        tokio::spawn(watch_filters(Arc::downgrade(gateway))),
    ];
    if gateway.unauthenticated.is_some() {
        tasks.push(tokio::spawn(prune_addresses(Arc::downgrade(gateway))));
    }
    if gateway.region.is_some() {
        tasks.push(tokio::spawn(sync_quotas(Arc::downgrade(gateway))));
    }
    #[cfg(unix)]
    tasks.push(reload_on_hangup(gateway.clone())?);
    Ok(tasks)
}

/// Filters not compiled in the cache at start are loaded here, while the
/// node serves every tenant that does not use them (theirs are refused,
/// retryable, until then). `filters ready` says when all are in.
async fn load_filters(gateway: std::sync::Weak<Gateway>) {
    let Some(gateway) = gateway.upgrade() else {
        return;
    };
    let slots = gateway.tenants.load().filter_slots();
    let engine = gateway.filters.clone();
    drop(gateway);
    let started = std::time::Instant::now();
    let deferred = slots.iter().filter(|s| s.loading().is_some()).count();
    let failed = tokio::task::spawn_blocking(move || {
        crate::pipeline::filter::load_deferred(&slots, &engine)
    })
    .await
    .unwrap_or(deferred);
    tracing::info!(
        compiled_after_start = deferred,
        failed,
        seconds = started.elapsed().as_secs_f64(),
        "filters ready"
    );
}

/// Filter files are watched: a changed one is compiled off the request
/// path and swapped in; a broken one keeps the previous version.
async fn watch_filters(gateway: std::sync::Weak<Gateway>) {
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    loop {
        ticks.tick().await;
        let Some(gateway) = gateway.upgrade() else {
            return;
        };
        let slots = gateway.tenants.load().filter_slots();
        let engine = gateway.filters.clone();
        drop(gateway);
        let _ = tokio::task::spawn_blocking(move || {
            slots.iter().for_each(|s| s.reload_if_changed(&engine))
        })
        .await;
    }
}

/// Forgets addresses whose unauthenticated limit has recovered, so that the
/// table stays small.
async fn prune_addresses(gateway: std::sync::Weak<Gateway>) {
    let mut ticks = tokio::time::interval(Duration::from_secs(60));
    while let Some(gateway) = {
        ticks.tick().await;
        gateway.upgrade()
    } {
        if let Some(u) = &gateway.unauthenticated {
            u.prune();
        }
    }
}

/// Region-wide quotas, every `quotas.sync_ms`: the heartbeat (which counts
/// the live nodes, and brings the node back to region-wide limits once an
/// unreachable Redis answers), then budget unused for a whole period goes
/// back to the region.
async fn sync_quotas(gateway: std::sync::Weak<Gateway>) {
    let Some(every) = gateway
        .upgrade()
        .and_then(|g| g.region.as_ref().map(|r| r.sync_every))
    else {
        return;
    };
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await; // the node synced once at start
    while let Some(gateway) = {
        ticks.tick().await;
        gateway.upgrade()
    } {
        let Some(region) = gateway.region.clone() else {
            return;
        };
        region.sync().await;
        if region.synced() {
            for quotas in gateway.tenants.load().quotas() {
                quotas.give_back_idle(every).await;
            }
        }
    }
}

/// SIGHUP reloads tenants, keys, limits and filters (and warns of changed
/// sections that take a restart).
#[cfg(unix)]
fn reload_on_hangup(gateway: Arc<Gateway>) -> std::io::Result<JoinHandle<()>> {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        while hup.recv().await.is_some() {
            // Compiling filters blocks: not on an async worker.
            let gateway = gateway.clone();
            let _ = tokio::task::spawn_blocking(move || reload::reload_logged(&gateway)).await;
        }
    }))
}
