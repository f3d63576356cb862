//! The maps `fastpath.bpf.c` shares with guardwire, as Rust sees them: the
//! same layouts (`repr(C)`, checked by size below), and the five map commands
//! guardwire needs, straight over the `bpf(2)` syscall.
//!
//! aya loads the object, attaches the programs and hands over the maps'
//! descriptors; the element commands are written here because aya has no
//! lookup-and-delete for hash maps (the one atomic way to take an entry's last
//! counters as it goes) and because plain descriptors need no lock when
//! several workers install entries at once.

use crate::pipeline::flow::FlowKey;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};

/// `struct key`: the flow key of `FlowKey`, with the workload's slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Key {
    pub slot: u32,
    pub proto: u8,
    pub family: u8,
    /// 0: lo to hi, 1: hi to lo.
    pub dir: u8,
    pub pad: u8,
    pub lo_port: u16,
    pub hi_port: u16,
    pub lo: [u8; 16],
    pub hi: [u8; 16],
}

fn addr(a: IpAddr) -> (u8, [u8; 16]) {
    let mut b = [0u8; 16];
    match a {
        IpAddr::V4(v) => {
            b[..4].copy_from_slice(&v.octets());
            (4, b)
        }
        IpAddr::V6(v) => (6, v.octets()),
    }
}

impl Key {
    /// The kernel's key of one direction of a flow.
    pub fn of(k: &FlowKey, lo_to_hi: bool) -> Key {
        let (family, lo) = addr(k.lo.0);
        let (_, hi) = addr(k.hi.0);
        Key {
            slot: k.workload.slot() as u32,
            proto: k.proto,
            family,
            dir: u8::from(!lo_to_hi),
            pad: 0,
            lo_port: k.lo.1,
            hi_port: k.hi.1,
            lo,
            hi,
        }
    }
}

/// `struct port`: one of guardwire's ports, and what the kernel forwarded in
/// and out by it (a GSO super-frame is one frame, bytes as on the wire).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Port {
    /// Its workload's slot.
    pub slot: u32,
    pub pad: u32,
    pub rx_frames: u64,
    pub rx_bytes: u64,
    pub tx_frames: u64,
    pub tx_bytes: u64,
}

/// `struct side`: one direction handed to the kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Side {
    /// The port frames of this direction arrive on; 0: not handed over.
    pub in_ifindex: u32,
    /// The port they leave by.
    pub out_ifindex: u32,
    pub src: [u8; 6],
    pub dst: [u8; 6],
    pub vlan_tci: u16,
    /// Network byte order, as the kernel keeps it.
    pub vlan_proto: u16,
    pub vlan_present: u8,
    pub pad: [u8; 3],
}

/// `struct value`: the entry of one direction of one flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Value {
    pub epoch: u64,
    pub side: Side,
    pub pad: u32,
    pub frames: u64,
    /// GSO segments.
    pub packets: u64,
    pub bytes: u64,
    /// CLOCK_MONOTONIC ns of the last frame the kernel forwarded.
    pub last_ns: u64,
}

const _: () = assert!(size_of::<Key>() == 44);
const _: () = assert!(size_of::<Port>() == 40);
const _: () = assert!(size_of::<Side>() == 28);
const _: () = assert!(size_of::<Value>() == 72);

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;

/// The map-element part of `union bpf_attr`.
#[repr(C)]
struct ElemAttr {
    map_fd: u32,
    pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// One map, by its descriptor.
pub struct Map<K, V> {
    fd: OwnedFd,
    _kv: std::marker::PhantomData<(K, V)>,
}

impl<K: Copy + Default, V: Copy + Default> Map<K, V> {
    /// Wraps a map descriptor whose key and value are `K` and `V`.
    pub fn new(fd: OwnedFd) -> Self {
        Map {
            fd,
            _kv: std::marker::PhantomData,
        }
    }

    fn call(&self, cmd: libc::c_long, key: *const K, value: u64, flags: u64) -> io::Result<()> {
        let mut attr = ElemAttr {
            map_fd: self.fd.as_raw_fd() as u32,
            pad: 0,
            key: key as u64,
            value,
            flags,
        };
        // SAFETY: `attr` is a valid map-element `bpf_attr` of its own size;
        // `key` points at a `K` and `value` (when not 0) at a `K` or `V`, the
        // sizes the map was created with, both live for the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                &mut attr as *mut ElemAttr,
                size_of::<ElemAttr>() as u32,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &K) -> io::Result<Option<V>> {
        let mut v = V::default();
        match self.call(BPF_MAP_LOOKUP_ELEM, key, &mut v as *mut V as u64, 0) {
            Ok(()) => Ok(Some(v)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sets `key` to `value`.
    pub fn set(&self, key: &K, value: &V) -> io::Result<()> {
        self.call(BPF_MAP_UPDATE_ELEM, key, value as *const V as u64, 0)
    }

    /// Removes `key`; false when it was not there.
    pub fn remove(&self, key: &K) -> io::Result<bool> {
        match self.call(BPF_MAP_DELETE_ELEM, key, 0, 0) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Removes `key` and returns its last value, in one step.
    pub fn take(&self, key: &K) -> io::Result<Option<V>> {
        let mut v = V::default();
        match self.call(
            BPF_MAP_LOOKUP_AND_DELETE_ELEM,
            key,
            &mut v as *mut V as u64,
            0,
        ) {
            Ok(()) => Ok(Some(v)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }
}
