//! The operations endpoint every node serves: `/healthz` (JSON status) and Prometheus `/metrics`
//! (text exposition format), from a closure that reads the node's current figures.

use std::net::SocketAddr;
use std::sync::Arc;

/// One gauge or counter in Prometheus' text format.
#[derive(Debug, Clone)]
pub struct Metric {
    pub name: String,
    pub help: String,
    /// `gauge` or `counter`.
    pub kind: &'static str,
    /// Label pairs, e.g. `[("channel", "medchannel")]`.
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Renders metrics in Prometheus' text exposition format.
pub fn render(metrics: &[Metric]) -> String {
    let mut out = String::new();
    let mut last = "";
    for m in metrics {
        if m.name != last {
            out.push_str(&format!(
                "# HELP {} {}\n# TYPE {} {}\n",
                m.name, m.help, m.name, m.kind
            ));
            last = &m.name;
        }
        let labels = if m.labels.is_empty() {
            String::new()
        } else {
            let inner: Vec<String> = m
                .labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
                .collect();
            format!("{{{}}}", inner.join(","))
        };
        out.push_str(&format!("{}{labels} {}\n", m.name, m.value));
    }
    out
}

/// Serves `/healthz` and `/metrics` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<dyn Fn() -> Vec<Metric> + Send + Sync>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({"status": "OK"})) }),
        )
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4",
                        )],
                        render(&m()),
                    )
                }
            }),
        );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Binds an operations address (`127.0.0.1:9443`).
pub async fn bind(address: &str) -> std::io::Result<(tokio::net::TcpListener, SocketAddr)> {
    let l = tokio::net::TcpListener::bind(address).await?;
    let a = l.local_addr()?;
    Ok((l, a))
}
