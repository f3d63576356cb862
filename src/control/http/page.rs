//! The web pages of a node and of the controller (the patent's Fig. 8
//! management plane): three files each, plus the script and style both pages
//! share, embedded in the binary, served with a policy that lets them load nothing
//! from anywhere else.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");
const COMMON_JS: &str = include_str!("assets/common.js");
const COMMON_CSS: &str = include_str!("assets/common.css");
const CTL_INDEX: &str = include_str!("../../cluster/controller/assets/index.html");
const CTL_JS: &str = include_str!("../../cluster/controller/assets/app.js");
const CTL_CSS: &str = include_str!("../../cluster/controller/assets/app.css");

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// `/`
pub async fn index() -> Response {
    asset(INDEX, "text/html; charset=utf-8")
}

/// `/assets/app.js`
pub async fn app_js() -> Response {
    asset(APP_JS, "text/javascript; charset=utf-8")
}

/// `/assets/app.css`
pub async fn app_css() -> Response {
    asset(APP_CSS, "text/css; charset=utf-8")
}

/// `/assets/common.js`, on both servers: what both pages' scripts share
pub async fn common_js() -> Response {
    asset(COMMON_JS, "text/javascript; charset=utf-8")
}

/// `/assets/common.css`, on both servers: what both pages' styles share
pub async fn common_css() -> Response {
    asset(COMMON_CSS, "text/css; charset=utf-8")
}

/// The controller's `/`
pub async fn controller_index() -> Response {
    asset(CTL_INDEX, "text/html; charset=utf-8")
}

/// The controller's `/assets/app.js`
pub async fn controller_js() -> Response {
    asset(CTL_JS, "text/javascript; charset=utf-8")
}

/// The controller's `/assets/app.css`
pub async fn controller_css() -> Response {
    asset(CTL_CSS, "text/css; charset=utf-8")
}
