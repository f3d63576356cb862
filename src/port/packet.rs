//! AF_PACKET port over `libc`: a TPACKET_V2 mmap RX ring and batched `sendmmsg` TX.
//!
//! Why these choices (measured on the reference kernel, see KERNEL-NOTES):
//! - TPACKET_V2 marks every frame ready as it lands and wakes the reader per frame;
//!   TPACKET_V3 hands a block over only when it fills or its >= 1 ms timer fires,
//!   which turns a 0.1 ms RTT into 1.1 ms at low rates.
//! - PACKET_VNET_HDR on RX and TX lets 64 KiB GSO super-frames with partial
//!   checksums cross intact; without it a forwarder breaks TCP with default offloads.
//! - PACKET_IGNORE_OUTGOING stops the socket from re-reading what guardwire sent.
//! - `sendmmsg` on a shared socket lets any worker send on any port without a lock
//!   of ours (a TX ring would need one); the kernel copies each frame once.
//! - Ring slots are small (2 KiB: a 1500-byte frame with its headers), so an idle
//!   port pins 512 KiB, not 8 MiB. A frame too big for a slot (a 64 KiB GSO
//!   super-frame, a jumbo frame) is never cut: with PACKET_COPY_THRESH the kernel
//!   marks its slot TP_STATUS_COPY and queues the whole frame (a reference, no
//!   copy) on the socket, where the burst reads it with recv into a buffer of
//!   the worker's. Memory for big frames is spent only while they flow. Large
//!   slots (`slot_bytes = 69632`) keep every frame in the ring, for comparison.

use super::{
    BurstFn, Frame, KernelStats, Port, SendReport, VNET_HDR_LEN, VlanTag, VnetHdr, os_err,
};
use std::cell::RefCell;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Default size of one RX ring slot: tpacket2 header, sockaddr_ll, alignment,
/// the vnet header (76 bytes in all) and a 1500-byte frame with a VLAN tag.
pub const RING_FRAME_SIZE: usize = 2048;
/// A slot that holds a 64 KiB super-frame whole.
pub const RING_FRAME_SIZE_MAX: usize = 68 * 1024;
/// Bytes before the MAC header in a slot, and the largest frame a recv reads.
const COPY_BUF: usize = VNET_HDR_LEN + super::MAX_FRAME;

/// Ring blocks: at least 64 KiB (small orders for the kernel to find), and
/// big enough that a large slot wastes little of its power-of-two block.
fn block_size(slot: usize) -> usize {
    (slot * 15).max(1 << 16).next_power_of_two()
}

/// How a packet port is opened.
#[derive(Clone, Debug)]
pub struct PacketPortOptions {
    /// RX ring slots (rounded up to whole blocks).
    pub ring_frames: usize,
    /// Bytes per slot (rounded up to 16): frames that do not fit go the copy way.
    pub slot_bytes: usize,
    /// Join PACKET_MR_PROMISC (taps and real NICs need it; veth delivers anyway).
    pub promisc: bool,
    /// Send straight to the driver, skipping the qdisc layer.
    pub qdisc_bypass: bool,
    /// Socket send buffer (SO_SNDBUFFORCE), bytes.
    pub sndbuf: usize,
}

impl Default for PacketPortOptions {
    fn default() -> Self {
        PacketPortOptions {
            ring_frames: 256,
            slot_bytes: RING_FRAME_SIZE,
            promisc: true,
            qdisc_bypass: true,
            sndbuf: 8 << 20,
        }
    }
}

struct RxRing {
    base: *mut libc::c_void,
    map_len: usize,
    slots: Vec<*mut u8>,
    slot_size: usize,
    head: usize,
    burst: Vec<Frame<'static>>,
}

impl RxRing {
    /// The status word of slot `i`, shared with the kernel; borrowed from the
    /// ring, so it cannot outlive the mapping.
    fn status(&self, i: usize) -> &AtomicU32 {
        // SAFETY: tp_status is the first, 4-byte aligned u32 of the
        // tpacket2_hdr at the start of each 16-byte aligned slot, inside the
        // mapping that lives as long as `self`; the kernel and we access it
        // atomically only.
        unsafe { AtomicU32::from_ptr(self.slots[i] as *mut u32) }
    }

    /// The header fields of slot `i` the burst needs, read one by one through
    /// the raw pointer: the kernel writes this memory, so no reference to the
    /// header is formed.
    fn header(&self, i: usize) -> SlotHeader {
        let h = self.slots[i] as *const libc::tpacket2_hdr;
        // SAFETY: the slot belongs to userspace (its status, read with Acquire,
        // says TP_STATUS_USER) until it is handed back, so the kernel does not
        // write these fields now; `h` points at a whole header inside the mapping.
        unsafe {
            SlotHeader {
                len: (&raw const (*h).tp_len).read_volatile(),
                snaplen: (&raw const (*h).tp_snaplen).read_volatile(),
                mac: (&raw const (*h).tp_mac).read_volatile(),
                vlan_tci: (&raw const (*h).tp_vlan_tci).read_volatile(),
                vlan_tpid: (&raw const (*h).tp_vlan_tpid).read_volatile(),
            }
        }
    }
}

/// The fields of a slot's tpacket2_hdr, copied out.
struct SlotHeader {
    len: u32,
    snaplen: u32,
    mac: u16,
    vlan_tci: u16,
    vlan_tpid: u16,
}

// SAFETY: the ring memory is owned by this struct (mapped in `open`, unmapped in
// Drop) and only touched through `&mut RxRing`, which the Mutex in PacketPort
// hands to one thread at a time.
unsafe impl Send for RxRing {}

impl Drop for RxRing {
    fn drop(&mut self) {
        // SAFETY: `base`/`map_len` are exactly what mmap returned; no Frame outlives
        // a burst, so nothing points into the mapping any more.
        unsafe {
            libc::munmap(self.base, self.map_len);
        }
    }
}

/// An AF_PACKET socket bound to one interface, with an mmap RX ring.
pub struct PacketPort {
    name: String,
    ifindex: i32,
    // Declared after `rx` would unmap after close; order does not matter to the
    // kernel, but keep the ring first so it is unmapped before the fd closes.
    rx: Mutex<RxRing>,
    /// Slots of the ring.
    slots: usize,
    fd: OwnedFd,
    truncated: AtomicU64,
    copied: AtomicU64,
    jam: Jam,
    /// The fast path's socket filter (a BPF program descriptor), when set:
    /// the socket's filter while it receives.
    fast_filter: std::sync::atomic::AtomicI32,
}

thread_local! {
    static TX: RefCell<TxScratch> = RefCell::new(TxScratch::default());
    /// Buffers for the frames of a burst that came the copy way: one set per
    /// worker thread, whatever the number of ports it owns, so big frames cost
    /// memory per worker, not per port.
    static COPIES: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

#[derive(Default)]
struct TxScratch {
    hdrs: Vec<[u8; VNET_HDR_LEN]>,
    tags: Vec<[u8; 4]>,
    iovs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
}

fn setsockopt<T>(fd: RawFd, level: i32, name: i32, val: &T, what: &str) -> io::Result<()> {
    // SAFETY: `val` points to a live T of the size passed; the kernel only reads it.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            val as *const T as *const libc::c_void,
            size_of::<T>() as libc::socklen_t,
        )
    };
    if r < 0 { Err(os_err(what)) } else { Ok(()) }
}

/// When a port last stayed full through a wait: for [`JAM_NS`] after that,
/// sends to it do not wait again, so one jammed egress port costs its worker at
/// most one short wait, not one per refused frame.
#[derive(Default)]
struct Jam(AtomicU64);

/// How long a port that stayed full is not waited for.
const JAM_NS: u64 = 10_000_000;

fn mono_ns() -> u64 {
    static T0: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    T0.get_or_init(std::time::Instant::now).elapsed().as_nanos() as u64 + 1
}

impl Jam {
    fn may_wait(&self) -> bool {
        let at = self.0.load(Ordering::Relaxed);
        at == 0 || mono_ns().saturating_sub(at) > JAM_NS
    }
    fn stayed_full(&self) {
        self.0.store(mono_ns(), Ordering::Relaxed);
    }
}

/// What [`push_out`] did.
#[derive(Debug, Default, PartialEq, Eq)]
struct Pushed {
    /// Indexes of the messages the kernel took.
    taken: Vec<usize>,
    busy: usize,
    failed: usize,
}

/// Sends `total` messages with `send(from)` (how many it took, or the errno),
/// skipping each one the kernel refuses. When the socket is full it waits once
/// with `wait`, unless the port stayed full through a wait a moment ago; after
/// one wait per call every further refusal is counted busy at once.
fn push_out(
    total: usize,
    jam: &Jam,
    mut send: impl FnMut(usize) -> Result<usize, i32>,
    mut wait: impl FnMut(),
) -> Pushed {
    let mut out = Pushed::default();
    let mut off = 0;
    let mut may_wait = jam.may_wait();
    let mut waited = false;
    while off < total {
        match send(off) {
            Ok(0) => {
                out.busy += 1;
                off += 1;
            }
            Ok(n) => {
                out.taken.extend(off..off + n);
                off += n;
            }
            Err(libc::EINTR) => {}
            Err(e) if e == libc::EAGAIN || e == libc::ENOBUFS => {
                if may_wait {
                    // The socket buffer drains as soon as the peer's backlog
                    // runs: wait a moment once rather than drop at the first
                    // refusal.
                    may_wait = false;
                    waited = true;
                    wait();
                    continue;
                }
                if waited {
                    // Full again after this call's wait: the port is jammed.
                    jam.stayed_full();
                }
                out.busy += 1;
                off += 1;
            }
            Err(_) => {
                out.failed += 1;
                off += 1;
            }
        }
    }
    out
}

/// Socket receive buffer for frames that came the copy way: room for a few
/// dozen super-frames in flight. Only frames waiting use it.
const COPY_RCVBUF: usize = 4 << 20;

impl PacketPort {
    /// Reads the next frame of the socket queue (one whose slot says
    /// TP_STATUS_COPY) into `buf`: its length with the vnet header, or none if
    /// it is missing, cut or not the frame the slot announced (`len` bytes).
    fn recv_copy(&self, buf: &mut [u8], len: usize) -> Option<usize> {
        // SAFETY: reads at most buf.len() bytes into a buffer we own; MSG_TRUNC
        // makes the result the frame's real length, checked below.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                libc::MSG_DONTWAIT | libc::MSG_TRUNC,
            )
        };
        if n < 0 {
            return None;
        }
        let n = n as usize;
        (n <= buf.len() && n == VNET_HDR_LEN + len).then_some(n)
    }

    /// Opens a port on interface `name` of the calling thread's network namespace.
    pub fn open(name: &str, opts: &PacketPortOptions) -> io::Result<PacketPort> {
        let ifindex = super::ifindex(name)?;
        // Protocol 0: receive nothing until bind, so no frame of another interface
        // slips into the ring while it is being set up.
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if raw < 0 {
            return Err(os_err("socket(AF_PACKET)"));
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let s = fd.as_raw_fd();
        let one: libc::c_int = 1;
        setsockopt(
            s,
            libc::SOL_PACKET,
            libc::PACKET_VNET_HDR,
            &one,
            "PACKET_VNET_HDR",
        )?;
        let v2 = libc::tpacket_versions::TPACKET_V2 as libc::c_int;
        setsockopt(
            s,
            libc::SOL_PACKET,
            libc::PACKET_VERSION,
            &v2,
            "PACKET_VERSION",
        )?;

        // Frames too big for a slot go to the socket queue whole.
        setsockopt(
            s,
            libc::SOL_PACKET,
            libc::PACKET_COPY_THRESH,
            &one,
            "PACKET_COPY_THRESH",
        )?;
        let rcvbuf = COPY_RCVBUF as libc::c_int;
        setsockopt(
            s,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            &rcvbuf,
            "SO_RCVBUFFORCE",
        )?;
        let slot_size = opts
            .slot_bytes
            .clamp(RING_FRAME_SIZE, RING_FRAME_SIZE_MAX)
            .next_multiple_of(16);
        let block = block_size(slot_size);
        let per_block = block / slot_size;
        let blocks = opts.ring_frames.max(1).div_ceil(per_block);
        let req = libc::tpacket_req {
            tp_block_size: block as u32,
            tp_block_nr: blocks as u32,
            tp_frame_size: slot_size as u32,
            tp_frame_nr: (blocks * per_block) as u32,
        };
        setsockopt(
            s,
            libc::SOL_PACKET,
            libc::PACKET_RX_RING,
            &req,
            "PACKET_RX_RING",
        )?;
        let map_len = blocks * block;
        // SAFETY: maps the ring the kernel just allocated for this socket; the
        // result is checked and owned by RxRing, which unmaps it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                s,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(os_err("mmap(RX ring)"));
        }
        let mut slots = Vec::with_capacity(blocks * per_block);
        for b in 0..blocks {
            for f in 0..per_block {
                // SAFETY: the offset stays inside the mapping of map_len bytes.
                slots.push(unsafe { (base as *mut u8).add(b * block + f * slot_size) });
            }
        }
        let rx = RxRing {
            base,
            map_len,
            slots,
            slot_size,
            head: 0,
            burst: Vec::with_capacity(1024),
        };

        setsockopt(
            s,
            libc::SOL_PACKET,
            libc::PACKET_IGNORE_OUTGOING,
            &one,
            "PACKET_IGNORE_OUTGOING",
        )?;
        if opts.qdisc_bypass {
            setsockopt(
                s,
                libc::SOL_PACKET,
                libc::PACKET_QDISC_BYPASS,
                &one,
                "PACKET_QDISC_BYPASS",
            )?;
        }
        let sndbuf = opts.sndbuf.min(i32::MAX as usize) as libc::c_int;
        setsockopt(
            s,
            libc::SOL_SOCKET,
            libc::SO_SNDBUFFORCE,
            &sndbuf,
            "SO_SNDBUFFORCE",
        )?;
        if opts.promisc {
            let mreq = libc::packet_mreq {
                mr_ifindex: ifindex,
                mr_type: libc::PACKET_MR_PROMISC as u16,
                mr_alen: 0,
                mr_address: [0; 8],
            };
            setsockopt(
                s,
                libc::SOL_PACKET,
                libc::PACKET_ADD_MEMBERSHIP,
                &mreq,
                "PACKET_ADD_MEMBERSHIP(promisc)",
            )?;
        }
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = ifindex;
        // SAFETY: `sll` is a valid sockaddr_ll for the length passed.
        let r = unsafe {
            libc::bind(
                s,
                &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(os_err(&format!("bind(AF_PACKET, {name})")));
        }
        let nslots = rx.slots.len();
        Ok(PacketPort {
            name: name.to_string(),
            ifindex,
            rx: Mutex::new(rx),
            slots: nslots,
            fd,
            truncated: AtomicU64::new(0),
            copied: AtomicU64::new(0),
            jam: Jam::default(),
            fast_filter: std::sync::atomic::AtomicI32::new(-1),
        })
    }

    /// Interface index the socket is bound to.
    pub fn ifindex(&self) -> i32 {
        self.ifindex
    }

    /// Number of RX ring slots.
    pub fn ring_slots(&self) -> usize {
        self.slots
    }

    /// Waits up to `timeout_ms` until the socket can take more frames.
    fn wait_writable(&self, timeout_ms: i32) {
        let mut p = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one valid pollfd; the result only decides whether to retry.
        unsafe {
            libc::poll(&mut p, 1, timeout_ms);
        }
    }
}

impl Port for PacketPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn burst_limit(&self) -> usize {
        self.slots
    }

    fn recv_burst(&self, max: usize, f: &mut BurstFn<'_>) -> io::Result<usize> {
        let mut guard = self
            .rx
            .lock()
            .map_err(|_| io::Error::other("RX ring lock poisoned"))?;
        let ring = &mut *guard;
        let nslots = ring.slots.len();
        COPIES.with(|copies| {
            let mut copies = copies.borrow_mut();
            ring.burst.clear();
            // Never more than the ring holds: past that the walk would come
            // round to slots it has not handed back yet.
            let max = max.min(nslots);
            let mut taken = 0;
            let mut copied = 0;
            let mut idx = ring.head;
            while taken < max {
                let status = ring.status(idx).load(Ordering::Acquire);
                if status & libc::TP_STATUS_USER == 0 {
                    break;
                }
                let slot = ring.slots[idx];
                let h = ring.header(idx);
                taken += 1;
                idx = (idx + 1) % nslots;
                let vlan = (status & libc::TP_STATUS_VLAN_VALID != 0).then_some(VlanTag {
                    tpid: if status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                        h.vlan_tpid
                    } else {
                        0x8100
                    },
                    tci: h.vlan_tci,
                });
                if status & libc::TP_STATUS_COPY != 0 {
                    // The whole frame waits on the socket queue, in ring order.
                    if copies.len() == copied {
                        copies.push(vec![0u8; COPY_BUF].into_boxed_slice());
                    }
                    let buf = &mut copies[copied];
                    match self.recv_copy(buf, h.len as usize) {
                        Some(n) => {
                            let vnet =
                                VnetHdr::from_bytes(&buf[..VNET_HDR_LEN]).unwrap_or_default();
                            // SAFETY: the buffer is not written again until the
                            // next burst, after `f` has returned and `burst` is cleared.
                            ring.burst.push(unsafe {
                                Frame::from_raw(&buf[VNET_HDR_LEN..n], vnet, vlan)
                            });
                            copied += 1;
                            self.copied.fetch_add(1, Ordering::Relaxed);
                        }
                        None => {
                            self.truncated.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    continue;
                }
                let mac = h.mac as usize;
                let snap = h.snaplen as usize;
                if snap < h.len as usize || mac < VNET_HDR_LEN || mac + snap > ring.slot_size {
                    // Never forward a cut frame: it would be a different frame.
                    self.truncated.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                // SAFETY: mac+snap lies inside the slot (checked above), the slot
                // is ours until handed back below, and the kernel wrote the vnet
                // header right before the MAC header.
                let (vnet_bytes, data) = unsafe {
                    (
                        std::slice::from_raw_parts(slot.add(mac - VNET_HDR_LEN), VNET_HDR_LEN),
                        std::slice::from_raw_parts(slot.add(mac) as *const u8, snap),
                    )
                };
                let vnet = VnetHdr::from_bytes(vnet_bytes).unwrap_or_default();
                // SAFETY: the slice stays valid until the slots are released below,
                // after `f` returns; `burst` is cleared before the next burst.
                ring.burst
                    .push(unsafe { Frame::from_raw(data, vnet, vlan) });
            }
            if taken == 0 {
                return Ok(0);
            }
            if !ring.burst.is_empty() {
                f(&ring.burst);
            }
            ring.burst.clear();
            let mut i = ring.head;
            for _ in 0..taken {
                ring.status(i)
                    .store(libc::TP_STATUS_KERNEL, Ordering::Release);
                i = (i + 1) % nslots;
            }
            ring.head = idx;
            Ok(taken)
        })
    }

    fn send_burst(&self, frames: &[Frame<'_>], pick: &[u16]) -> SendReport {
        TX.with(|tx| {
            let mut tx = tx.borrow_mut();
            let tx = &mut *tx;
            tx.hdrs.clear();
            tx.tags.clear();
            tx.iovs.clear();
            tx.msgs.clear();
            for &i in pick {
                let fr = &frames[i as usize];
                match fr.vlan {
                    Some(tag) => {
                        tx.hdrs.push(fr.vnet.with_vlan_inserted().to_bytes());
                        tx.tags.push(tag.to_bytes());
                    }
                    None => {
                        tx.hdrs.push(fr.vnet.to_bytes());
                        tx.tags.push([0; 4]);
                    }
                }
            }
            // Pointers into hdrs/tags/iovs are taken only once those vectors are
            // complete, so no reallocation can move what they point to.
            for (k, &i) in pick.iter().enumerate() {
                let fr = &frames[i as usize];
                let d = fr.data();
                let iov = |p: *const u8, l: usize| libc::iovec {
                    iov_base: p as *mut libc::c_void,
                    iov_len: l,
                };
                tx.iovs.push(iov(tx.hdrs[k].as_ptr(), VNET_HDR_LEN));
                if fr.vlan.is_some() && d.len() >= 12 {
                    tx.iovs.push(iov(d.as_ptr(), 12));
                    tx.iovs.push(iov(tx.tags[k].as_ptr(), 4));
                    tx.iovs.push(iov(d[12..].as_ptr(), d.len() - 12));
                } else {
                    tx.iovs.push(iov(d.as_ptr(), d.len()));
                }
            }
            let mut at = 0;
            for &i in pick {
                let n =
                    if frames[i as usize].vlan.is_some() && frames[i as usize].data().len() >= 12 {
                        4
                    } else {
                        2
                    };
                // SAFETY: msghdr is plain old data; all-zero is a valid value.
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                // SAFETY: `at..at+n` lies inside iovs, which is not touched again
                // until the sendmmsg calls below have returned.
                m.msg_hdr.msg_iov = unsafe { tx.iovs.as_mut_ptr().add(at) };
                m.msg_hdr.msg_iovlen = n;
                tx.msgs.push(m);
                at += n;
            }
            let msgs = &mut tx.msgs;
            let fd = self.fd.as_raw_fd();
            let sent = push_out(
                msgs.len(),
                &self.jam,
                |off| {
                    // SAFETY: msgs[off..] are valid mmsghdrs whose iovecs point
                    // into `frames` (alive for this call) and into hdrs/tags.
                    let r = unsafe {
                        libc::sendmmsg(
                            fd,
                            msgs.as_mut_ptr().add(off),
                            (msgs.len() - off) as u32,
                            libc::MSG_DONTWAIT,
                        )
                    };
                    if r >= 0 {
                        Ok(r as usize)
                    } else {
                        Err(io::Error::last_os_error().raw_os_error().unwrap_or(0))
                    }
                },
                || self.wait_writable(1),
            );
            let mut report = SendReport {
                busy: sent.busy,
                failed: sent.failed,
                ..Default::default()
            };
            for &k in &sent.taken {
                report.bytes += frames[pick[k] as usize].wire_len() as u64;
                report.sent += 1;
            }
            report
        })
    }

    fn set_fast_filter(&self, prog: RawFd) -> io::Result<()> {
        self.fast_filter.store(prog, Ordering::Relaxed);
        setsockopt(
            self.fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_BPF,
            &prog,
            "SO_ATTACH_BPF",
        )
    }

    fn set_receiving(&self, on: bool) -> io::Result<()> {
        let s = self.fd.as_raw_fd();
        let fast = self.fast_filter.load(Ordering::Relaxed);
        if on && fast >= 0 {
            return setsockopt(
                s,
                libc::SOL_SOCKET,
                libc::SO_ATTACH_BPF,
                &fast,
                "SO_ATTACH_BPF",
            );
        }
        if on {
            let zero: libc::c_int = 0;
            return match setsockopt(
                s,
                libc::SOL_SOCKET,
                libc::SO_DETACH_FILTER,
                &zero,
                "SO_DETACH_FILTER",
            ) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                r => r,
            };
        }
        // Classic BPF "ret #0": accept no byte of any frame.
        let mut prog = [libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: 0,
        }];
        let fprog = libc::sock_fprog {
            len: 1,
            filter: prog.as_mut_ptr(),
        };
        setsockopt(
            s,
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            &fprog,
            "SO_ATTACH_FILTER",
        )
    }

    fn kernel_stats(&self) -> KernelStats {
        let mut st = libc::tpacket_stats {
            tp_packets: 0,
            tp_drops: 0,
        };
        let mut len = size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: `st` and `len` are valid for the kernel to write; reading
        // PACKET_STATISTICS also resets the kernel's counters, so we accumulate.
        let r = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                &mut st as *mut libc::tpacket_stats as *mut libc::c_void,
                &mut len,
            )
        };
        let truncated = self.truncated.swap(0, Ordering::Relaxed);
        let copied = self.copied.swap(0, Ordering::Relaxed);
        if r < 0 {
            return KernelStats {
                truncated,
                copied,
                ..Default::default()
            };
        }
        KernelStats {
            packets: st.tp_packets as u64,
            drops: st.tp_drops as u64,
            truncated,
            copied,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jammed_port_is_waited_for_once_not_once_per_frame() {
        let jam = Jam::default();
        let mut waits = 0;
        let r = push_out(64, &jam, |_| Err(libc::EAGAIN), || waits += 1);
        assert_eq!(r.busy, 64);
        assert_eq!(waits, 1, "one wait per burst at most");
        // Right after, the port that stayed full is not waited for at all.
        let r = push_out(64, &jam, |_| Err(libc::EAGAIN), || waits += 1);
        assert_eq!((r.busy, waits), (64, 1));
    }

    #[test]
    fn a_wait_that_helps_sends_the_rest() {
        let jam = Jam::default();
        let room = std::cell::Cell::new(0);
        let mut waits = 0;
        let r = push_out(
            10,
            &jam,
            |off| {
                if room.get() == 0 {
                    Err(libc::EAGAIN)
                } else {
                    let n = room.get().min(10 - off);
                    room.set(room.get() - n);
                    Ok(n)
                }
            },
            || {
                waits += 1;
                room.set(6);
            },
        );
        // Six go after the wait; the other four are refused without another.
        assert_eq!(r.taken, (0..6).collect::<Vec<_>>());
        assert_eq!((r.busy, r.failed, waits), (4, 0, 1));
        assert!(!jam.may_wait(), "stayed full through its wait");
    }

    #[test]
    fn other_errors_fail_one_frame_each() {
        let jam = Jam::default();
        let mut calls = 0;
        let r = push_out(
            3,
            &jam,
            |off| {
                calls += 1;
                if off == 1 { Err(libc::EMSGSIZE) } else { Ok(1) }
            },
            || {},
        );
        assert_eq!(r.taken, vec![0, 2]);
        assert_eq!((r.busy, r.failed, calls), (0, 1, 3));
    }
}
