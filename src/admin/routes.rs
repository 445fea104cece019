//! The admin server's routes: one table ([`ROUTES`]) that both dispatches
//! requests and is checked against the OpenAPI document, and the token
//! check in front of it.

use super::http::{full, Answer, ApiError, Body};
use super::{api, events, metrics, platform, Admin};
use hyper::body::Incoming;
use hyper::header::AUTHORIZATION;
use hyper::{Method, Request, Response, StatusCode};
use std::rc::Rc;

/// What the server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Dashboard,
    OpenApi,
    Metrics,
    Summary,
    Queues,
    Queue,
    Actions,
    EndAction,
    Suspend,
    Resume,
    Bounce,
    Reroute,
    Override,
    Reload,
    Message,
    Messages,
    Events,
    Suppressions,
    Suppress,
    Unsuppress,
    /// On the injection listener only.
    Inject,
    /// On the injection listener only; authenticated by its signed token,
    /// not a bearer token (mailbox providers send it, RFC 8058).
    Unsubscribe,
}

impl Route {
    /// Whether the injection listener serves this route (and the admin
    /// listener does not).
    pub fn injection(self) -> bool {
        matches!(self, Route::Inject | Route::Unsubscribe)
    }
}

/// (method, path with `{param}`s, route). Changes (every method but GET)
/// need a token.
pub const ROUTES: &[(&str, &str, Route)] = &[
    ("GET", "/", Route::Dashboard),
    ("GET", "/api/v1/openapi.json", Route::OpenApi),
    ("GET", "/metrics", Route::Metrics),
    ("GET", "/api/v1/summary", Route::Summary),
    ("GET", "/api/v1/queues", Route::Queues),
    ("GET", "/api/v1/queues/{domain}", Route::Queue),
    ("GET", "/api/v1/actions", Route::Actions),
    ("DELETE", "/api/v1/actions/{id}", Route::EndAction),
    ("POST", "/api/v1/suspend", Route::Suspend),
    ("DELETE", "/api/v1/suspend/{id}", Route::Resume),
    ("POST", "/api/v1/bounce", Route::Bounce),
    ("POST", "/api/v1/reroute", Route::Reroute),
    ("PUT", "/api/v1/overrides", Route::Override),
    ("POST", "/api/v1/shaping/reload", Route::Reload),
    ("GET", "/api/v1/messages/{id}", Route::Message),
    ("GET", "/api/v1/messages", Route::Messages),
    ("GET", "/api/v1/events", Route::Events),
    ("GET", "/api/v1/suppression", Route::Suppressions),
    ("POST", "/api/v1/suppression", Route::Suppress),
    ("DELETE", "/api/v1/suppression/{address}", Route::Unsuppress),
    ("POST", "/api/v1/inject", Route::Inject),
    ("POST", "/u/{token}", Route::Unsubscribe),
];

pub const OPENAPI: &str = include_str!("openapi.json");
const DASHBOARD: &str = include_str!("dashboard.html");

/// A request, taken apart.
pub struct Call {
    pub route: Route,
    /// The path's `{param}`, if the route has one.
    pub param: String,
    pub query: Vec<(String, String)>,
    /// The token's name (changes only).
    pub by: String,
    pub body: bytes::Bytes,
    /// The client's IP address.
    pub peer: String,
}

impl Call {
    /// The `limit` query parameter: `default` when absent, else 1 to `max`.
    pub fn limit(&self, default: usize, max: usize) -> Result<usize, ApiError> {
        match self.query("limit") {
            None => Ok(default),
            Some(n) => n
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| ApiError::bad(format!("limit is 1 to {max}"))),
        }
    }

    pub fn query(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Finds the route of `method` and `path`, and its parameter.
fn find(method: &Method, path: &str, injection: bool) -> Result<(Route, String), ApiError> {
    let mut path_known = false;
    for (m, pattern, route) in ROUTES {
        if route.injection() != injection {
            continue;
        }
        let Some(param) = matches(pattern, path) else {
            continue;
        };
        path_known = true;
        if method.as_str() == *m {
            return Ok((*route, param));
        }
    }
    Err(if path_known {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed here"),
        )
    } else {
        ApiError::not_found(format!("no such route: {path}"))
    })
}

/// The parameter if `path` fits `pattern` (empty when it has none).
fn matches(pattern: &str, path: &str) -> Option<String> {
    match pattern.split_once('{') {
        None => (pattern == path).then(String::new),
        Some((prefix, _)) => {
            let rest = path.strip_prefix(prefix)?;
            (!rest.is_empty() && !rest.contains('/')).then(|| percent_decode(rest))
        }
    }
}

fn percent_decode(s: &str) -> String {
    form_urlencoded::parse(format!("x={s}").replace('+', "%2B").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

pub async fn handle(admin: &Rc<Admin>, req: Request<Incoming>, peer: &str) -> Response<Body> {
    match call(admin, req, peer).await {
        Ok(r) => r,
        Err(e) => e.response(),
    }
}

async fn call(admin: &Rc<Admin>, req: Request<Incoming>, peer: &str) -> Answer {
    let (route, param) = find(req.method(), req.uri().path(), admin.injector.is_some())?;
    let changes = req.method() != Method::GET && route != Route::Unsubscribe;
    let authorization = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let who = admin.tokens.who(authorization).map(str::to_string);
    if (changes || admin.reads_need_token) && who.is_none() {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "a valid bearer token is needed (Authorization: Bearer TOKEN)",
        ));
    }
    let query = req
        .uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let body = if req.method() != Method::GET {
        let max = match route {
            Route::Inject => admin.control.core().cfg.platform.inject.max_request_bytes,
            _ => super::BODY_BYTES_MAX,
        };
        read_body(req.into_body(), max).await?
    } else {
        bytes::Bytes::new()
    };
    let call = Call {
        route,
        param,
        query,
        by: who.unwrap_or_default(),
        body,
        peer: peer.to_string(),
    };
    dispatch(admin, call).await
}

async fn read_body(body: Incoming, max: usize) -> Result<bytes::Bytes, ApiError> {
    use http_body_util::BodyExt;
    let limited = http_body_util::Limited::new(body, max);
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body: {e} (at most {max} bytes)"),
        )),
    }
}

async fn dispatch(admin: &Rc<Admin>, call: Call) -> Answer {
    match call.route {
        Route::Dashboard => Ok(full(StatusCode::OK, "text/html; charset=utf-8", DASHBOARD)),
        Route::OpenApi => Ok(full(StatusCode::OK, "application/json", OPENAPI)),
        Route::Metrics => metrics::render(admin).await,
        Route::Events => events::stream(admin, &call).await,
        Route::Summary => api::summary(admin).await,
        Route::Queues => api::queues(admin, &call).await,
        Route::Queue => api::queue(admin, &call).await,
        Route::Actions => api::actions(admin).await,
        Route::EndAction => api::end_action(admin, &call, None).await,
        Route::Resume => api::end_action(admin, &call, Some("suspend")).await,
        Route::Suspend | Route::Reroute | Route::Override => api::act(admin, &call).await,
        Route::Bounce => api::bounce(admin, &call).await,
        Route::Reload => api::reload(admin, &call).await,
        Route::Message | Route::Messages => api::trace(admin, &call).await,
        Route::Suppressions => platform::list(admin, &call),
        Route::Suppress => platform::suppress(admin, &call).await,
        Route::Unsuppress => platform::unsuppress(admin, &call).await,
        Route::Inject => platform::inject(admin, &call).await,
        Route::Unsubscribe => platform::unsubscribe(admin, &call).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_find_their_routes_and_parameters() {
        let (r, p) = find(&Method::GET, "/api/v1/queues/example.com", false).unwrap();
        assert_eq!((r, p.as_str()), (Route::Queue, "example.com"));
        assert_eq!(
            find(&Method::GET, "/api/v1/queues", false).unwrap().0,
            Route::Queues
        );
        let e = find(&Method::POST, "/api/v1/queues", false).unwrap_err();
        assert_eq!(e.status, StatusCode::METHOD_NOT_ALLOWED);
        let e = find(&Method::GET, "/api/v1/queues/a/b", false).unwrap_err();
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        let (_, p) = find(&Method::GET, "/api/v1/messages/%41b", false).unwrap();
        assert_eq!(p, "Ab");
        // Each listener answers only its own routes.
        let e = find(&Method::POST, "/api/v1/inject", false).unwrap_err();
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        assert_eq!(
            find(&Method::POST, "/api/v1/inject", true).unwrap().0,
            Route::Inject
        );
        let e = find(&Method::GET, "/api/v1/summary", true).unwrap_err();
        assert_eq!(e.status, StatusCode::NOT_FOUND);
    }

    /// Every route the server answers is in the OpenAPI document, with
    /// its method, and the document has no route the server lacks.
    #[test]
    fn the_openapi_document_and_the_routes_agree() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let mut documented = Vec::new();
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for method in ops.as_object().unwrap().keys() {
                if ["get", "post", "put", "delete", "patch", "head"].contains(&method.as_str()) {
                    documented.push((method.to_uppercase(), path.clone()));
                }
            }
        }
        let mut served: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(m, p, _)| (m.to_string(), p.to_string()))
            .collect();
        documented.sort();
        served.sort();
        assert_eq!(documented, served);
    }
}
