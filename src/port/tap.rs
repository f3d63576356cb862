//! A tap held by its file descriptor, as QEMU holds one: created through `tun-rs`
//! (L2, IFF_VNET_HDR with TCP/UDP offloads announced, non-blocking), then read and
//! written frame by frame with the same virtio-net header packet ports use.
//! Frames read from a tap carry any VLAN tag inline, so `Frame::vlan` is `None`.

use super::{BurstFn, Frame, MAX_FRAME, Port, SendReport, VNET_HDR_LEN, VnetHdr, os_err};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Mutex;

const BUF_LEN: usize = VNET_HDR_LEN + MAX_FRAME;

struct TapRx {
    bufs: Vec<Box<[u8]>>,
    burst: Vec<Frame<'static>>,
}

// SAFETY: the Frames in `burst` point into `bufs`, which TapRx owns; the vector is
// empty outside a burst, and the Mutex in TapPort gives one thread at a time access.
unsafe impl Send for TapRx {}

/// A tap device whose fd this process holds.
pub struct TapPort {
    name: String,
    dev: tun_rs::SyncDevice,
    rx: Mutex<TapRx>,
}

impl TapPort {
    /// Creates (or, with IFF_MULTI_QUEUE unset, attaches to) the tap `name` in the
    /// calling thread's network namespace, with `mac` if given. `burst` is how many
    /// receive buffers of 64 KiB the port keeps.
    pub fn create(name: &str, mac: Option<[u8; 6]>, burst: usize) -> io::Result<TapPort> {
        let mut b = tun_rs::DeviceBuilder::new()
            .name(name)
            .layer(tun_rs::Layer::L2)
            .offload(true)
            .enable(true);
        if let Some(m) = mac {
            b = b.mac_addr(m);
        }
        let dev = b
            .build_sync()
            .map_err(|e| io::Error::new(e.kind(), format!("create tap {name}: {e}")))?;
        dev.set_nonblocking(true)?;
        let burst = burst.clamp(1, 256);
        Ok(TapPort {
            name: name.to_string(),
            dev,
            rx: Mutex::new(TapRx {
                bufs: (0..burst)
                    .map(|_| vec![0u8; BUF_LEN].into_boxed_slice())
                    .collect(),
                burst: Vec::with_capacity(burst),
            }),
        })
    }
}

impl Port for TapPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn fd(&self) -> RawFd {
        self.dev.as_raw_fd()
    }

    fn burst_limit(&self) -> usize {
        self.rx.lock().map_or(1, |r| r.bufs.len())
    }

    fn recv_burst(&self, max: usize, f: &mut BurstFn<'_>) -> io::Result<usize> {
        let mut guard = self
            .rx
            .lock()
            .map_err(|_| io::Error::other("tap RX lock poisoned"))?;
        let rx = &mut *guard;
        rx.burst.clear();
        let n = max.min(rx.bufs.len());
        let mut lens = [0usize; 256];
        let mut got = 0;
        while got < n {
            let buf = &mut rx.bufs[got];
            // SAFETY: reads into a buffer we own of the length passed.
            let r =
                unsafe { libc::read(self.fd(), buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
            if r < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock => break,
                    io::ErrorKind::Interrupted => continue,
                    _ => {
                        return Err(io::Error::new(
                            e.kind(),
                            format!("read tap {}: {e}", self.name),
                        ));
                    }
                }
            }
            lens[got] = r as usize;
            got += 1;
        }
        for (buf, &len) in rx.bufs.iter().zip(&lens[..got]) {
            if len < VNET_HDR_LEN {
                continue;
            }
            let vnet = VnetHdr::from_bytes(&buf[..VNET_HDR_LEN]).unwrap_or_default();
            // SAFETY: the buffers are not written again until the next burst, and
            // `burst` is cleared before that.
            rx.burst
                .push(unsafe { Frame::from_raw(&buf[VNET_HDR_LEN..len], vnet, None) });
        }
        if !rx.burst.is_empty() {
            f(&rx.burst);
        }
        rx.burst.clear();
        Ok(got)
    }

    fn send_burst(&self, frames: &[Frame<'_>], pick: &[u16]) -> SendReport {
        let mut report = SendReport::default();
        for &i in pick {
            let fr = &frames[i as usize];
            let d = fr.data();
            let (hdr, tag) = match fr.vlan {
                Some(t) if d.len() >= 12 => {
                    (fr.vnet.with_vlan_inserted().to_bytes(), Some(t.to_bytes()))
                }
                _ => (fr.vnet.to_bytes(), None),
            };
            let iov = |p: *const u8, l: usize| libc::iovec {
                iov_base: p as *mut libc::c_void,
                iov_len: l,
            };
            let mut iovs = [
                iov(hdr.as_ptr(), VNET_HDR_LEN),
                iov(d.as_ptr(), d.len()),
                iov(d.as_ptr(), 0),
                iov(d.as_ptr(), 0),
            ];
            let cnt = if let Some(tag) = &tag {
                iovs[1] = iov(d.as_ptr(), 12);
                iovs[2] = iov(tag.as_ptr(), 4);
                iovs[3] = iov(d[12..].as_ptr(), d.len() - 12);
                4
            } else {
                2
            };
            loop {
                // SAFETY: every iovec points into memory alive for this call.
                let r = unsafe { libc::writev(self.fd(), iovs.as_ptr(), cnt) };
                if r >= 0 {
                    report.sent += 1;
                    report.bytes += fr.wire_len() as u64;
                    break;
                }
                let e = os_err("writev tap");
                match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock => report.busy += 1,
                    _ => report.failed += 1,
                }
                break;
            }
        }
        report
    }
}
