//! A real QEMU guest (Debian kernel, busybox initramfs, virtio-net on
//! `-netdev tap`, TCG) attached live by its tap: ping and an HTTP transfer
//! checked by sha256 cross guardwire. Needs root; builds the guest image with
//! `testbed/qemu/build-guest.sh` (cached) on first use. Bounded: the guest must
//! be up within 60 s.

mod common;

use common::*;
use std::process::Command;

fn qemu_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/testbed/qemu"))
}

struct Vm(&'static str);

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(qemu_dir().join("run-vm.sh"))
            .args(["stop", self.0])
            .status();
    }
}

#[test]
fn real_qemu_guest_attached_by_its_tap() {
    require_root();
    let b = Command::new("bash")
        .arg(qemu_dir().join("build-guest.sh"))
        .output()
        .unwrap();
    assert!(
        b.status.success(),
        "build-guest.sh: {}",
        String::from_utf8_lossy(&b.stderr)
    );
    let n = Node::up("tqm1", &["--pods", "1", "--live"]);
    let host = n.var("NS_HOST").to_string();
    let vm = Vm("gwtest-qvm");
    let o = Command::new("bash")
        .arg(qemu_dir().join("run-vm.sh"))
        .args([
            "start",
            vm.0,
            "--netns",
            &host,
            "--tap",
            "tap-q1",
            "--mac",
            "52:54:00:12:34:41",
        ])
        .args([
            "--ip",
            "10.244.0.201/24",
            "--gw",
            "10.244.0.1",
            "--timeout",
            "60",
        ])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "VM start: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    eprintln!("{}", String::from_utf8_lossy(&o.stdout).trim());
    n.ok(&host, &["ip", "link", "set", "tap-q1", "master", "cni0"]);
    n.ping(n.var("NS_PEER"), "10.244.0.201", 2);

    let sock = n.var("GW_SOCK").to_string();
    let o = Command::new(guardwire_bin())
        .args([
            "attach", "vm", "--tap", "tap-q1", "--name", "qvm", "--socket", &sock,
        ])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "attach: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    n.ping(n.var("NS_PEER"), "10.244.0.201", 5);
    let want = std::fs::read_to_string("/var/cache/guardwire-qemu/blob.sha256").unwrap();
    let got = n.ok(
        n.var("NS_PEER"),
        &[
            "sh",
            "-c",
            "timeout 60 busybox wget -qO- http://10.244.0.201/blob | sha256sum | cut -c1-64",
        ],
    );
    assert_eq!(
        got.trim(),
        want.trim(),
        "1 MiB over HTTP from the guest, through guardwire"
    );
    let s = n.stats();
    // The guest's virtio-net uses TSO: the 1 MiB comes as a few dozen super-frames.
    let c = &port(&s, "wp-qvm").counters;
    assert!(
        c.rx_bytes > 1 << 20,
        "the guest's bytes cross guardwire: {c:?}"
    );
    let o = Command::new(guardwire_bin())
        .args(["detach", "qvm", "--socket", &sock])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "detach: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    n.ping(n.var("NS_PEER"), "10.244.0.201", 2);
}
