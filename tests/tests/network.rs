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

/// Runs the first bash block of the README's section `title` as written, with `BIN` (and
/// `network.sh`'s `MEDLEDGER_BIN`) pointing at these binaries.
fn readme_block(bin_dir: &std::path::Path, title: &str) -> (bool, String) {
    let root = script()
        .parent()
        .and_then(std::path::Path::parent)
        .expect("repo root")
        .to_path_buf();
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let section = readme
        .split(&format!("## {title}"))
        .nth(1)
        .unwrap_or_else(|| panic!("README has a section '{title}'"));
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
        .env("MEDLEDGER_BIN", bin_dir)
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
        ("medledger-medical-chaincode", "medical-chaincode"),
        ("medledger-explorer", "medledger-explorer"),
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

    // A missing binary and a port in use: clear messages, nothing left running.
    let empty = tempfile::tempdir().expect("tempdir");
    let (ok, out) = run(empty.path(), "up");
    assert!(
        !ok && out.contains("missing binary"),
        "up without binaries must say so: {out}"
    );
    let busy = std::net::TcpListener::bind("127.0.0.1:7051").expect("port 7051 free for the test");
    let (ok, out) = run(&bin_dir, "up");
    assert!(
        !ok && out.contains("port 7051 is in use"),
        "up with a port in use must say so: {out}"
    );
    drop(busy);
    assert!(
        !script().parent().unwrap().join("pids").exists(),
        "a refused up leaves nothing behind"
    );

    let (ok, out) = run(&bin_dir, "up");
    assert!(ok, "up failed:\n{out}");
    assert!(out.contains("network is up"), "{out}");
    assert_eq!(
        out.matches("Successfully submitted proposal to join channel")
            .count(),
        2,
        "both peers join the channel through the CLI:\n{out}"
    );
    let (ok, out2) = run(&bin_dir, "up");
    assert!(!ok && out2.contains("already up"), "{out2}");

    let (ok, out) = run(&bin_dir, "deployCC");
    let readme = readme_block(&bin_dir, "Using the network");
    let walkthrough = readme_block(&bin_dir, "Walkthrough");
    let ca_block = readme_block(&bin_dir, "The certificate authority");
    let (join_ok, join_out) = readme_block(&bin_dir, "Changing the channel: a hospital joins");
    let (revoke_ok, revoke_out) = readme_block(&bin_dir, "Changing the channel: revoking a member");
    let (down_ok, down_out) = run(&bin_dir, "down");
    let (readme_ok, readme_out) = readme;
    let (walk_ok, walk_out) = walkthrough;
    let (ca_ok, ca_out) = ca_block;
    assert!(
        ca_ok
            && ca_out.contains("enrolled doctor1")
            && ca_out.contains("Successfully added identity radiologist1")
            && ca_out
                .contains("Successfully modified affiliation clinic.radiology to clinic.imaging")
            && ca_out.contains("doctor1.pem")
            && ca_out.contains("Successfully removed identity radiologist1"),
        "the README's CA commands failed:\n{ca_out}"
    );
    assert!(walk_ok, "the README walkthrough failed:\n{walk_out}");
    assert!(
        join_ok
            && join_out.contains("Hospital3MSP is a member of medchannel")
            && join_out.contains("Chaincode invoke successful")
            && join_out.contains("resourceType"),
        "Hospital3 joining the running channel:\n{join_out}"
    );
    assert!(
        revoke_ok
            && revoke_out.contains("nurse1@Hospital1MSP is revoked on every node")
            && revoke_out.contains("nurse1 refused after revocation")
            && revoke_out.contains("revoked"),
        "revoking a member through a channel update:\n{revoke_out}"
    );
    for (what, needle) in [
        (
            "the record, the consent, the share, the access and the certificate commit",
            "Chaincode invoke successful",
        ),
        ("Hospital2 reads the shared record", "7.9 %"),
        (
            "the shared copy proves against the ledger's salted commitment",
            "content proven against the ledger",
        ),
        (
            "the read after revocation is refused",
            "refused, as it should be",
        ),
        ("the provenance names the author", "doctor7"),
        (
            "the provenance names the reader",
            "\"readerMsp\":\"Hospital2MSP\"",
        ),
        ("the certificate verifies", "\"status\":\"valid\""),
        ("the record's proof verifies offline", "Proof verified."),
        (
            "the erased shared copy still proves by its hash",
            "ERASED private shared/R-100/Hospital2MSP",
        ),
        ("the verified history as FHIR", "FHIR R4 resources"),
    ] {
        assert!(walk_out.contains(needle), "{what}:\n{walk_out}");
    }
    assert_eq!(
        walk_out.matches("Chaincode invoke successful").count(),
        5,
        "record, consent, share, revocation, certificate (the access request's output is the ticket):\n{walk_out}"
    );
    assert!(
        walk_out.contains("has been revoked"),
        "the refusal says why:\n{walk_out}"
    );
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
    assert!(
        out.contains(r#""id":"R-0001""#) && out.contains(r#""custodian":"Hospital1MSP""#),
        "Hospital2's peer reads the medical record's public entry:\n{out}"
    );
    assert!(
        !out.contains("128/82"),
        "the record's content is not in the public entry:\n{out}"
    );
    for step in [
        "Chaincode code package identifier: medical_1.0:",
        "Chaincode definition approved for Hospital1MSP",
        "Chaincode definition approved for Hospital2MSP",
        "Hospital1MSP: true",
        "Hospital2MSP: true",
        "committed on channel 'medchannel'",
        "Version: 1.0, Sequence: 1",
    ] {
        assert!(
            out.contains(step),
            "deployCC runs the lifecycle ({step}):\n{out}"
        );
    }

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
