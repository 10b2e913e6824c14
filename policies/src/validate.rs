//! Loading a policy file: strict parsing plus the semantic checks serde cannot express, every
//! error with the file, line and column it points at and a hint on how to fix it.

use crate::duration::HumanDuration;
use crate::policy::limits::{self, DurationRange, show};
use crate::policy::{PolicyFile, RatePolicy, SelectPolicy, StreamPolicy, Thresholds};
use std::collections::HashSet;
use std::fmt;

/// Kinesis' hard limit on open shards per stream (`UpdateShardCount` and resharding).
pub const KINESIS_MAX_SHARDS_PER_STREAM: u32 = 10_000;

/// One problem in a policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyIssue {
    /// 1-based line, when known.
    pub line: Option<u32>,
    /// 1-based column, when known.
    pub column: Option<u32>,
    /// The path of the offending value, e.g. `spec.streams[0].maxShards`.
    pub path: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// Why a policy file was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// The file name (or `<input>`).
    pub source: String,
    /// Every problem found; parse errors stop at the first.
    pub issues: Vec<PolicyIssue>,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.issues.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}", self.source)?;
            if let Some(line) = issue.line {
                write!(f, ":{line}")?;
                if let Some(col) = issue.column {
                    write!(f, ":{col}")?;
                }
            }
            if issue.path.is_empty() {
                write!(f, ": {}", issue.message)?;
            } else {
                write!(f, ": {}: {}", issue.path, issue.message)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for PolicyError {}

/// Limits on what a policy file may make the parser do; a policy is a few kilobytes.
fn parse_options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_reader_input_bytes = Some(4 * 1024 * 1024);
    budget.max_events = 200_000;
    budget.max_aliases = 1_000;
    budget.max_anchors = 1_000;
    budget.max_depth = 64;
    budget.max_nodes = 100_000;
    budget.max_total_scalar_bytes = 4 * 1024 * 1024;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options
}

/// Parses and validates a policy file. `source` names the file in error messages.
///
/// ```
/// let yaml = "apiVersion: shardctl.io/v1alpha1\nkind: ScalingPolicy\nspec:\n  streams:\n    - name: orders\n      minShards: 8\n      maxShards: 4\n";
/// let err = shardctl_policies::load_policy(yaml, "orders.yaml").unwrap_err();
/// assert_eq!(err.issues[0].line, Some(7));
/// assert!(err.to_string().starts_with("orders.yaml:7:"));
/// ```
pub fn load_policy(text: &str, source: &str) -> Result<PolicyFile, PolicyError> {
    let result: Result<PolicyFile, serde_saphyr::Error> =
        serde_saphyr::from_str_with_options_valid(text, parse_options());
    result.map_err(|e| PolicyError {
        source: source.to_string(),
        issues: issues_of(&e),
    })
}

fn issues_of(error: &serde_saphyr::Error) -> Vec<PolicyIssue> {
    let plain = error.without_snippet();
    if let serde_saphyr::Error::ValidationError {
        issues, locations, ..
    } = plain
    {
        return issues
            .iter()
            .map(|issue| {
                let loc = locations
                    .locations_for(&issue.path)
                    .map(|l| l.reference_location)
                    .filter(|l| l.line() > 0);
                PolicyIssue {
                    line: loc.map(|l| l.line() as u32),
                    column: loc.map(|l| l.column() as u32),
                    path: display_path(&issue.path),
                    message: issue.message.clone().unwrap_or_else(|| issue.code.clone()),
                }
            })
            .collect();
    }
    let loc = error.location().filter(|l| l.line() > 0);
    vec![PolicyIssue {
        line: loc.map(|l| l.line() as u32),
        column: loc.map(|l| l.column() as u32),
        path: String::new(),
        message: explain(&first_line_without_location(&plain.to_string())),
    }]
}

/// Rewords the parser's messages that speak of its own API rather than of the file.
fn explain(message: &str) -> String {
    if let Some(key) = message.strip_prefix("duplicate mapping key: ") {
        let key = key.split(',').next().unwrap_or(key).trim();
        return format!("`{key}` is set twice here; keep one");
    }
    if message.starts_with("multiple YAML documents") {
        return "the file holds more than one YAML document (`---`); list every stream under one `spec.streams`".into();
    }
    if let Some(kind) = message.strip_prefix("invalid ")
        && matches!(kind, "u8" | "u16" | "u32" | "u64" | "usize" | "i32" | "i64")
    {
        return "expected a whole number".into();
    }
    if matches!(message, "invalid f64" | "invalid f32") {
        return "expected a number".into();
    }
    message.to_string()
}

fn display_path(path: &serde_saphyr::path_map::PathKey) -> String {
    let mut out = String::new();
    for (kind, name) in path.segments() {
        match kind {
            serde_saphyr::path_map::PathKind::Index => {
                out.push('[');
                out.push_str(name);
                out.push(']');
            }
            serde_saphyr::path_map::PathKind::Key => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(name);
            }
        }
    }
    out
}

/// serde-saphyr renders "message at line L, column C"; we print the location ourselves.
fn first_line_without_location(text: &str) -> String {
    let line = text.lines().next().unwrap_or(text).trim();
    line.rsplit_once(" at line ")
        .map_or(line, |(message, _)| message)
        .to_string()
}

/// A path into the document, built as validation descends.
#[derive(Clone, Default)]
struct At(Vec<Seg>);

#[derive(Clone)]
enum Seg {
    Key(&'static str),
    Index(usize),
}

impl At {
    fn key(&self, k: &'static str) -> At {
        let mut p = self.clone();
        p.0.push(Seg::Key(k));
        p
    }
    fn index(&self, i: usize) -> At {
        let mut p = self.clone();
        p.0.push(Seg::Index(i));
        p
    }
    fn last_key(&self) -> &'static str {
        self.0
            .iter()
            .rev()
            .find_map(|s| match s {
                Seg::Key(k) => Some(*k),
                Seg::Index(_) => None,
            })
            .unwrap_or("value")
    }
    fn to_garde(&self) -> garde::Path {
        let mut path = garde::Path::empty();
        for seg in &self.0 {
            path = match seg {
                Seg::Key(k) => path.join(*k),
                Seg::Index(i) => path.join(*i),
            };
        }
        path
    }
}

struct Checker<'r> {
    report: &'r mut garde::Report,
}

impl Checker<'_> {
    fn fail(&mut self, at: &At, message: String) {
        self.report
            .append(at.to_garde(), garde::Error::new(message));
    }

    /// Checks a duration against its range; `short` and `long` say why a value below or above
    /// it is refused.
    fn duration(
        &mut self,
        at: &At,
        value: HumanDuration,
        range: DurationRange,
        short: &str,
        long: &str,
    ) {
        let name = at.last_key();
        let (problem, fix, why) = if value < range.min {
            ("too short", format!("at least {}", show(range.min)), short)
        } else if value > range.max {
            ("too long", format!("at most {}", show(range.max)), long)
        } else {
            return;
        };
        let why = if why.is_empty() {
            String::new()
        } else {
            format!(" ({why})")
        };
        self.fail(at, format!("{name} {value} is {problem}; use {fix}{why}"));
    }
}

impl garde::Validate for PolicyFile {
    type Context = ();

    fn validate_into(
        &self,
        _: &(),
        _parent: &mut dyn FnMut() -> garde::Path,
        report: &mut garde::Report,
    ) {
        let mut c = Checker { report };
        let spec = At::default().key("spec");
        c.duration(
            &spec.key("evaluationInterval"),
            self.spec.evaluation_interval,
            limits::EVALUATION_INTERVAL,
            "metrics have one-minute resolution",
            "a hot shard would wait that long before it is looked at",
        );
        if self.spec.streams.is_empty() {
            c.fail(
                &spec.key("streams"),
                "no streams listed; add at least one `- name: <stream>`".into(),
            );
        }
        let mut names = HashSet::new();
        for (i, stream) in self.spec.streams.iter().enumerate() {
            let at = spec.key("streams").index(i);
            if !names.insert(stream.name.as_str()) {
                c.fail(
                    &at.key("name"),
                    format!(
                        "stream `{}` is listed twice; merge the two entries",
                        stream.name
                    ),
                );
            }
            check_stream(&mut c, &at, stream);
        }
    }
}

fn valid_name(name: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&name.len())
        && name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '-' | '.'))
}

fn check_stream(c: &mut Checker<'_>, at: &At, s: &StreamPolicy) {
    if !valid_name(&s.name, 1, 128) {
        c.fail(
            &at.key("name"),
            format!(
                "`{}` is not a Kinesis stream name: use 1 to 128 letters, digits, `_`, `-` or `.`",
                s.name
            ),
        );
    }
    if s.min_shards == 0 {
        c.fail(&at.key("minShards"), "minShards must be at least 1".into());
    }
    if s.max_shards > KINESIS_MAX_SHARDS_PER_STREAM {
        c.fail(
            &at.key("maxShards"),
            format!(
                "maxShards {} exceeds Kinesis' limit of {KINESIS_MAX_SHARDS_PER_STREAM} shards per stream",
                s.max_shards
            ),
        );
    }
    if s.min_shards > s.max_shards {
        c.fail(
            &at.key("maxShards"),
            format!(
                "maxShards ({}) is below minShards ({}); raise maxShards or lower minShards",
                s.max_shards, s.min_shards
            ),
        );
    }
    if s.max_operations_per_cycle == 0 || s.max_operations_per_cycle > 100 {
        c.fail(
            &at.key("maxOperationsPerCycle"),
            format!(
                "maxOperationsPerCycle must be between 1 and 100, not {}",
                s.max_operations_per_cycle
            ),
        );
    }
    c.duration(
        &at.key("metricsDelay"),
        s.metrics_delay,
        limits::METRICS_DELAY,
        "",
        "CloudWatch shard metrics arrive within minutes",
    );
    let split = at.key("split");
    check_thresholds(c, &split.key("threshold"), &s.split.threshold);
    check_window(
        c,
        &split.key("stabilizationWindow"),
        s.split.stabilization_window,
    );
    check_cooldown(c, &split.key("cooldown"), s.split.cooldown);
    check_rate(c, &split, s.split.select_policy, &s.split.policies);
    let merge = at.key("merge");
    check_thresholds(c, &merge.key("threshold"), &s.merge.threshold);
    check_window(
        c,
        &merge.key("stabilizationWindow"),
        s.merge.stabilization_window,
    );
    check_cooldown(c, &merge.key("cooldown"), s.merge.cooldown);
    check_rate(c, &merge, s.merge.select_policy, &s.merge.policies);
    for (metric, split_v, merge_v) in [
        (
            "incomingBytes",
            s.split.threshold.incoming_bytes,
            s.merge.threshold.incoming_bytes,
        ),
        (
            "incomingRecords",
            s.split.threshold.incoming_records,
            s.merge.threshold.incoming_records,
        ),
    ] {
        if merge_v >= split_v {
            let key = if metric == "incomingBytes" {
                "incomingBytes"
            } else {
                "incomingRecords"
            };
            c.fail(
                &merge.key("threshold").key(key),
                format!(
                    "merge threshold {merge_v}% must be below the split threshold {split_v}%: a merged shard at {merge_v}% would be split again; use at most {}%",
                    (split_v * 0.8).floor()
                ),
            );
        }
    }
    for (i, b) in s.budgets.iter().enumerate() {
        let bat = at.key("budgets").index(i);
        match (&b.schedule, &b.duration) {
            (Some(_), None) => c.fail(
                &bat.key("schedule"),
                "a budget with a schedule needs a `duration` (how long it stays active), e.g. `duration: 8h`".into(),
            ),
            (None, Some(_)) => c.fail(
                &bat.key("duration"),
                "a budget with a duration needs a `schedule` (when it starts), e.g. `schedule: \"0 22 * * *\"`".into(),
            ),
            _ => {}
        }
        if let Some(d) = b.duration {
            c.duration(
                &bat.key("duration"),
                d,
                limits::BUDGET_DURATION,
                "a budget must stay active for a while",
                "a longer window would outlast the next firing of even a `@yearly` schedule; for a budget that is always active, leave out `schedule` and `duration`",
            );
        }
        if b.splits.is_none() && b.merges.is_none() && b.min_shards.is_none() {
            c.fail(
                &bat,
                "a budget must limit something: set `splits`, `merges` and/or `minShards`".into(),
            );
        }
        if let Some(min) = b.min_shards
            && min > s.max_shards
        {
            c.fail(
                &bat.key("minShards"),
                format!(
                    "budget minShards ({min}) is above the stream's maxShards ({}); lower it or raise maxShards",
                    s.max_shards
                ),
            );
        }
    }
    let mut groups = HashSet::new();
    for (i, g) in s.consumer_groups.iter().enumerate() {
        let gat = at.key("consumerGroups").index(i);
        if !groups.insert(g.name.as_str()) {
            c.fail(
                &gat.key("name"),
                format!("consumer group `{}` is listed twice", g.name),
            );
        }
        if !valid_name(&g.lease_table, 3, 255) {
            c.fail(
                &gat.key("leaseTable"),
                format!(
                    "`{}` is not a DynamoDB table name: use 3 to 255 letters, digits, `_`, `-` or `.`",
                    g.lease_table
                ),
            );
        }
    }
}

fn check_thresholds(c: &mut Checker<'_>, at: &At, t: &Thresholds) {
    for (key, v) in [
        ("incomingBytes", t.incoming_bytes),
        ("incomingRecords", t.incoming_records),
    ] {
        if !(v > 0.0 && v <= 100.0) {
            c.fail(
                &at.key(key),
                format!("{v} is not a utilisation: use a percentage above 0 and at most 100"),
            );
        }
    }
}

fn check_window(c: &mut Checker<'_>, at: &At, window: HumanDuration) {
    c.duration(
        at,
        window,
        limits::STABILIZATION_WINDOW,
        "metrics have one-minute resolution",
        "the whole window is read from CloudWatch every evaluation",
    );
}

fn history_reason() -> String {
    format!("the controller keeps {} of history", show(limits::HISTORY))
}

fn check_cooldown(c: &mut Checker<'_>, at: &At, cooldown: HumanDuration) {
    c.duration(at, cooldown, limits::COOLDOWN, "", &history_reason());
}

fn check_rate(c: &mut Checker<'_>, at: &At, select: SelectPolicy, policies: &[RatePolicy]) {
    if select != SelectPolicy::Disabled && policies.is_empty() {
        c.fail(
            &at.key("policies"),
            "no rate policies: add one (e.g. `- type: Shards\\n  value: 4\\n  period: 5m`) or set `selectPolicy: Disabled`".into(),
        );
    }
    for (i, p) in policies.iter().enumerate() {
        let pat = at.key("policies").index(i);
        if p.value == 0 {
            c.fail(
                &pat.key("value"),
                "value must be at least 1; to stop this direction set `selectPolicy: Disabled`"
                    .into(),
            );
        }
        c.duration(
            &pat.key("period"),
            p.period,
            limits::RATE_PERIOD,
            "",
            &history_reason(),
        );
    }
}
