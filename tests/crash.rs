//! SIGKILL in the middle of an attach or a detach, at every step between its
//! first kernel change and its saved result: the watchdog puts the pod's
//! devices back as they were before the attach (the pod reaches its peer
//! again), the next start mends the saved state, and the pod can be attached
//! and detached again. Needs root.

mod common;

use common::*;
use guardwire::control::http::types::{AttachOptions, AttachPod};
use std::path::Path;
use std::time::Duration;

fn config(n: &Node) -> String {
    format!(
        "[node]\nname = \"t\"\ncontrol_socket = \"{{socket}}\"\nstate_dir = \"{{state}}\"\nhost_netns = \"/var/run/netns/{}\"\ndefault_on_failure = \"open\"\n",
        n.var("NS_HOST")
    )
}

fn attach_req(pod: &str) -> AttachPod {
    AttachPod {
        netns: pod.to_string(),
        ifname: "eth0".into(),
        options: AttachOptions {
            name: Some("pod1".into()),
            ..Default::default()
        },
    }
}

/// Waits until the daemon has died and its watchdog has put the devices of
/// the interrupted operation back (it marks the intent record so).
fn wait_recovered(d: Daemon, state: &Path) {
    let log = d.log.clone();
    d.wait_exit(Duration::from_secs(10));
    let t = std::time::Instant::now();
    while !std::fs::read_to_string(state.join("intent.json"))
        .is_ok_and(|t| t.contains("\"undone\": true"))
    {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the watchdog did not recover the devices:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigkill_during_attach_or_detach_never_cuts_the_pod_off() {
    let n = Node::up("tcr1", &["--pods", "1", "--forwarder", "none", "--live"]);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let cfg = config(&n);
    let pod = n.pod_ns(1);
    let peer = n.var("PEER_IP").to_string();
    let host_before = snapshot(&n, n.var("NS_HOST"), false);
    let pod_before = snapshot(&n, &pod, true);
    let check_restored = |what: &str| {
        same(
            snapshot(&n, n.var("NS_HOST"), false),
            &host_before,
            &format!("host ns {what}"),
        );
        same(
            snapshot(&n, &pod, true),
            &pod_before,
            &format!("pod ns {what}"),
        );
        n.ping(&pod, &peer, 2);
    };
    for step in ["pair", "move", "carry-over", "wired", "saved"] {
        let d = Daemon::start_with_env(
            n.var("NS_SEC"),
            dir.path(),
            &cfg,
            &[("GUARDWIRE_CRASH_AT", step)],
        );
        assert!(d.client().attach_pod(&attach_req(&pod)).is_err(), "{step}");
        if step == "saved" {
            // The attach had finished: it stands, failed open by the watchdog.
            d.wait_exit(Duration::from_secs(10));
            wait_for(
                || {
                    n.exec(&pod, &["ping", "-c", "1", "-W", "1", &peer])
                        .status
                        .success()
                },
                "the watchdog to fail the pod open",
            );
        } else {
            wait_recovered(d, &state);
            check_restored(&format!("after a crash in attach at {step}"));
        }
        // The next start mends the state: the pod can be attached (or is
        // attached), and detached.
        let d = Daemon::start(n.var("NS_SEC"), dir.path(), &cfg);
        let c = d.client();
        assert!(!state.join("intent.json").exists(), "{step}: intent left");
        let list = c.workloads().unwrap();
        if step == "saved" {
            assert_eq!(list.len(), 1, "{step}: {list:?}");
        } else {
            assert!(list.is_empty(), "{step}: {list:?}");
            c.attach_pod(&attach_req(&pod)).unwrap();
        }
        n.ping(&pod, &peer, 2);
        c.detach("pod1").unwrap();
        drop(d);
        check_restored(&format!(
            "after attach and detach following a crash at {step}"
        ));
    }
    for step in ["detach", "detach-pair-gone", "detach-home"] {
        let d = Daemon::start(n.var("NS_SEC"), dir.path(), &cfg);
        d.client().attach_pod(&attach_req(&pod)).unwrap();
        drop(d);
        let d = Daemon::start_with_env(
            n.var("NS_SEC"),
            dir.path(),
            &cfg,
            &[("GUARDWIRE_CRASH_AT", step)],
        );
        n.ping(&pod, &peer, 2);
        assert!(d.client().detach("pod1").is_err(), "{step}");
        wait_recovered(d, &state);
        check_restored(&format!("after a crash in detach at {step}"));
        let d = Daemon::start(n.var("NS_SEC"), dir.path(), &cfg);
        let c = d.client();
        assert!(c.workloads().unwrap().is_empty(), "{step}");
        assert!(!state.join("intent.json").exists(), "{step}: intent left");
        c.attach_pod(&attach_req(&pod)).unwrap();
        n.ping(&pod, &peer, 2);
        c.detach("pod1").unwrap();
        drop(d);
        check_restored(&format!(
            "after a crash in detach at {step}, then attach and detach"
        ));
    }
}
