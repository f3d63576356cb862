//! The control plane: configuration, the control socket and the daemon that ties
//! them to the datapath.

pub mod api;
pub mod classify;
pub mod config;
pub mod daemon;
pub mod inspection;
pub mod record;
pub mod stats;
pub mod steering;
pub mod watchdog;
