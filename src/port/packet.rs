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
//! - Ring slots are 68 KiB so a super-frame is never truncated; the kernel
//!   allocates ring blocks in power-of-two pages, so 1 MiB blocks hold 15 slots
//!   with little waste.

use super::{
    BurstFn, Frame, KernelStats, Port, SendReport, VNET_HDR_LEN, VlanTag, VnetHdr, os_err,
};
use std::cell::RefCell;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Size of one RX ring slot: tpacket2 header, sockaddr_ll, alignment, the vnet
/// header and a 64 KiB super-frame with a little to spare.
pub const RING_FRAME_SIZE: usize = 68 * 1024;
const RING_BLOCK_SIZE: usize = 1 << 20;
const FRAMES_PER_BLOCK: usize = RING_BLOCK_SIZE / RING_FRAME_SIZE;

/// How a packet port is opened.
#[derive(Clone, Debug)]
pub struct PacketPortOptions {
    /// RX ring slots (rounded up to whole 1 MiB blocks of 15 slots).
    pub ring_frames: usize,
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
            ring_frames: 120,
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
    head: usize,
    burst: Vec<Frame<'static>>,
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
    fd: OwnedFd,
    truncated: AtomicU64,
}

thread_local! {
    static TX: RefCell<TxScratch> = RefCell::new(TxScratch::default());
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

impl PacketPort {
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

        let blocks = opts.ring_frames.max(1).div_ceil(FRAMES_PER_BLOCK);
        let req = libc::tpacket_req {
            tp_block_size: RING_BLOCK_SIZE as u32,
            tp_block_nr: blocks as u32,
            tp_frame_size: RING_FRAME_SIZE as u32,
            tp_frame_nr: (blocks * FRAMES_PER_BLOCK) as u32,
        };
        setsockopt(
            s,
            libc::SOL_PACKET,
            libc::PACKET_RX_RING,
            &req,
            "PACKET_RX_RING",
        )?;
        let map_len = blocks * RING_BLOCK_SIZE;
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
        let mut slots = Vec::with_capacity(blocks * FRAMES_PER_BLOCK);
        for b in 0..blocks {
            for f in 0..FRAMES_PER_BLOCK {
                // SAFETY: the offset stays inside the mapping of map_len bytes.
                slots.push(unsafe {
                    (base as *mut u8).add(b * RING_BLOCK_SIZE + f * RING_FRAME_SIZE)
                });
            }
        }
        let rx = RxRing {
            base,
            map_len,
            slots,
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
        Ok(PacketPort {
            name: name.to_string(),
            ifindex,
            rx: Mutex::new(rx),
            fd,
            truncated: AtomicU64::new(0),
        })
    }

    /// Interface index the socket is bound to.
    pub fn ifindex(&self) -> i32 {
        self.ifindex
    }

    /// Number of RX ring slots.
    pub fn ring_slots(&self) -> usize {
        self.rx.lock().map(|r| r.slots.len()).unwrap_or(0)
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

/// The status word of a ring slot, shared with the kernel.
fn slot_status(slot: *mut u8) -> &'static AtomicU32 {
    // SAFETY: tp_status is the first, 4-byte aligned u32 of the tpacket2_hdr at the
    // start of each 16-byte aligned slot; the kernel and we access it atomically.
    unsafe { &*(slot as *const AtomicU32) }
}

impl Port for PacketPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn recv_burst(&self, max: usize, f: &mut BurstFn<'_>) -> io::Result<usize> {
        let mut guard = self
            .rx
            .lock()
            .map_err(|_| io::Error::other("RX ring lock poisoned"))?;
        let ring = &mut *guard;
        let nslots = ring.slots.len();
        ring.burst.clear();
        let mut taken = 0;
        let mut idx = ring.head;
        while taken < max {
            let slot = ring.slots[idx];
            let status = slot_status(slot).load(Ordering::Acquire);
            if status & libc::TP_STATUS_USER == 0 {
                break;
            }
            // SAFETY: the slot belongs to userspace (TP_STATUS_USER, read with
            // Acquire after the kernel's write barrier) until we hand it back.
            let h = unsafe { &*(slot as *const libc::tpacket2_hdr) };
            taken += 1;
            idx = (idx + 1) % nslots;
            let mac = h.tp_mac as usize;
            let snap = h.tp_snaplen as usize;
            if snap < h.tp_len as usize || mac < VNET_HDR_LEN || mac + snap > RING_FRAME_SIZE {
                // Never forward a cut frame: it would be a different frame.
                self.truncated.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            // SAFETY: mac+snap lies inside the slot (checked above), and the kernel
            // wrote the vnet header right before the MAC header.
            let (vnet_bytes, data) = unsafe {
                (
                    std::slice::from_raw_parts(slot.add(mac - VNET_HDR_LEN), VNET_HDR_LEN),
                    std::slice::from_raw_parts(slot.add(mac) as *const u8, snap),
                )
            };
            let vnet = VnetHdr::from_bytes(vnet_bytes).unwrap_or_default();
            let vlan = (status & libc::TP_STATUS_VLAN_VALID != 0).then_some(VlanTag {
                tpid: if status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                    h.tp_vlan_tpid
                } else {
                    0x8100
                },
                tci: h.tp_vlan_tci,
            });
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
            slot_status(ring.slots[i]).store(libc::TP_STATUS_KERNEL, Ordering::Release);
            i = (i + 1) % nslots;
        }
        ring.head = idx;
        Ok(taken)
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
            let mut report = SendReport::default();
            let total = tx.msgs.len();
            let mut off = 0;
            let mut retried = false;
            while off < total {
                // SAFETY: msgs[off..] are valid mmsghdrs whose iovecs point into
                // `frames` (alive for this call) and into hdrs/tags.
                let r = unsafe {
                    libc::sendmmsg(
                        self.fd.as_raw_fd(),
                        tx.msgs.as_mut_ptr().add(off),
                        (total - off) as u32,
                        libc::MSG_DONTWAIT,
                    )
                };
                if r > 0 {
                    for k in off..off + r as usize {
                        report.bytes += frames[pick[k] as usize].wire_len() as u64;
                    }
                    report.sent += r as usize;
                    off += r as usize;
                    retried = false;
                    continue;
                }
                let err = io::Error::last_os_error().raw_os_error().unwrap_or(0);
                if err == libc::EINTR {
                    continue;
                }
                let busy = err == libc::EAGAIN || err == libc::ENOBUFS;
                if busy && !retried {
                    // The socket buffer drains as soon as the peer's backlog runs;
                    // wait a moment once rather than dropping at the first refusal.
                    retried = true;
                    self.wait_writable(1);
                    continue;
                }
                if busy {
                    report.busy += 1;
                } else {
                    report.failed += 1;
                }
                retried = false;
                off += 1;
            }
            report
        })
    }

    fn set_receiving(&self, on: bool) -> io::Result<()> {
        let s = self.fd.as_raw_fd();
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
        if r < 0 {
            return KernelStats {
                truncated,
                ..Default::default()
            };
        }
        KernelStats {
            packets: st.tp_packets as u64,
            drops: st.tp_drops as u64,
            truncated,
        }
    }
}
