//! The HTTP API on `--http`: read-only JSON in the shapes of the CLI's
//! `--json`, the event stream as server-sent events, Prometheus metrics,
//! and the status page.
//!
//! # Layout
//! - `mod.rs`: routes, the bearer token check, and the server.
//! - `metrics.rs`: `/metrics`.
//! - `status.html`: the page at `/`, embedded in the binary.

pub(crate) mod metrics;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use futures_util::Stream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast};
use tracing::warn;

use crate::control::protocol::{RequestBody, Response as Answer};
use crate::control::server::{self, ControlState};
use crate::events::EventLine;
use crate::output;

/// Event streams open at once; more get 503.
const MAX_STREAMS: usize = 64;

/// The status page.
const PAGE: &str = include_str!("status.html");

/// What the routes answer from.
pub(crate) struct HttpState {
    control: Arc<ControlState>,
    /// Every request must carry it, when set.
    token: Option<String>,
    streams: Arc<Semaphore>,
}

impl HttpState {
    /// Routes answered from `control`, guarded by `token` when given.
    pub(crate) fn new(control: Arc<ControlState>, token: Option<String>) -> Self {
        Self {
            control,
            token,
            streams: Arc::new(Semaphore::new(MAX_STREAMS)),
        }
    }
}

/// The routes.
pub(crate) fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/v1/members", get(members))
        .route("/v1/services", get(services))
        .route("/v1/services/{name}", get(service))
        .route("/v1/events", get(events))
        .route("/v1/events/recent", get(recent_events))
        .route("/v1/health", get(health))
        .route("/metrics", get(metrics_text))
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .with_state(state)
}

/// Serves the API on `listener` until the task is dropped.
pub(crate) async fn serve(listener: tokio::net::TcpListener, state: Arc<HttpState>) {
    if let Err(e) = axum::serve(listener, router(state)).await {
        warn!(error = %e, "http server ended");
    }
}

/// Refuses a request without the token: `Authorization: Bearer TOKEN`,
/// or `?token=TOKEN` (a browser's `EventSource` cannot set a header).
async fn auth(State(state): State<Arc<HttpState>>, request: Request, next: Next) -> Response {
    let Some(token) = &state.token else {
        return next.run(request).await;
    };
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let query = request
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=")));
    if bearer
        .or(query)
        .is_some_and(|t| same(t.as_bytes(), token.as_bytes()))
    {
        next.run(request).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "this agent's HTTP API needs its bearer token (--http-token)\n",
        )
            .into_response()
    }
}

/// Equality in time independent of where the bytes differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn json(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body + "\n").into_response()
}

fn failed(message: String) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, message + "\n").into_response()
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn members(State(state): State<Arc<HttpState>>) -> Response {
    match server::answer(RequestBody::Members, &state.control).await {
        Answer::Members(members) => json(output::members_json(&members)),
        other => failed(format!("{other:?}")),
    }
}

async fn services(State(state): State<Arc<HttpState>>) -> Response {
    match server::answer(RequestBody::Services, &state.control).await {
        Answer::Services(services) => json(output::services_json(&services)),
        other => failed(format!("{other:?}")),
    }
}

async fn service(State(state): State<Arc<HttpState>>, Path(name): Path<String>) -> Response {
    match server::answer(RequestBody::Services, &state.control).await {
        Answer::Services(services) => match services.iter().find(|s| s.name == name) {
            Some(s) => json(output::status_json(s)),
            None => (
                StatusCode::NOT_FOUND,
                format!("no service named {name:?}\n"),
            )
                .into_response(),
        },
        other => failed(format!("{other:?}")),
    }
}

/// 200 once this agent caught up with the cluster (or found itself
/// alone), 503 before.
async fn health(State(state): State<Arc<HttpState>>) -> Response {
    let node = state.control.membership.local().name.clone();
    match state.control.table.read(|n| n.converged()).await {
        Ok(true) => json(serde_json::json!({"status": "ok", "node": node}).to_string()),
        Ok(false) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json(serde_json::json!({"status": "joining", "node": node}).to_string()),
        )
            .into_response(),
        Err(e) => failed(e.to_string()),
    }
}

async fn metrics_text(State(state): State<Arc<HttpState>>) -> Response {
    let me = state.control.membership.local().name.clone();
    let facts = state
        .control
        .table
        .read(move |n| {
            let table = n.table();
            let mut instances = BTreeMap::new();
            let mut restarts = 0;
            for (_, _, _, status) in table.statuses_of(&me) {
                *instances.entry(status.state.as_str()).or_insert(0) += 1;
                restarts += u64::from(status.restarts);
            }
            let stats = n.stats();
            metrics::TableFacts {
                instances,
                restarts,
                slots: table.load(&me) as i64,
                services: table
                    .services()
                    .filter(|(_, _, s)| s.spec.is_some())
                    .count() as i64,
                passes: (stats.full_passes, stats.partial_passes),
            }
        })
        .await;
    let facts = match facts {
        Ok(facts) => facts,
        Err(e) => return failed(e.to_string()),
    };
    match metrics::render(&state.control, &facts) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            )],
            text,
        )
            .into_response(),
        Err(e) => failed(e.to_string()),
    }
}

/// The last events, as a JSON array (what the status page polls: a page
/// that holds a stream open never finishes loading for a headless
/// browser, and a poll needs no reconnect logic).
async fn recent_events(State(state): State<Arc<HttpState>>) -> Response {
    let (recent, _) = state.control.events.subscribe();
    json(serde_json::to_string(&recent).unwrap_or_default())
}

/// The event stream: the recent events, then each as it happens.
async fn events(State(state): State<Arc<HttpState>>) -> Response {
    let Ok(permit) = state.streams.clone().try_acquire_owned() else {
        return failed(format!("{MAX_STREAMS} event streams are open already"));
    };
    let (recent, rx) = state.control.events.subscribe();
    Sse::new(event_stream(recent, rx, permit))
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn event_stream(
    recent: Vec<EventLine>,
    rx: broadcast::Receiver<EventLine>,
    permit: OwnedSemaphorePermit,
) -> impl Stream<Item = Result<Event, Infallible>> {
    use broadcast::error::RecvError;
    let sse = |line: &EventLine| {
        Event::default()
            .id(line.seq.to_string())
            .data(output::event_json(line))
    };
    futures_util::stream::unfold(
        (recent.into_iter(), rx, permit),
        move |(mut recent, mut rx, permit)| async move {
            if let Some(line) = recent.next() {
                return Some((Ok(sse(&line)), (recent, rx, permit)));
            }
            let event = match rx.recv().await {
                Ok(line) => sse(&line),
                Err(RecvError::Lagged(n)) => Event::default().event("missed").data(n.to_string()),
                Err(RecvError::Closed) => return None,
            };
            Some((Ok(event), (recent, rx, permit)))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::same;

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT"));
        assert!(!same(b"secret", b"secret2"));
        assert!(!same(b"", b"x"));
    }
}
