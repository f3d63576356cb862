//! Kernel plumbing around guardwire's ports: the sec ns must not handle a second
//! copy of any frame guardwire forwards, and helpers to act in other namespaces.

pub mod attach;
pub mod netlink;
pub mod netns;
pub mod tc;

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// Errors of the plumbing.
#[derive(Debug, thiserror::Error)]
pub enum SteerError {
    /// A sysctl could not be written.
    #[error("cannot set {path}: {source}")]
    Sysctl {
        /// The /proc/sys path.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// A port carries an IP address, so the sec ns kernel would answer on it.
    #[error(
        "port {port} carries address {addr}: guardwire's ports must carry no IP (ip addr flush dev {port})"
    )]
    PortHasAddress {
        /// The port.
        port: String,
        /// The address found.
        addr: String,
    },
    /// An interface operation failed.
    #[error("{what} {port}: {source}")]
    Link {
        /// What was being done.
        what: &'static str,
        /// The port.
        port: String,
        /// Why.
        source: io::Error,
    },
}

fn write_sysctl(path: &str, value: &str) -> Result<(), SteerError> {
    std::fs::write(path, value).map_err(|source| SteerError::Sysctl {
        path: path.to_string(),
        source,
    })
}

/// Makes the sec ns a pure wire for guardwire: no IPv4 forwarding.
pub fn prepare_sec_ns() -> Result<(), SteerError> {
    write_sysctl("/proc/sys/net/ipv4/ip_forward", "0")
}

/// Prepares one port: IPv6 off (no link-local address, no neighbour discovery),
/// no IPv4 address, link up.
pub fn prepare_port(name: &str) -> Result<(), SteerError> {
    let v6 = format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6");
    if Path::new(&v6).exists() {
        write_sysctl(&v6, "1")?;
    }
    if let Some(addr) = ipv4_addresses()?.into_iter().find(|(n, _)| n == name) {
        return Err(SteerError::PortHasAddress {
            port: name.to_string(),
            addr: addr.1,
        });
    }
    set_up(name).map_err(|source| SteerError::Link {
        what: "cannot set up",
        port: name.to_string(),
        source,
    })
}

/// IPv4 addresses per interface in this namespace.
fn ipv4_addresses() -> Result<Vec<(String, String)>, SteerError> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(SteerError::Link {
            what: "getifaddrs",
            port: String::new(),
            source: io::Error::last_os_error(),
        });
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr is non-null and points to a sockaddr of the family given.
            let fam = unsafe { (*ifa.ifa_addr).sa_family } as i32;
            if fam == libc::AF_INET {
                // SAFETY: family AF_INET means the storage is a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                // SAFETY: ifa_name is a NUL-terminated string owned by the list.
                let name = unsafe { CStr::from_ptr(ifa.ifa_name) }
                    .to_string_lossy()
                    .into_owned();
                let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                out.push((name, ip.to_string()));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: frees exactly the list getifaddrs allocated.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// Sets an interface up (SIOCSIFFLAGS).
pub fn set_up(name: &str) -> io::Result<()> {
    if name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name too long",
        ));
    }
    // SAFETY: plain socket(2); the result is checked before use.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor that nothing else owns; closed on drop.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    let s = sock.as_raw_fd();
    // SAFETY: ifreq is plain old data; all-zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, b) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = b as libc::c_char;
    }
    // SAFETY: `req` is a valid ifreq with a NUL-terminated name (zeroed tail).
    let mut r = unsafe { libc::ioctl(s, libc::SIOCGIFFLAGS, &mut req) };
    if r == 0 {
        // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
        unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
        // SAFETY: as above, with the flags to set.
        r = unsafe { libc::ioctl(s, libc::SIOCSIFFLAGS, &req) };
    }
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
