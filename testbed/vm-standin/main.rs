//! A VM stand-in for the test bed: it holds a tap's file descriptor the way QEMU
//! does, and plays the guest by relaying every frame between that fd and an
//! interface inside a "guest" network namespace (where ping, a TCP server or
//! iperf3 run as they would inside the VM). Both sides carry the virtio-net
//! header, so GSO super-frames pass like they do between QEMU and its guest.

use clap::Parser;
use guardwire::port::{PacketPort, PacketPortOptions, Port, TapPort};
use guardwire::steer::netns;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Hold a tap like QEMU and be its guest.
#[derive(Parser)]
#[command(name = "guardwire-vmstandin", version)]
struct Args {
    /// Tap to create in this network namespace.
    #[arg(long)]
    tap: String,
    /// MAC of the tap device itself (the host side; the guest's MAC is the guest interface's).
    #[arg(long)]
    tap_mac: Option<String>,
    /// Network namespace of the guest.
    #[arg(long)]
    guest_netns: String,
    /// Interface in the guest namespace to relay to (the peer of the guest's eth0).
    #[arg(long, default_value = "relay0")]
    guest_if: String,
}

fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let v: Vec<u8> = s
        .split(':')
        .map(|h| u8::from_str_radix(h, 16))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bad MAC {s:?}: {e}"))?;
    v.try_into()
        .map_err(|_| format!("bad MAC {s:?}: need 6 bytes"))
}

fn relay(from: &dyn Port, to: &dyn Port) -> std::io::Result<usize> {
    let mut total = 0;
    loop {
        let n = from.recv_burst(64, &mut |frames| {
            let pick: Vec<u16> = (0..frames.len() as u16).collect();
            to.send_burst(frames, &pick);
        })?;
        total += n;
        if n < 64 {
            return Ok(total);
        }
    }
}

fn main() -> Result<(), String> {
    let a = Args::parse();
    let mac = a.tap_mac.as_deref().map(parse_mac).transpose()?;
    let tap: Arc<dyn Port> = Arc::new(TapPort::create(&a.tap, mac, 64).map_err(|e| e.to_string())?);
    let guest_if = a.guest_if.clone();
    let guest: Arc<dyn Port> = Arc::new(
        netns::run_in(&a.guest_netns, move || {
            PacketPort::open(&guest_if, &PacketPortOptions::default())
        })
        .map_err(|e| format!("guest side {}/{}: {e}", a.guest_netns, a.guest_if))?,
    );
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone()).map_err(|e| e.to_string())?;
    }
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    for (t, p) in [(0, &tap), (1, &guest)] {
        let fd = p.fd();
        poll.registry()
            .register(&mut SourceFd(&fd), Token(t), Interest::READABLE)
            .map_err(|e| e.to_string())?;
    }
    eprintln!(
        "vm-standin: tap {} <-> {}/{}",
        a.tap, a.guest_netns, a.guest_if
    );
    let mut events = Events::with_capacity(8);
    while !stop.load(Ordering::Relaxed) {
        if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(200)))
            && e.kind() != std::io::ErrorKind::Interrupted
        {
            return Err(e.to_string());
        }
        // Edge-triggered: drain both sides whatever woke us.
        if !events.is_empty() {
            relay(&*tap, &*guest).map_err(|e| e.to_string())?;
            relay(&*guest, &*tap).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}
