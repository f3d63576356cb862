//! The control plane: configuration, the HTTP API and the daemon that ties
//! them to the datapath.

pub mod classify;
pub mod config;
pub mod daemon;
pub mod files;
pub mod http;
pub mod inspection;
pub mod record;
pub mod rulebook;
pub mod stats;
pub mod steering;
pub mod watchdog;
