//! A port wrapper that writes every frame it receives and sends to a pcap file
//! (link type Ethernet, stripped VLAN tags put back), like smoltcp's `PcapWriter`.

use super::{BurstFn, Frame, KernelStats, Port, SendReport};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::fd::RawFd;
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

const SNAPLEN: u32 = 262_144;

/// Wraps a port and records its traffic.
pub struct PcapPort<P> {
    inner: P,
    out: Mutex<BufWriter<File>>,
}

impl<P: Port> PcapPort<P> {
    /// Wraps `inner`, writing to a new pcap file at `path`.
    pub fn new(inner: P, path: &Path) -> io::Result<Self> {
        let mut w = BufWriter::new(File::create(path)?);
        w.write_all(&0xa1b2_c3d4u32.to_le_bytes())?;
        w.write_all(&2u16.to_le_bytes())?;
        w.write_all(&4u16.to_le_bytes())?;
        w.write_all(&0i32.to_le_bytes())?;
        w.write_all(&0u32.to_le_bytes())?;
        w.write_all(&SNAPLEN.to_le_bytes())?;
        w.write_all(&1u32.to_le_bytes())?; // LINKTYPE_ETHERNET
        Ok(PcapPort {
            inner,
            out: Mutex::new(w),
        })
    }

    /// The wrapped port.
    pub fn inner(&self) -> &P {
        &self.inner
    }

    fn record(&self, frames: &[Frame<'_>], pick: Option<&[u16]>) {
        let Ok(mut w) = self.out.lock() else { return };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let mut one = |fr: &Frame<'_>| -> io::Result<()> {
            let d = fr.data();
            let len = fr.wire_len() as u32;
            let incl = len.min(SNAPLEN);
            w.write_all(&(now.as_secs() as u32).to_le_bytes())?;
            w.write_all(&now.subsec_micros().to_le_bytes())?;
            w.write_all(&incl.to_le_bytes())?;
            w.write_all(&len.to_le_bytes())?;
            match fr.vlan {
                Some(tag) if d.len() >= 12 => {
                    w.write_all(&d[..12])?;
                    w.write_all(&tag.to_bytes())?;
                    w.write_all(&d[12..(incl as usize - 4).max(12)])?;
                }
                _ => w.write_all(&d[..incl as usize])?,
            }
            Ok(())
        };
        let res: io::Result<()> = match pick {
            Some(p) => p.iter().try_for_each(|&i| one(&frames[i as usize])),
            None => frames.iter().try_for_each(&mut one),
        };
        if let Err(e) = res.and_then(|_| w.flush()) {
            tracing::warn!(port = self.inner.name(), "pcap write failed: {e}");
        }
    }
}

impl<P: Port> Port for PcapPort<P> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn fd(&self) -> RawFd {
        self.inner.fd()
    }
    fn burst_limit(&self) -> usize {
        self.inner.burst_limit()
    }

    fn recv_burst(&self, max: usize, f: &mut BurstFn<'_>) -> io::Result<usize> {
        self.inner.recv_burst(max, &mut |frames| {
            self.record(frames, None);
            f(frames)
        })
    }
    fn send_burst(&self, frames: &[Frame<'_>], pick: &[u16]) -> SendReport {
        self.record(frames, Some(pick));
        self.inner.send_burst(frames, pick)
    }
    fn kernel_stats(&self) -> KernelStats {
        self.inner.kernel_stats()
    }
    fn set_receiving(&self, on: bool) -> io::Result<()> {
        self.inner.set_receiving(on)
    }
}
