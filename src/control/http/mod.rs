//! The node's management plane: one versioned HTTP API (`/api/v1`), the only
//! control interface there is. The CLI and `guardwire-cni` are its clients
//! (over the Unix socket); the web page and Prometheus read it over the
//! optional TCP management address.
//!
//! - [`types`]: requests and answers, shared by server and clients;
//! - [`routes`]: the handlers; [`extract`]: bodies and queries refused by field;
//! - [`auth`]: tokens, roles, client certificates, rate limits;
//! - [`server`]: listeners and connection limits; [`client`]: the client side;
//! - [`metrics`]: `/metrics`; [`page`]: the embedded web page.

pub mod auth;
pub mod client;
pub mod error;
pub mod extract;
pub mod metrics;
pub mod page;
pub mod routes;
pub mod server;
pub mod types;

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};

/// The OpenAPI document served at `/api/v1/openapi.json`.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "guardwire node API", description = "Every verb of a guardwire node: workloads and steering modes, rules, the verdict log, flows, usage, counters."),
    paths(
        routes::whoami, routes::node, routes::health, routes::ready, routes::stats, routes::macs,
        routes::workloads, routes::workload, routes::attach_pod, routes::attach_vm, routes::detach,
        routes::set_mode, routes::rules, routes::validate, routes::push, routes::history,
        routes::rollback, routes::log, routes::flows, routes::log_stream, routes::usage,
    ),
    modifiers(&Bearer),
    security(("bearer" = [])),
    tags(
        (name = "node", description = "the node and its datapath"),
        (name = "workloads", description = "attach, detach, steering modes"),
        (name = "rules", description = "the rule set, its history and rollback"),
        (name = "traffic", description = "the verdict log, live flows, usage windows"),
    )
)]
pub struct ApiDoc;

struct Bearer;

impl utoipa::Modify for Bearer {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let c = doc.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}
