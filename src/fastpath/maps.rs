//! The maps `fastpath.bpf.c` shares with guardwire, as Rust sees them: the
//! same layouts (`repr(C)`, checked by size below), and the map commands
//! guardwire needs, straight over the `bpf(2)` syscall; a per-CPU map's value
//! is one copy per possible CPU.
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

/// `struct state`: the epoch in force and the keep-alive deadline.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// 0: the kernel forwards nothing.
    pub epoch: u64,
    /// CLOCK_MONOTONIC ns.
    pub alive_ns: u64,
}

/// `struct value`: one CPU's copy of the entry of one direction of one flow.
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

/// One map, by its descriptor: values of `copies` times `V` (1, or the
/// possible CPUs of a per-CPU map).
pub struct Map<K, V> {
    fd: OwnedFd,
    copies: usize,
    _kv: std::marker::PhantomData<(K, V)>,
}

impl<K: Copy + Default, V: Copy + Default> Map<K, V> {
    /// Wraps a map descriptor whose key is `K` and value `copies` times `V`
    /// (`V` a multiple of 8 bytes, as the kernel lays per-CPU copies out).
    pub fn new(fd: OwnedFd, copies: usize) -> Self {
        assert!(copies == 1 || size_of::<V>().is_multiple_of(8));
        Map {
            fd,
            copies: copies.max(1),
            _kv: std::marker::PhantomData,
        }
    }

    /// Copies per value.
    pub fn copies(&self) -> usize {
        self.copies
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
        // `key` points at a `K` and `value` (when not 0) at `copies` times
        // `V`, the sizes the map was created with, both live for the call.
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

    /// The value (every copy) of `key`, if present.
    pub fn get(&self, key: &K) -> io::Result<Option<Vec<V>>> {
        let mut v = vec![V::default(); self.copies];
        match self.call(BPF_MAP_LOOKUP_ELEM, key, v.as_mut_ptr() as u64, 0) {
            Ok(()) => Ok(Some(v)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sets `key` to `value`, one copy each (`value` has them all).
    pub fn set(&self, key: &K, value: &[V]) -> io::Result<()> {
        assert_eq!(value.len(), self.copies, "a value for every copy");
        self.call(BPF_MAP_UPDATE_ELEM, key, value.as_ptr() as u64, 0)
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
    pub fn take(&self, key: &K) -> io::Result<Option<Vec<V>>> {
        let mut v = vec![V::default(); self.copies];
        match self.call(
            BPF_MAP_LOOKUP_AND_DELETE_ELEM,
            key,
            v.as_mut_ptr() as u64,
            0,
        ) {
            Ok(()) => Ok(Some(v)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// One value of a per-CPU flow entry: the counters summed over the copies,
/// the rest as in the first (every copy has the same).
pub fn summed(copies: &[Value]) -> Value {
    let mut v = copies.first().copied().unwrap_or_default();
    for c in copies.iter().skip(1) {
        v.frames += c.frames;
        v.packets += c.packets;
        v.bytes += c.bytes;
        v.last_ns = v.last_ns.max(c.last_ns);
    }
    v
}
