//! `janusctl explain` as a user runs it: the real binary on a guard file.

use std::process::Command;

const JANUSCTL: &str = env!("CARGO_BIN_EXE_janusctl");

fn explain(spec: &str, paths: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("guard.yaml");
    std::fs::write(
        &file,
        format!("apiVersion: januscontroller.clustergarage.io/v1alpha1\nkind: JanusGuard\nmetadata:\n  name: t\nspec:\n{spec}"),
    )
    .unwrap();
    let out = Command::new(JANUSCTL).args(["explain", "-f"]).arg(&file).args(paths).output().unwrap();
    assert!(out.status.success(), "janusctl explain failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn explain_names_the_rule_and_the_process_exceptions() {
    let text = explain(
        "  subjects:\n  - deny: [/etc/secret]\n    events: [open]\n    autoAllowOwner: true\n    allowProcesses: [/usr/sbin/nginx, /bin/backup]\n",
        &["/etc/secret/key", "/etc/other"],
    );
    let open_line = text.lines().find(|l| l.trim_start().starts_with("open") && l.contains("deny")).expect(&text);
    assert!(open_line.contains("by `deny /etc/secret` (subjects[0])"), "{text}");
    assert!(open_line.contains("own process tree is allowed (autoAllowOwner)"), "{text}");
    assert!(
        open_line.contains("processes running /usr/sbin/nginx, /bin/backup are allowed (allowProcesses)"),
        "{text}"
    );
    let other = text.split("/etc/other").nth(1).expect(&text);
    assert!(other.lines().filter(|l| l.contains("no rule covers it")).count() == 3, "{text}");
}

#[test]
fn explain_rejects_a_pattern_in_allow_processes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("guard.yaml");
    std::fs::write(
        &file,
        "apiVersion: januscontroller.clustergarage.io/v1alpha1\nkind: JanusGuard\nmetadata:\n  name: t\nspec:\n  subjects:\n  - deny: [/s]\n    allowProcesses: [/usr/bin/*]\n",
    )
    .unwrap();
    let out = Command::new(JANUSCTL).args(["explain", "-f"]).arg(&file).arg("/s").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("spec.subjects[0].allowProcesses[0]") && err.contains("patterns are not allowed"), "{err}");
}
