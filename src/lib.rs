//! guardwire: a userspace virtual switch that forces every frame of a node's pods
//! and VMs through one inspection pipeline.
//!
//! A frame's path through the crate, top-down:
//! - [`port`]: where frames enter and leave (AF_PACKET rings, taps);
//! - [`pipeline`]: where a frame is judged;
//! - [`switch`]: which port it leaves by (MAC table, split horizon);
//! - [`datapath`]: the worker threads that run port -> pipeline -> switch -> port;
//! - [`steer`]: kernel plumbing around the ports;
//! - [`control`]: configuration, control socket, the daemon;
//! - [`cluster`]: the node agent and the controller, over etcd.

pub mod cluster;
pub mod control;
pub mod datapath;
pub mod decide;
pub mod pipeline;
pub mod port;
pub mod steer;
pub mod switch;
pub mod vocab;
