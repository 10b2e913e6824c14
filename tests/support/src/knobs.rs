//! Benchmarks' settings from the environment.

/// The whole number in environment variable `name`, or `default` when it is unset or not a
/// whole number.
///
/// ```
/// assert_eq!(shardctl_test_support::knob("SHARDCTL_DOC_UNSET_KNOB", 7), 7);
/// ```
pub fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
