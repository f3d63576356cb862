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
        routes::whoami, routes::node, routes::health, routes::ready, routes::cluster, routes::stats, routes::macs,
        routes::workloads, routes::workload, routes::attach_pod, routes::attach_vm, routes::detach,
        routes::set_mode, routes::rules, routes::validate, routes::push, routes::history,
        routes::rollback, routes::log, routes::flows, routes::log_stream, routes::usage,
    ),
    modifiers(&Bearer, &EveryAnswer),
    components(schemas(types::ApiError)),
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

/// Answers any operation can give, added to each: no or a bad token (401), too
/// many requests from one address (429), a handler that failed (500). They are
/// real answers of every endpoint, so a client generated from the document
/// expects them.
struct EveryAnswer;

impl utoipa::Modify for EveryAnswer {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let answer = |what: &str| {
            ResponseBuilder::new()
                .description(what)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ApiError")))
                        .build(),
                )
                .build()
        };
        for item in doc.paths.paths.values_mut() {
            let ops = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
            ];
            for op in ops.into_iter().flatten() {
                let r = &mut op.responses.responses;
                for (code, what) in [
                    ("401", "no token, or a token that is not valid"),
                    ("429", "too many requests from this address"),
                    ("500", "the request failed inside guardwire (logged)"),
                ] {
                    r.entry(code.to_string())
                        .or_insert_with(|| answer(what).into());
                }
            }
        }
    }
}
