//! The supported public API of `shardctl-consumer`, as `consumer/public-api.txt` lists it (the
//! crate's workings are public only for its own tests and hidden; see the crate docs). A change
//! to the API fails here with a diff until the listing is updated on purpose:
//!
//! ```text
//! UPDATE_SNAPSHOTS=1 cargo test -p shardctl-consumer --test public_api
//! ```
//!
//! The listing comes from rustdoc's JSON output (`cargo rustdoc -- --output-format json`, which
//! the stable toolchain gives with `RUSTC_BOOTSTRAP=1`) read by the `public-api` crate, into its
//! own target directory so it never waits for the build lock of the running `cargo test`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;
use std::process::Command;

#[test]
fn public_api_matches_the_committed_listing() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = crate_dir.join("../target/public-api");
    let out = Command::new(env!("CARGO"))
        .args([
            "rustdoc",
            "-p",
            "shardctl-consumer",
            "--lib",
            "--quiet",
            "--target-dir",
        ])
        .arg(&target)
        .args(["--", "-Z", "unstable-options", "--output-format", "json"])
        .env("RUSTC_BOOTSTRAP", "1")
        .current_dir(crate_dir)
        .output()
        .expect("run cargo rustdoc");
    assert!(
        out.status.success(),
        "cargo rustdoc failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let api = public_api::Builder::from_rustdoc_json(target.join("doc/shardctl_consumer.json"))
        .omit_blanket_impls(true)
        .omit_auto_trait_impls(true)
        .omit_auto_derived_impls(true)
        .build()
        .expect("read the rustdoc JSON");
    api.assert_eq_or_update(crate_dir.join("public-api.txt"));
}
