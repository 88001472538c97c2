//! The node's routes: which handler answers which request on which
//! listener, and the request metrics of every answer.

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::{health, ingest, reload, AnsweredFor, Gateway};
use crate::edge::listener::{Peer, Role, Service};
use crate::edge::unread::{Lent, Unread};
use crate::model::{ErrorCode, Reject};
use crate::ops::profile;
use crate::respond::{self, Body, REQUEST_ID};

/// Longest `X-Request-ID` taken from a client.
const MAX_REQUEST_ID: usize = 128;

impl Service for Gateway {
    async fn call(&self, request: Request<Incoming>, peer: Peer, role: Role) -> Response<Body> {
        route(self, request, peer, role).await
    }

    fn open(&self, role: Role) -> impl Send + 'static {
        self.metrics.connection(role == Role::Admin)
    }
}

/// Routes one request and records its metrics. The handler only borrows
/// the body: what it leaves unread is settled before the answer goes out,
/// so that the answer says whether the connection stays open
/// ([`crate::edge::unread`]).
async fn route(
    gateway: &Gateway,
    request: Request<Incoming>,
    peer: Peer,
    role: Role,
) -> Response<Body> {
    let started = std::time::Instant::now();
    let label = match (role, request.uri().path()) {
        (Role::Ingest, "/v1/batch") => "/v1/batch",
        (_, "/healthz") => "/healthz",
        (_, "/readyz") => "/readyz",
        (Role::Admin, "/metrics") => "/metrics",
        (Role::Admin, "/admin/reload") => "/admin/reload",
        (Role::Admin, "/debug/pprof/profile") => "/debug/pprof/profile",
        _ => "other",
    };
    let (parts, mut body) = request.into_parts();
    let unread = Unread::of(&parts);
    let mut lent = Lent::new(&mut body);
    let mut response =
        route_inner(gateway, Request::from_parts(parts, &mut lent), peer, role).await;
    let read = lent.returned();
    unread
        .settle(&mut body, read, &mut response, gateway.body_timeout)
        .await;
    let tenant = response
        .extensions()
        .get::<AnsweredFor>()
        .map(|t| t.0.clone());
    gateway.metrics.request(
        label,
        response.status().as_u16(),
        tenant,
        started.elapsed().as_secs_f64(),
    );
    response
}

async fn route_inner<B>(
    gateway: &Gateway,
    request: Request<B>,
    peer: Peer,
    role: Role,
) -> Response<Body>
where
    B: hyper::body::Body<Data = bytes::Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let request_id = request_id(&request);
    let path = request.uri().path();
    match (role, path, request.method()) {
        (Role::Ingest, "/v1/batch", &Method::POST) => {
            // Boxed: the upload's future is large, and hyper's dispatcher
            // moves the request future it holds; a pointer moves cheaply.
            Box::pin(ingest::ingest(gateway, request, peer, &request_id)).await
        }
        (_, "/healthz", &Method::GET) => health::healthz(gateway, &request_id, role == Role::Admin),
        (_, "/readyz", &Method::GET) => {
            health::readyz(gateway, &request_id, role == Role::Admin).await
        }
        (Role::Admin, "/admin/reload", &Method::POST) => admin_reload(gateway, &request_id),
        (Role::Admin, "/metrics", &Method::GET) => {
            let mut response = Response::new(Body::from(gateway.metrics.render()));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        (Role::Admin, "/debug/pprof/profile", &Method::GET) => {
            profile::profile(request.uri().query(), &request_id).await
        }
        (Role::Admin, "/admin/reload", _) => not_allowed("POST", &request, &request_id),
        (Role::Admin, "/debug/pprof/profile", _) => not_allowed("GET", &request, &request_id),
        (Role::Ingest, "/v1/batch", _) => not_allowed("POST", &request, &request_id),
        (_, "/healthz" | "/readyz", _) => not_allowed("GET", &request, &request_id),
        _ => respond::reject(
            &Reject::new(
                StatusCode::NOT_FOUND,
                ErrorCode::NotFound,
                format!("no route for {} {path}", request.method()),
            ),
            &request_id,
        ),
    }
}

fn admin_reload(gateway: &Gateway, request_id: &str) -> Response<Body> {
    #[derive(serde::Serialize)]
    struct Answer {
        status: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        tenants: Option<usize>,
        #[serde(skip_serializing_if = "Option::is_none")]
        restart_needed: Option<Vec<&'static str>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    }
    match tokio::task::block_in_place(|| reload::reload_logged(gateway)) {
        Ok(reloaded) => respond::json(
            StatusCode::OK,
            &Answer {
                status: "reloaded",
                tenants: Some(reloaded.tenants),
                restart_needed: Some(reloaded.restart_needed),
                error: None,
            },
            request_id,
        ),
        Err(e) => respond::json(
            StatusCode::BAD_REQUEST,
            &Answer {
                status: "rejected",
                tenants: None,
                restart_needed: None,
                error: Some(e),
            },
            request_id,
        ),
    }
}

fn not_allowed<B>(allow: &'static str, request: &Request<B>, request_id: &str) -> Response<Body> {
    let reject = Reject::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::MethodNotAllowed,
        format!(
            "{} {} is not allowed; use {allow}",
            request.method(),
            request.uri().path()
        ),
    )
    .with_header("allow", allow);
    respond::reject(&reject, request_id)
}

/// The client's `X-Request-ID` when it is usable (1 to 128 visible ASCII
/// characters), else a new UUIDv7.
pub fn request_id<B>(request: &Request<B>) -> String {
    request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=MAX_REQUEST_ID).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_graphic())
        })
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().simple().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_taken_only_when_usable() {
        let with = |v: &str| Request::builder().header(REQUEST_ID, v).body(()).unwrap();
        assert_eq!(request_id(&with("abc-123")), "abc-123");
        assert_ne!(request_id(&with("has space")), "has space");
        assert_eq!(request_id(&with(&"x".repeat(129))).len(), 32);
        assert_eq!(request_id(&Request::new(())).len(), 32);
    }
}
