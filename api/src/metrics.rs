//! `GET /api/v1/metrics` (admin): Prometheus text format (OpenMetrics) from prometheus-client.
//! The mail engine's counters are registered as they are; API requests are counted here by
//! route template, method and status; the firewall's lists, bans and blocklists and the
//! outbound queue's depth are read when scraped.

use std::sync::{Arc, PoisonError};

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use wispd_firewall::{Firewall, ListKind};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::Admin;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    /// The route template (`/api/v1/email/accounts/{id}`), never the raw path: bounded.
    route: String,
    method: String,
    status: u16,
}

/// The registry the binary builds once, and the API's own counters.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
}

impl Metrics {
    /// Everything `/api/v1/metrics` serves: the mail engine's metrics, the API's requests, and
    /// what the firewall and the queue hold when scraped.
    pub fn new(
        mail: &wispd_engine::metrics::MailMetrics,
        firewall: Arc<Firewall>,
        queue: Arc<wispd_engine::queue::Queue>,
    ) -> Metrics {
        let mut registry = Registry::default();
        mail.register(&mut registry);
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "wispd_api_requests",
            "API requests, by route template, method and status",
            requests.clone(),
        );
        registry.register_collector(Box::new(Scraped { firewall, queue }));
        Metrics { registry, requests }
    }

    fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Counts every request under its route template (unknown routes as `unmatched`).
pub async fn count(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let method = req.method().as_str().to_string();
    let resp = next.run(req).await;
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            route,
            method,
            status: resp.status().as_u16(),
        })
        .inc();
    resp
}

/// The metrics in Prometheus text format (OpenMetrics 1.0).
#[utoipa::path(
    get,
    path = "/api/v1/metrics",
    operation_id = "metrics",
    tag = "system",
    security(("bearer" = ["admin"])),
    responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String))
)]
pub async fn get(State(state): State<AppState>, _admin: Admin) -> Result<Response, ApiError> {
    let metrics = state.metrics.clone();
    let text = tokio::task::spawn_blocking(move || metrics.encode())
        .await?
        .map_err(|e| ApiError::Internal(format!("encoding metrics: {e}")))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ListLabel {
    list: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SourceLabel {
    source: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct NameLabel {
    name: String,
}

/// What is read from the firewall and the queue on each scrape.
#[derive(Debug)]
struct Scraped {
    firewall: Arc<Firewall>,
    queue: Arc<wispd_engine::queue::Queue>,
}

impl Collector for Scraped {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let fw = &self.firewall;
        let depth = self.queue.list().map_or(0, |q| q.len());
        let gauge = ConstGauge::new(i64::try_from(depth).unwrap_or(i64::MAX));
        gauge.encode(encoder.encode_descriptor(
            "wispd_queue_depth",
            "Messages waiting in the outbound queue",
            None,
            gauge.metric_type(),
        )?)?;

        let mut lists = encoder.encode_descriptor(
            "wispd_firewall_list_entries",
            "Live entries of the blacklist and the whitelist",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (kind, list) in [
            (ListKind::Black, "blacklist"),
            (ListKind::White, "whitelist"),
        ] {
            let n = fw.list(kind).map_or(0, |l| l.len());
            ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX))
                .encode(lists.encode_family(&ListLabel { list })?)?;
        }

        let bans: Vec<(&'static str, u64)> = fw
            .counters()
            .bans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect();
        let mut bans_enc = encoder.encode_descriptor(
            "wispd_firewall_bans",
            "Blacklist entries added, by source",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (source, n) in bans {
            ConstCounter::new(n).encode(bans_enc.encode_family(&SourceLabel { source })?)?;
        }

        let blocklists = fw.blocklists().unwrap_or_default();
        let mut sizes = encoder.encode_descriptor(
            "wispd_blocklist_entries",
            "Entries loaded from each blocklist",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for b in &blocklists {
            ConstGauge::new(i64::try_from(b.entry_count).unwrap_or(i64::MAX)).encode(
                sizes.encode_family(&NameLabel {
                    name: b.name.clone(),
                })?,
            )?;
        }
        let errors: Vec<(String, u64)> = fw
            .counters()
            .blocklist_errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        let mut errs = encoder.encode_descriptor(
            "wispd_blocklist_refresh_errors",
            "Failed blocklist refreshes since start, by list",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (name, n) in errors {
            ConstCounter::new(n).encode(errs.encode_family(&NameLabel { name })?)?;
        }
        Ok(())
    }
}
