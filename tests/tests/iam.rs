//! The IAM policies in `iam/` allow every AWS API the code calls: a new SDK call without its
//! permission fails here, not in production.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the repository")
        .to_path_buf()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn pascal(snake: &str) -> String {
    snake
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map_or(String::new(), |f| f.to_uppercase().chain(c).collect())
        })
        .collect()
}

/// `service:Action` for every SDK operation called as `.operation()` in `src`.
fn called_actions(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let ops: BTreeMap<String, Vec<String>> =
        serde_json::from_str(&read(&repo().join("iam/sdk-operations.json"))).expect("json");
    let mut service_of: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (service, list) in &ops {
        for op in list {
            service_of.entry(op).or_default().push(service);
        }
    }
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut found: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let text = read(&file);
        // `.operation()` possibly split over lines: `client\n    .split_shard()`.
        let bytes: Vec<char> = text.chars().collect();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == '.' {
                let start = i + 1;
                let mut j = start;
                while j < bytes.len() && (bytes[j].is_ascii_lowercase() || bytes[j] == '_') {
                    j += 1;
                }
                if j + 1 < bytes.len() && bytes[j] == '(' && bytes[j + 1] == ')' {
                    let name: String = bytes[start..j].iter().collect();
                    if let Some(services) = service_of.get(name.as_str()) {
                        assert_eq!(
                            services.len(),
                            1,
                            "{name} exists in several SDKs ({services:?}); extend this test to tell them apart"
                        );
                        let action = format!("{}:{}", iam_prefix(services[0]), pascal(&name));
                        for a in expand(&action) {
                            found.entry(a).or_default().insert(
                                file.strip_prefix(repo())
                                    .unwrap_or(&file)
                                    .display()
                                    .to_string(),
                            );
                        }
                    }
                }
                i = j.max(i + 1);
            } else {
                i += 1;
            }
        }
    }
    found
}

fn iam_prefix(sdk: &str) -> &str {
    match sdk {
        "cloudwatch" => "cloudwatch",
        "dynamodb" => "dynamodb",
        "kinesis" => "kinesis",
        other => panic!("unknown SDK {other}"),
    }
}

/// Transactions are authorised per item operation inside them.
fn expand(action: &str) -> Vec<String> {
    match action {
        "dynamodb:TransactWriteItems" => vec![
            "dynamodb:PutItem".to_string(),
            "dynamodb:ConditionCheckItem".to_string(),
        ],
        other => vec![other.to_string()],
    }
}

fn allowed(policy: &str) -> BTreeSet<String> {
    let doc: serde_json::Value = serde_json::from_str(&read(&repo().join(policy))).expect("json");
    let mut out = BTreeSet::new();
    for statement in doc["Statement"].as_array().expect("statements") {
        assert_eq!(
            statement["Effect"], "Allow",
            "{policy}: only Allow statements"
        );
        match &statement["Action"] {
            serde_json::Value::String(a) => {
                out.insert(a.clone());
            }
            serde_json::Value::Array(list) => {
                out.extend(list.iter().filter_map(|a| a.as_str().map(str::to_string)));
            }
            other => panic!("{policy}: unexpected Action {other}"),
        }
    }
    assert!(
        out.iter().all(|a| !a.contains('*')),
        "{policy}: no wildcard actions"
    );
    out
}

fn check(src: &str, policy: &str) {
    let called = called_actions(&repo().join(src));
    assert!(
        !called.is_empty(),
        "no AWS calls found under {src}: is the scanner broken?"
    );
    let allowed = allowed(policy);
    let missing: Vec<String> = called
        .iter()
        .filter(|(a, _)| !allowed.contains(*a))
        .map(|(a, files)| {
            format!(
                "{a} (called in {})",
                files.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        })
        .collect();
    assert!(missing.is_empty(), "{policy} lacks: {}", missing.join("; "));
    let unused: Vec<&String> = allowed
        .iter()
        .filter(|a| !called.contains_key(*a))
        .collect();
    println!(
        "{policy}: {} actions called, all allowed; allowed but not found in code: {unused:?}",
        called.len()
    );
}

// Only shardctl-controller links the AWS SDK (the binary and the simulator do not).
#[test]
fn the_controller_policy_allows_every_call_of_the_controller() {
    check("controller/core/src", "iam/controller-policy.json");
}

#[test]
fn the_consumer_policy_allows_every_call_of_the_consumer_library() {
    check("consumer/src", "iam/consumer-policy.json");
}

#[test]
fn the_sdk_operation_list_matches_the_pinned_clients() {
    // Guards the scanner: if the list were empty or stale, nothing would be found.
    let ops: BTreeMap<String, Vec<String>> =
        serde_json::from_str(&read(&repo().join("iam/sdk-operations.json"))).expect("json");
    for (service, expected) in [
        ("kinesis", "split_shard"),
        ("dynamodb", "transact_write_items"),
        ("cloudwatch", "get_metric_data"),
    ] {
        assert!(
            ops[service].iter().any(|o| o == expected),
            "{service} lacks {expected}"
        );
    }
}
