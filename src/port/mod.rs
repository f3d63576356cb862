//! Where frames enter and leave guardwire.
//!
//! A [`Port`] receives bursts of frames and sends bursts of frames. Two real kinds
//! exist: [`PacketPort`], an AF_PACKET socket with an mmap RX ring on a veth or a
//! tap's netdev, and [`TapPort`], a tap file descriptor held the way QEMU holds one.
//! Both speak the same 10-byte virtio-net header ([`VnetHdr`]) so GSO super-frames
//! cross guardwire intact. [`PcapPort`] and [`FaultPort`] wrap any port, the way
//! smoltcp's `Tracer` and `FaultInjector` wrap a `Device`; [`MemoryPort`] is a
//! port in memory, like smoltcp's `Loopback`, for tests without root.

mod fault;
mod memory;
mod packet;
mod pcap;
mod tap;
pub mod vnet;

pub use fault::{FaultConfig, FaultPort};
pub use memory::{MemoryFrame, MemoryPort};
pub use packet::{PacketPort, PacketPortOptions, RING_FRAME_SIZE, RING_FRAME_SIZE_MAX};
pub use pcap::PcapPort;
pub use tap::TapPort;
pub use vnet::{VNET_HDR_LEN, VnetHdr};

use std::io;
use std::marker::PhantomData;
use std::os::fd::RawFd;

/// Largest frame a port hands out or accepts: a 64 KiB GSO super-frame plus its
/// Ethernet and VLAN headers.
pub const MAX_FRAME: usize = 65_535 + 14 + 4;

/// An 802.1Q/802.1ad tag that the kernel took out of the frame on receive and that
/// has to be put back on send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VlanTag {
    /// Tag protocol identifier: 0x8100 (802.1Q) or 0x88a8 (802.1ad).
    pub tpid: u16,
    /// Priority, drop-eligible bit and VLAN id.
    pub tci: u16,
}

impl VlanTag {
    /// The four bytes of the tag as they stand in the frame.
    pub fn to_bytes(self) -> [u8; 4] {
        let p = self.tpid.to_be_bytes();
        let t = self.tci.to_be_bytes();
        [p[0], p[1], t[0], t[1]]
    }
}

/// One frame of a burst: a view into the port's receive buffer (ring slot or pool
/// buffer), valid for the duration of the burst callback only.
#[derive(Clone, Copy)]
pub struct Frame<'a> {
    ptr: *const u8,
    len: usize,
    /// The virtio-net header that came with the frame (all zero for a plain frame).
    pub vnet: VnetHdr,
    /// A tag the kernel stripped on receive, re-inserted on send.
    pub vlan: Option<VlanTag>,
    _buf: PhantomData<&'a [u8]>,
}

impl<'a> Frame<'a> {
    /// A frame over `data`.
    pub fn new(data: &'a [u8], vnet: VnetHdr, vlan: Option<VlanTag>) -> Self {
        // SAFETY: `data` is borrowed for 'a, the frame's own lifetime.
        unsafe { Frame::over(data, vnet, vlan) }
    }

    /// A frame over memory that outlives no particular borrow (a ring slot or a
    /// pool buffer kept in a reusable burst vector).
    ///
    /// # Safety
    /// `data` must stay valid and unchanged for as long as the frame (or any copy
    /// of it) is used: in practice, until the burst callback returns.
    pub(crate) unsafe fn from_raw(
        data: &[u8],
        vnet: VnetHdr,
        vlan: Option<VlanTag>,
    ) -> Frame<'static> {
        // SAFETY: the caller keeps `data` alive while the frame is used.
        unsafe { Frame::over(data, vnet, vlan) }
    }

    /// # Safety
    /// `data` must outlive every use of the returned frame.
    unsafe fn over<'b>(data: &[u8], vnet: VnetHdr, vlan: Option<VlanTag>) -> Frame<'b> {
        Frame {
            ptr: data.as_ptr(),
            len: data.len(),
            vnet,
            vlan,
            _buf: PhantomData,
        }
    }

    /// The Ethernet frame, starting at the destination MAC, without any stripped tag.
    pub fn data(&self) -> &'a [u8] {
        // SAFETY: `ptr`/`len` come from a slice that outlives 'a (see the
        // constructors), and nothing else can set them.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// Bytes on the wire once the stripped tag is back in.
    pub fn wire_len(&self) -> usize {
        self.len + if self.vlan.is_some() { 4 } else { 0 }
    }

    /// Is this a GSO super-frame that the next hop will segment?
    pub fn is_gso(&self) -> bool {
        self.vnet.is_gso()
    }
}

/// What a burst send did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendReport {
    /// Frames the kernel took.
    pub sent: usize,
    /// Bytes of those frames.
    pub bytes: u64,
    /// Frames refused because the socket or device was full (EAGAIN/ENOBUFS).
    pub busy: usize,
    /// Frames refused for any other reason (EMSGSIZE, ENETDOWN, EINVAL...).
    pub failed: usize,
}

impl SendReport {
    /// Adds another report into this one.
    pub fn add(&mut self, other: SendReport) {
        self.sent += other.sent;
        self.bytes += other.bytes;
        self.busy += other.busy;
        self.failed += other.failed;
    }
}

/// Counters the kernel keeps for a port (PACKET_STATISTICS for packet sockets).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelStats {
    /// Frames the kernel queued to the ring since the last read.
    pub packets: u64,
    /// Frames the kernel dropped because the ring was full since the last read.
    pub drops: u64,
    /// Frames that did not fit a ring slot whole and were discarded, never forwarded cut.
    pub truncated: u64,
    /// Frames too big for a ring slot that were read whole from the socket instead.
    pub copied: u64,
}

/// The receive callback: one burst of frames, valid only during the call.
pub type BurstFn<'f> = dyn FnMut(&[Frame<'_>]) + 'f;

/// A port: one interface guardwire owns in sec ns.
///
/// Exactly one thread (the worker that owns the port) calls [`Port::recv_burst`];
/// any thread may call [`Port::send_burst`] (the kernel serialises sends per socket).
pub trait Port: Send + Sync {
    /// Interface name, as in sec ns.
    fn name(&self) -> &str;
    /// The descriptor to register for readability (edge-triggered).
    fn fd(&self) -> RawFd;
    /// Hands up to `max` received frames to `f` as one burst, then gives their
    /// buffers back. Returns how many frames the burst held (0: nothing waiting).
    fn recv_burst(&self, max: usize, f: &mut BurstFn<'_>) -> io::Result<usize>;
    /// Most frames one [`Port::recv_burst`] can hand out (a ring's slots, a
    /// tap's buffers): a burst this full may leave more waiting.
    fn burst_limit(&self) -> usize {
        usize::MAX
    }
    /// Sends the frames `pick` selects from `frames`, in order.
    fn send_burst(&self, frames: &[Frame<'_>], pick: &[u16]) -> SendReport;
    /// Reads (and resets) the kernel-side counters.
    fn kernel_stats(&self) -> KernelStats {
        KernelStats::default()
    }
    /// Filters the socket with the kernel fast path's program `prog` (frames the
    /// kernel forwards do not reach guardwire). Only ports whose frames pass
    /// tc ingress have one.
    fn set_fast_filter(&self, _prog: RawFd) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "frames of this port do not pass tc ingress",
        ))
    }
    /// Stops (false) or resumes (true) the kernel queueing frames to this port,
    /// so a workload the kernel forwards costs guardwire nothing.
    fn set_receiving(&self, _on: bool) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "port cannot pause receiving",
        ))
    }
}

/// Sends every frame of `frames`.
pub fn send_all(port: &dyn Port, frames: &[Frame<'_>]) -> SendReport {
    let mut report = SendReport::default();
    for chunk_start in (0..frames.len()).step_by(u16::MAX as usize) {
        let end = (chunk_start + u16::MAX as usize).min(frames.len());
        let pick: Vec<u16> = (0..(end - chunk_start) as u16).collect();
        report.add(port.send_burst(&frames[chunk_start..end], &pick));
    }
    report
}

/// Interface index of `name` in the calling thread's network namespace.
pub fn ifindex(name: &str) -> io::Result<i32> {
    let c = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in interface name"))?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no interface named {name:?} in this network namespace"),
        ))
    } else {
        Ok(idx as i32)
    }
}

/// Error from the last libc call, with what was being done.
pub(crate) fn os_err(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

impl<T: Port + ?Sized> Port for Box<T> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn fd(&self) -> RawFd {
        (**self).fd()
    }
    fn recv_burst(&self, max: usize, f: &mut BurstFn<'_>) -> io::Result<usize> {
        (**self).recv_burst(max, f)
    }
    fn burst_limit(&self) -> usize {
        (**self).burst_limit()
    }
    fn send_burst(&self, frames: &[Frame<'_>], pick: &[u16]) -> SendReport {
        (**self).send_burst(frames, pick)
    }
    fn kernel_stats(&self) -> KernelStats {
        (**self).kernel_stats()
    }
    fn set_receiving(&self, on: bool) -> io::Result<()> {
        (**self).set_receiving(on)
    }
}
