//! Dispatch-path benchmark (filled in with the worker).
fn main() {}
