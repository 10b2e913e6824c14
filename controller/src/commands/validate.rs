//! `shardctl validate`: checks policy files and prints every problem with file, line and column.

use shardctl_controller::files::read_policy;
use std::path::PathBuf;
use std::process::ExitCode;

/// Checks `files`; fails if any is invalid.
pub fn run(files: &[PathBuf]) -> ExitCode {
    let mut failed = false;
    for f in files {
        match read_policy(f) {
            Ok(p) => {
                let names: Vec<_> = p.spec.streams.iter().map(|s| s.name.as_str()).collect();
                println!(
                    "{}: ok ({} streams: {})",
                    f.display(),
                    names.len(),
                    names.join(", ")
                );
            }
            Err(e) => {
                failed = true;
                eprintln!("{e:#}");
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
