//! The node API against its own OpenAPI document: schemathesis (from PyPI)
//! generates requests from the document, valid and not, and checks that no
//! answer is a 5xx and every answer fits the document (status, content type,
//! body). Root; a daemon in namespaces of its own, whose "host" namespace is
//! an empty one, so generated attach requests can reach no real device.

mod common;

use common::*;
use std::process::Command;

/// Where `.ci/run` installs the Python tools the tests use.
fn venv() -> std::path::PathBuf {
    std::env::var_os("GW_CI_VENV")
        .map(Into::into)
        .unwrap_or_else(|| "/var/cache/guardwire-ci/venv".into())
}

#[test]
fn the_api_keeps_to_its_openapi_document_under_generated_requests() {
    require_root();
    let st = venv().join("bin/schemathesis");
    assert!(
        st.exists(),
        "{} is missing: .ci/run installs it (python3 -m venv + pip install schemathesis)",
        st.display()
    );
    let host = TempNetns::new("tsc1-host");
    let sec = TempNetns::new("tsc1-sec");
    let lo = Command::new("ip")
        .args(["-n", &sec.0, "link", "set", "lo", "up"])
        .status()
        .unwrap();
    assert!(lo.success());
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "[node]\nname = \"schema\"\ncontrol_socket = \"{{socket}}\"\nstate_dir = \"{{state}}\"\n\
         host_netns = \"/var/run/netns/{}\"\n\
         [api]\nlisten = \"127.0.0.1:7443\"\nrate_per_sec = 100000\nburst = 100000\n",
        host.0
    );
    let d = Daemon::start(&sec.0, dir.path(), &cfg);
    let token = std::fs::read_to_string(dir.path().join("state/api/admin.token")).unwrap();
    let examples = std::env::var("GW_SCHEMA_EXAMPLES").unwrap_or_else(|_| "30".into());
    let out = Command::new("timeout")
        .args(["600", "ip", "netns", "exec", &sec.0])
        .arg(&st)
        .args([
            "run",
            "http://127.0.0.1:7443/api/v1/openapi.json",
            "--header",
            &format!("Authorization: Bearer {}", token.trim()),
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--max-examples",
            &examples,
            "--seed",
            "1",
            "--workers",
            "1",
            "--request-timeout",
            "10",
            // A stream never ends; it has its own test.
            "--exclude-path",
            "/api/v1/log/stream",
        ])
        .env("SCHEMATHESIS_HOOKS", "")
        // It keeps a cache in its working directory: not in the repo.
        .current_dir(dir.path())
        .output()
        .expect("run schemathesis");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let tail: Vec<&str> = text.lines().rev().take(60).collect();
    eprintln!("{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
    assert!(
        out.status.success(),
        "schemathesis found answers that break the document (log above); daemon log:\n{}",
        std::fs::read_to_string(&d.log).unwrap_or_default()
    );
    // The daemon is still whole afterwards.
    assert_eq!(d.client().health().unwrap().status, "ok");
}
