//! guardwire: a userspace virtual switch that forces every frame of a node's pods
//! and VMs through one inspection pipeline.
//!
//! A frame's path through the crate, top-down:
//! - [`vocab`]: the words every module shares (ids, roles, MACs, modes, drop reasons);
//! - [`port`]: where frames enter and leave (AF_PACKET rings, taps, memory);
//! - [`decide`]: the one decision stage, a burst in and a decision per frame out,
//!   built from [`pipeline`] (where a frame is judged) and [`switch`] (which port
//!   it leaves by: MAC table, split horizon);
//! - [`datapath`]: the worker threads that receive, decide and apply;
//! - [`fastpath`]: the kernel side of settled flows (a tc program and a socket
//!   filter sharing a map), counted back into guardwire;
//! - [`steer`]: kernel plumbing around the ports;
//! - [`control`]: configuration, control socket, the daemon;
//! - [`cluster`]: the node agent and the controller, over etcd.

pub mod cluster;
pub mod control;
pub mod datapath;
pub mod decide;
pub mod fastpath;
pub mod pipeline;
pub mod port;
pub mod steer;
pub mod switch;
pub mod vocab;
