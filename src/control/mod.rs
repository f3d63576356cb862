//! The control plane: configuration, the control socket and the daemon that ties
//! them to the datapath.

pub mod api;
pub mod config;
pub mod daemon;
pub mod stats;
pub mod steering;
pub mod watchdog;
