//! The command line as a user meets it: help for every verb, bad configs refused
//! with the line named, a daemon that cannot open its ports says why.

mod common;

use std::process::Command;

fn gw(args: &[&str]) -> std::process::Output {
    Command::new(common::guardwire_bin())
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn every_verb_has_help() {
    for verb in [
        "run", "check", "stats", "macs", "list", "mode", "attach", "detach",
    ] {
        let o = gw(&[verb, "--help"]);
        assert!(o.status.success(), "{verb} --help");
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("Usage"),
            "{verb} --help"
        );
    }
}

#[test]
fn bad_config_is_refused_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.toml");
    std::fs::write(
        &p,
        "[node]\nname = \"n\"\n\n[[workload]]\nname = \"a\"\nkind = \"pod\"\nworkload_port = \"wp-a\"\nuplink_port = \"wp-a\"\n",
    )
    .unwrap();
    let o = gw(&["check", "--config", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bad.toml:8: workload[0].uplink_port"), "{err}");

    std::fs::write(&p, "[node]\nname = \"n\"\nbogus = 1\n").unwrap();
    let o = gw(&["check", "--config", p.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2));
    assert!(err.contains("line 3") && err.contains("bogus"), "{err}");
}

#[test]
fn the_example_configs_are_valid() {
    for f in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/config")).unwrap() {
        let p = f.unwrap().path();
        if p.extension().is_some_and(|e| e == "toml")
            && p.file_name().is_some_and(|n| n != "apps.toml")
        {
            // Rule files have their own check; node configs the daemon's.
            let o = if p.file_name().is_some_and(|n| n == "rules.toml") {
                gw(&["rules", "check", p.to_str().unwrap()])
            } else {
                gw(&["check", "--config", p.to_str().unwrap()])
            };
            assert!(
                o.status.success(),
                "{}: {}",
                p.display(),
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
}

#[test]
fn missing_port_is_a_clear_error() {
    common::require_root();
    let ns = format!("gwcli{}", std::process::id());
    assert!(
        Command::new("ip")
            .args(["netns", "add", &ns])
            .status()
            .unwrap()
            .success()
    );
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("n.toml");
    let sock = dir.path().join("s.sock");
    std::fs::write(
        &p,
        format!(
            "[node]\nname = \"n\"\ncontrol_socket = \"{}\"\nstate_dir = \"{}\"\n[[workload]]\nname = \"a\"\nkind = \"pod\"\nworkload_port = \"nope0\"\nuplink_port = \"nope1\"\n",
            sock.display(),
            dir.path().display()
        ),
    )
    .unwrap();
    let o = Command::new("ip")
        .args(["netns", "exec", &ns])
        .arg(common::guardwire_bin())
        .args(["run", "--config", p.to_str().unwrap()])
        .output()
        .unwrap();
    let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("nope0"), "{err}");
    assert!(!sock.exists(), "no control socket is left behind");
}

#[test]
fn stats_without_daemon_says_so() {
    let o = gw(&["stats", "--socket", "/nonexistent/gw.sock"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot reach guardwire"));
}

#[test]
fn a_bad_rule_file_is_refused_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("rules.toml");
    std::fs::write(
        &p,
        "default = \"allow\"\n\n[[rule]]\nid = \"web\"\nproto = \"tcp\"\ndst_ports = \"443-80\"\naction = \"deny\"\n",
    )
    .unwrap();
    let o = gw(&["rules", "check", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("rules.toml:6:"), "{e}");
    assert!(e.contains("dst_ports"), "{e}");
}
