//! The cluster (docs/cluster.md): rule sets typed once at a controller and
//! enforced by every node, through etcd.
//! - [`store`]: the key layout and documents in etcd;
//! - [`agent`]: the node side, run by `guardwire run` under `[cluster]`;
//! - [`controller`]: `guardwire controller`, stateless, its API and page.

pub mod agent;
pub mod controller;
pub mod store;
