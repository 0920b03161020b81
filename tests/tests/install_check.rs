//! The fresh-machine install check (scripts/lib/deps.sh) finds the libclang that RocksDB's
//! bindgen loads, and is not fooled by libclang-cpp, which Debian machines carry without it.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Runs `libclang_present` with a fake `ldconfig -p` listing and an empty search folder, so only
/// the listing decides.
fn libclang_present_with_listing(listing: &str) -> bool {
    let dir = tempfile::tempdir().expect("temp dir");
    let fake_ldconfig = dir.path().join("ldconfig");
    std::fs::write(
        &fake_ldconfig,
        format!("#!/bin/sh\ncat <<'LISTING'\n{listing}\nLISTING\n"),
    )
    .expect("write fake ldconfig");
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).expect("empty dir");
    let status = Command::new("bash")
        .arg("-c")
        // As scripts/test.sh and network.sh run it.
        .arg("set -euo pipefail; chmod +x \"$LDCONFIG\"; source scripts/lib/deps.sh; libclang_present")
        .current_dir(repo_root())
        .env("LDCONFIG", &fake_ldconfig)
        .env("LIBCLANG_SEARCH_DIRS", &empty)
        .env_remove("LIBCLANG_PATH")
        .status()
        .expect("run bash");
    status.success()
}

#[test]
fn libclang_cpp_alone_is_not_libclang() {
    let listing = "1 libs found in cache `/etc/ld.so.cache'\n\
        \tlibclang-cpp.so.14 (libc6,x86-64) => /lib/x86_64-linux-gnu/libclang-cpp.so.14";
    assert!(
        !libclang_present_with_listing(listing),
        "libclang-cpp must not count as the libclang bindgen loads"
    );
}

#[test]
fn versioned_libclang_is_found() {
    let listing = "2 libs found in cache `/etc/ld.so.cache'\n\
        \tlibclang-cpp.so.14 (libc6,x86-64) => /lib/x86_64-linux-gnu/libclang-cpp.so.14\n\
        \tlibclang-14.so.1 (libc6,x86-64) => /lib/x86_64-linux-gnu/libclang-14.so.1";
    assert!(libclang_present_with_listing(listing));
}

#[test]
fn plain_libclang_so_is_found() {
    let listing = "\tlibclang.so (libc6,x86-64) => /usr/lib/llvm-14/lib/libclang.so";
    assert!(libclang_present_with_listing(listing));
}

/// A machine with many libraries: the match comes early in a listing far larger than a pipe's
/// buffer. Under `pipefail`, a `| grep -q` check saw the listing's writer die of SIGPIPE and
/// reported the library missing.
#[test]
fn libclang_early_in_a_long_listing_is_found() {
    let mut listing = String::from(
        "\tlibclang-14.so.1 (libc6,x86-64) => /lib/x86_64-linux-gnu/libclang-14.so.1\n",
    );
    for i in 0..20_000 {
        listing.push_str(&format!(
            "\tlibsomething{i}.so.1 (libc6,x86-64) => /lib/x86_64-linux-gnu/libsomething{i}.so.1\n"
        ));
    }
    assert!(libclang_present_with_listing(&listing));
}

#[test]
fn empty_cache_means_missing() {
    assert!(!libclang_present_with_listing("0 libs found in cache"));
}
