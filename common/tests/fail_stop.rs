//! A panic anywhere in a node process stops the process (fail-stop), instead of killing one task
//! while the rest, `/healthz` included, carries on.

use std::process::Command;
use std::time::Duration;

use medledger_common::config::{FAIL_STOP_EXIT_CODE, fail_stop_on_panic};

const PROBE: &str = "MEDLEDGER_FAIL_STOP_PROBE";

#[test]
fn a_panic_in_a_spawned_task_stops_the_process() {
    if std::env::var_os(PROBE).is_some() {
        // The child: a runtime whose task panics, as a consensus or commit task might.
        fail_stop_on_panic();
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            let task = tokio::spawn(async { panic!("a bug in a node task") });
            let _ = task.await;
            tokio::time::sleep(Duration::from_secs(3)).await;
        });
        // Still running: the panic was contained in its task.
        std::process::exit(0);
    }
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "a_panic_in_a_spawned_task_stops_the_process",
            "--nocapture",
        ])
        .env(PROBE, "1")
        .output()
        .expect("run the probe");
    assert_eq!(
        out.status.code(),
        Some(FAIL_STOP_EXIT_CODE),
        "the process outlived a panicking task: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
