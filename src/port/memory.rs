//! An in-memory port, the way smoltcp's `Loopback` is a device: frames put in
//! with [`MemoryPort::inject`] are received by the worker that owns the port,
//! frames the worker sends are kept for [`MemoryPort::sent`]. Its descriptor is
//! an eventfd that is readable while frames wait, so the real worker loop
//! (epoll, bursts, delay queue) runs over it with no root, no namespace and no
//! kernel network device.

use super::{BurstFn, Frame, Port, SendReport, VlanTag, VnetHdr, os_err};
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// A frame as it waits in, or left by, a memory port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryFrame {
    /// The Ethernet frame.
    pub data: Vec<u8>,
    /// Its virtio-net header.
    pub vnet: VnetHdr,
    /// A stripped VLAN tag.
    pub vlan: Option<VlanTag>,
}

/// A port over two queues in memory.
pub struct MemoryPort {
    name: String,
    event: OwnedFd,
    rx: Mutex<VecDeque<MemoryFrame>>,
    tx: Mutex<Vec<MemoryFrame>>,
    /// Most frames one receive hands out (a ring's slot count).
    burst_limit: usize,
    /// Frames a send takes before it reports the rest busy (usize::MAX: all).
    tx_room: AtomicUsize,
    receiving: AtomicBool,
}

impl MemoryPort {
    /// A port called `name` that hands out at most `burst_limit` frames per receive.
    pub fn new(name: &str, burst_limit: usize) -> io::Result<MemoryPort> {
        // SAFETY: plain eventfd(2) call; the result is checked before use.
        let raw = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if raw < 0 {
            return Err(os_err("eventfd"));
        }
        Ok(MemoryPort {
            name: name.to_string(),
            // SAFETY: `raw` is a fresh descriptor that nothing else owns.
            event: unsafe { OwnedFd::from_raw_fd(raw) },
            rx: Mutex::new(VecDeque::new()),
            tx: Mutex::new(Vec::new()),
            burst_limit: burst_limit.max(1),
            tx_room: AtomicUsize::new(usize::MAX),
            receiving: AtomicBool::new(true),
        })
    }

    /// Queues frames for the owning worker to receive, with one wake-up.
    pub fn inject(&self, frames: impl IntoIterator<Item = MemoryFrame>) {
        if !self.receiving.load(Ordering::Relaxed) {
            return;
        }
        let mut rx = self.rx.lock().unwrap_or_else(|e| e.into_inner());
        rx.extend(frames);
        drop(rx);
        self.signal();
    }

    /// Queues plain frames (no vnet header, no tag).
    pub fn inject_plain<'a>(&self, frames: impl IntoIterator<Item = &'a [u8]>) {
        self.inject(frames.into_iter().map(|d| MemoryFrame {
            data: d.to_vec(),
            vnet: VnetHdr::default(),
            vlan: None,
        }));
    }

    /// Takes the frames sent so far.
    pub fn sent(&self) -> Vec<MemoryFrame> {
        std::mem::take(&mut *self.tx.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Frames still waiting to be received.
    pub fn waiting(&self) -> usize {
        self.rx.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Lets the next sends take only `frames` more frames, refusing the rest as busy.
    pub fn set_tx_room(&self, frames: usize) {
        self.tx_room.store(frames, Ordering::Relaxed);
    }

    fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our own eventfd.
        unsafe {
            libc::write(
                self.event.as_raw_fd(),
                &one as *const u64 as *const libc::c_void,
                8,
            );
        }
    }

    fn drain_signal(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64 from our own non-blocking eventfd.
        unsafe {
            libc::read(
                self.event.as_raw_fd(),
                &mut v as *mut u64 as *mut libc::c_void,
                8,
            );
        }
    }
}

impl Port for MemoryPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn fd(&self) -> RawFd {
        self.event.as_raw_fd()
    }

    fn burst_limit(&self) -> usize {
        self.burst_limit
    }

    fn recv_burst(&self, max: usize, f: &mut BurstFn<'_>) -> io::Result<usize> {
        let burst: Vec<MemoryFrame> = {
            let mut rx = self.rx.lock().unwrap_or_else(|e| e.into_inner());
            let n = rx.len().min(max).min(self.burst_limit);
            let burst = rx.drain(..n).collect();
            if rx.is_empty() {
                // Readable again only when the next frame comes.
                self.drain_signal();
            }
            burst
        };
        if burst.is_empty() {
            return Ok(0);
        }
        let frames: Vec<Frame<'_>> = burst
            .iter()
            .map(|m| Frame::new(&m.data, m.vnet, m.vlan))
            .collect();
        f(&frames);
        Ok(frames.len())
    }

    fn send_burst(&self, frames: &[Frame<'_>], pick: &[u16]) -> SendReport {
        let mut r = SendReport::default();
        let mut tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        for &i in pick {
            let fr = &frames[i as usize];
            let room = self.tx_room.load(Ordering::Relaxed);
            if room == 0 {
                r.busy += 1;
                continue;
            }
            if room != usize::MAX {
                self.tx_room.store(room - 1, Ordering::Relaxed);
            }
            tx.push(MemoryFrame {
                data: fr.data().to_vec(),
                vnet: fr.vnet,
                vlan: fr.vlan,
            });
            r.sent += 1;
            r.bytes += fr.wire_len() as u64;
        }
        r
    }

    fn set_receiving(&self, on: bool) -> io::Result<()> {
        self.receiving.store(on, Ordering::Relaxed);
        if !on {
            self.rx.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
        Ok(())
    }
}
