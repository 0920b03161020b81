//! The test network as a user runs it: `network.sh up`, `deployCC` (a committed invoke endorsed by
//! both hospitals and ordered by the BFT orderers, then a query on the other hospital's peer), the
//! refusals (`up` twice, `deployCC` again), and `down` (twice) leaving nothing running.

use std::path::PathBuf;
use std::process::Command;

use medledger_tests::workspace_binary;

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../network/network.sh")
}

fn run(bin_dir: &std::path::Path, arg: &str) -> (bool, String) {
    let out = Command::new("bash")
        .arg(script())
        .arg(arg)
        .env("MEDLEDGER_BIN", bin_dir)
        .output()
        .expect("bash runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Runs the README's "Using the network" block as written, with `BIN` pointing at these binaries.
fn readme_usage(bin_dir: &std::path::Path) -> (bool, String) {
    let root = script()
        .parent()
        .and_then(std::path::Path::parent)
        .expect("repo root")
        .to_path_buf();
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let section = readme
        .split("## Using the network")
        .nth(1)
        .expect("README has 'Using the network'");
    let block = section
        .split("```bash")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a bash block");
    let script: String = block
        .lines()
        .map(|l| {
            if l.starts_with("BIN=") {
                format!("BIN={}", bin_dir.display())
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(&root)
        .output()
        .expect("bash runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn network_up_deploy_invoke_and_down() {
    let mut bin_dir = PathBuf::new();
    for (pkg, bin) in [
        ("medledger-ca", "medledger-ca"),
        ("medledger-orderer", "medledger-orderer"),
        ("medledger-peer", "medledger-peer"),
        ("medledger-shim", "kvstore-chaincode"),
    ] {
        let path = workspace_binary(pkg, bin).expect("binary builds");
        bin_dir = path.parent().expect("bin dir").to_path_buf();
    }
    let _ = run(&bin_dir, "down");

    let (ok, out) = run(&bin_dir, "deployCC");
    assert!(
        !ok && out.contains("not up"),
        "deployCC before up must refuse: {out}"
    );

    let (ok, out) = run(&bin_dir, "up");
    assert!(ok, "up failed:\n{out}");
    assert!(out.contains("network is up"), "{out}");
    let (ok, out2) = run(&bin_dir, "up");
    assert!(!ok && out2.contains("already up"), "{out2}");

    let (ok, out) = run(&bin_dir, "deployCC");
    let readme = readme_usage(&bin_dir);
    let (down_ok, down_out) = run(&bin_dir, "down");
    let (readme_ok, readme_out) = readme;
    assert!(
        readme_ok,
        "the README's 'Using the network' commands failed:\n{readme_out}"
    );
    assert!(
        readme_out.contains("Chaincode invoke successful"),
        "{readme_out}"
    );
    assert!(
        readme_out.contains(r#""value":"v1""#),
        "history shows the write: {readme_out}"
    );
    assert!(
        readme_out.contains("ledger_blockchain_height{channel=\"medchannel\"}"),
        "{readme_out}"
    );
    assert!(ok, "deployCC failed:\n{out}");
    assert!(
        out.contains("Chaincode invoke successful") && out.contains("(VALID)"),
        "{out}"
    );
    assert!(
        out.contains(r#"{"resourceType":"Observation","status":"final"}"#),
        "the query on Hospital2's peer reads the committed value:\n{out}"
    );

    assert!(down_ok, "{down_out}");
    let (ok, _) = run(&bin_dir, "down");
    assert!(ok, "down twice is safe");
    let left = Command::new("pgrep")
        .args(["-f", &bin_dir.join("medledger-").display().to_string()])
        .output()
        .expect("pgrep");
    assert!(
        String::from_utf8_lossy(&left.stdout).trim().is_empty(),
        "processes left running after down"
    );
    assert!(
        !script().parent().unwrap().join("organizations").exists(),
        "generated material removed"
    );
}
