//! `shardctl tune`: searches a policy's knobs on simulated traffic and writes a policy that is at
//! least as good as the input on both axes (records throttled and cost, every line item).
//!
//! The search is coordinate descent over a fixed grid, in a fixed order: for each knob in turn
//! (split threshold, window, cooldown and rate; merge threshold, window and cooldown; operations
//! per cycle; the minimum shards of the first budget that sets one), every
//! grid value is tried with the other knobs at the best values so far, and kept when the result
//! throttles no more and costs no more than the input and is better on the objective. Passes
//! repeat until one changes nothing (at most three). The simulator is deterministic for a seed,
//! so the search is too. Every candidate is checked with the policy validator before it runs;
//! one that does not validate is skipped.
//!
//! The written file is the input with the tuned values; the input's YAML comments are not kept.

use crate::cli::{TrafficArgs, sim_config};
use crate::run::{Outcome, SimConfig, Strategy, Summary, run_strategy};
use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use shardctl_controller::files::read_policy;
use shardctl_policies::duration::HumanDuration;
use shardctl_policies::policy::{RatePolicyKind as RateKind, Thresholds};
use shardctl_policies::{PolicyFile, StreamPolicy, load_policy};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

/// What the tuner improves (never at the other's expense).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Objective {
    /// Lowest cost at no more throttling than the input.
    Cost,
    /// Fewest throttled records at no more cost than the input.
    Throttling,
}

/// `shardctl tune`.
#[derive(Debug, Clone, clap::Args)]
pub struct TuneArgs {
    /// The policy to start from (its first stream, or `--stream`, is tuned) and the traffic.
    #[command(flatten)]
    pub traffic: TrafficArgs,
    /// What to improve.
    #[arg(long, value_enum, default_value_t = Objective::Cost)]
    pub objective: Objective,
    /// Where to write the tuned policy.
    #[arg(long)]
    pub out: PathBuf,
}

/// One knob: where it lives in the policy and the values tried.
struct Knob {
    name: &'static str,
    values: &'static [u64],
    get: fn(&StreamPolicy) -> u64,
    set: fn(&mut StreamPolicy, u64),
}

/// A threshold knob's value: the byte threshold (the tuner keeps records at the same value).
fn percent(t: &Thresholds) -> u64 {
    t.incoming_bytes.round() as u64
}

/// Sets both per-shard thresholds (bytes and records) to `v` %.
fn set_percent(t: &mut Thresholds, v: u64) {
    t.incoming_bytes = v as f64;
    t.incoming_records = v as f64;
}

fn mins(d: HumanDuration) -> u64 {
    d.0.as_secs() / 60
}

const KNOBS: [Knob; 9] = [
    Knob {
        name: "split.threshold (%)",
        values: &[55, 65, 75, 85],
        get: |p| percent(&p.split.threshold),
        set: |p, v| set_percent(&mut p.split.threshold, v),
    },
    Knob {
        name: "split.stabilizationWindow (min)",
        values: &[2, 3, 5, 10],
        get: |p| mins(p.split.stabilization_window),
        set: |p, v| p.split.stabilization_window = HumanDuration::mins(v),
    },
    Knob {
        name: "split.cooldown (min)",
        values: &[2, 5, 10],
        get: |p| mins(p.split.cooldown),
        set: |p, v| p.split.cooldown = HumanDuration::mins(v),
    },
    Knob {
        name: "split.policies[Shards].value",
        values: &[2, 4, 8],
        get: |p| {
            p.split
                .policies
                .iter()
                .find(|r| r.kind == RateKind::Shards)
                .map_or(0, |r| u64::from(r.value))
        },
        set: |p, v| {
            for r in p
                .split
                .policies
                .iter_mut()
                .filter(|r| r.kind == RateKind::Shards)
            {
                r.value = u32::try_from(v).unwrap_or(u32::MAX);
            }
        },
    },
    Knob {
        name: "merge.threshold (%)",
        values: &[20, 25, 30, 40, 50, 60],
        get: |p| percent(&p.merge.threshold),
        set: |p, v| set_percent(&mut p.merge.threshold, v),
    },
    Knob {
        name: "merge.stabilizationWindow (min)",
        values: &[15, 30, 45, 60],
        get: |p| mins(p.merge.stabilization_window),
        set: |p, v| p.merge.stabilization_window = HumanDuration::mins(v),
    },
    Knob {
        name: "merge.cooldown (min)",
        values: &[15, 30, 60],
        get: |p| mins(p.merge.cooldown),
        set: |p, v| p.merge.cooldown = HumanDuration::mins(v),
    },
    Knob {
        name: "maxOperationsPerCycle",
        values: &[1, 2, 4, 8],
        get: |p| u64::from(p.max_operations_per_cycle),
        set: |p, v| p.max_operations_per_cycle = u32::try_from(v).unwrap_or(u32::MAX),
    },
    Knob {
        name: "budgets[first with minShards].minShards",
        values: &[4, 8, 12, 16, 24, 32],
        get: |p| {
            p.budgets
                .iter()
                .find_map(|b| b.min_shards)
                .map_or(0, u64::from)
        },
        set: |p, v| {
            if let Some(b) = p.budgets.iter_mut().find(|b| b.min_shards.is_some()) {
                b.min_shards = Some(u32::try_from(v).unwrap_or(u32::MAX));
            }
        },
    },
];

/// The tuner's result.
#[derive(Debug)]
pub struct Tuned {
    /// The input's backtest.
    pub input: Summary,
    /// The tuned policy's backtest.
    pub tuned: Summary,
    /// The tuned policy file.
    pub file: PolicyFile,
    /// Knobs changed: (name, from, to).
    pub changes: Vec<(&'static str, u64, u64)>,
    /// Simulations run.
    pub runs: usize,
    /// Candidates the validator refused.
    pub invalid: usize,
}

/// Whether `c` is acceptable (no worse than `base` on either axis) and better than `best` on
/// the objective.
fn better(objective: Objective, base: &Summary, best: &Summary, c: &Summary) -> bool {
    if c.throttled_records > base.throttled_records || c.cost_usd > base.cost_usd {
        return false;
    }
    let key = |s: &Summary| match objective {
        Objective::Cost => (s.cost_usd, s.throttled_records as f64),
        Objective::Throttling => (s.throttled_records as f64, s.cost_usd),
    };
    let (a, b) = (key(c), key(best));
    a.0 < b.0 || (a.0 == b.0 && a.1 < b.1)
}

/// Tunes stream `stream_index` of `file` on `cfg`'s traffic; `progress(runs, message)`.
pub fn tune(
    file: &PolicyFile,
    stream_index: usize,
    cfg: &SimConfig,
    objective: Objective,
    progress: &mut dyn FnMut(usize, &str),
) -> Result<Tuned> {
    let mut cache: HashMap<String, Summary> = HashMap::new();
    let mut runs = 0;
    let mut invalid = 0;
    let mut run =
        |policy: &StreamPolicy, runs: &mut usize, invalid: &mut usize| -> Result<Option<Summary>> {
            let mut candidate = file.clone();
            candidate.spec.streams[stream_index] = policy.clone();
            let yaml = serde_saphyr::to_string(&candidate).context("serialising a candidate")?;
            if let Some(s) = cache.get(&yaml) {
                return Ok(Some(s.clone()));
            }
            if load_policy(&yaml, "candidate").is_err() {
                *invalid += 1;
                return Ok(None);
            }
            let mut c = cfg.clone();
            c.policy = policy.clone();
            let Outcome { summary, .. } = run_strategy(&c, Strategy::Shardctl, &mut |_, _, _| {})?;
            *runs += 1;
            cache.insert(yaml, summary.clone());
            Ok(Some(summary))
        };
    let start = file.spec.streams[stream_index].clone();
    let Some(input) = run(&start, &mut runs, &mut invalid)? else {
        bail!(
            "the input policy does not validate after a round trip; run `shardctl validate` on it"
        );
    };
    progress(runs, "input");
    let mut best_policy = start.clone();
    let mut best = input.clone();
    for _pass in 0..3 {
        let mut changed = false;
        for knob in &KNOBS {
            let current = (knob.get)(&best_policy);
            for &v in knob.values.iter().filter(|&&v| v != current) {
                let mut p = best_policy.clone();
                (knob.set)(&mut p, v);
                if let Some(s) = run(&p, &mut runs, &mut invalid)?
                    && better(objective, &input, &best, &s)
                {
                    best = s;
                    best_policy = p;
                    changed = true;
                }
                progress(runs, knob.name);
            }
        }
        if !changed {
            break;
        }
    }
    let changes = KNOBS
        .iter()
        .filter_map(|k| {
            let (from, to) = ((k.get)(&start), (k.get)(&best_policy));
            (from != to).then_some((k.name, from, to))
        })
        .collect();
    let mut out = file.clone();
    out.spec.streams[stream_index] = best_policy;
    Ok(Tuned {
        input,
        tuned: best,
        file: out,
        changes,
        runs,
        invalid,
    })
}

/// Runs `shardctl tune`.
pub fn run_tune(args: TuneArgs) -> Result<ExitCode> {
    let cfg = sim_config(&args.traffic)?;
    let file = read_policy(&args.traffic.policy)?;
    let index = file
        .spec
        .streams
        .iter()
        .position(|s| s.name == cfg.policy.name)
        .context("the simulated stream is not in the policy")?;
    let tty = std::io::stderr().is_terminal();
    let started = std::time::Instant::now();
    let result = tune(&file, index, &cfg, args.objective, &mut |runs, what| {
        if tty {
            eprint!(
                "\r{runs:>3} simulations, {:>4}s: {what:<34}",
                started.elapsed().as_secs()
            );
        }
    })?;
    if tty {
        eprintln!();
    }
    let yaml = serde_saphyr::to_string(&result.file).context("serialising the tuned policy")?;
    load_policy(&yaml, &args.out.display().to_string())
        .context("the tuned policy does not validate (a bug: please report it)")?;
    let header = format!(
        "# Tuned by `shardctl tune --objective {}` from {} on {} (seed {}, {} simulated minutes).\n# The input's comments are not kept.\n",
        match args.objective {
            Objective::Cost => "cost",
            Objective::Throttling => "throttling",
        },
        args.traffic.policy.display(),
        cfg.scenario.name,
        cfg.seed,
        cfg.minutes
    );
    std::fs::write(&args.out, header + &yaml)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    print!("{}", render(&result, &args.out));
    Ok(ExitCode::SUCCESS)
}

fn render(t: &Tuned, out: &std::path::Path) -> String {
    let row = |name: &str, s: &Summary| {
        format!(
            "{name:<8} {:>12} {:>9.3}% {:>12.1} {:>9.2} {:>5}\n",
            s.throttled_records,
            s.throttled_percent,
            s.shard_hours.unwrap_or(0.0),
            s.cost_usd,
            s.operations
        )
    };
    let mut text = format!(
        "{:<8} {:>12} {:>10} {:>12} {:>9} {:>5}\n",
        "policy", "throttled", "throttled", "shard-hours", "cost $", "ops"
    );
    text += &row("input", &t.input);
    text += &row("tuned", &t.tuned);
    if t.changes.is_empty() {
        text += "no knob on the grid improves the input without losing on the other axis\n";
    }
    for (name, from, to) in &t.changes {
        text += &format!("  {name}: {from} -> {to}\n");
        if name.starts_with("budgets") && to < from {
            text += "    warning: a budget's minimum is lowered because this traffic never needs it; keep the old value if the budget prepares for an event the traffic does not contain\n";
        }
    }
    text += &format!(
        "{} simulations, {} candidates refused by the validator; written to {}\n",
        t.runs,
        t.invalid,
        out.display()
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prices::Costs;
    use crate::run::Relief;

    fn s(throttled: u64, cost: f64) -> Summary {
        Summary {
            strategy: Strategy::Shardctl,
            offered_records: 1000,
            accepted_records: 1000 - throttled,
            throttled_records: throttled,
            throttled_percent: 0.0,
            shard_hours: Some(1.0),
            cost_usd: cost,
            costs: Costs::default(),
            operations: 0,
            relief: Relief::NoSurge,
            peak_utilisation_percent: 0.0,
            final_shards: None,
            max_shards: None,
        }
    }

    #[test]
    fn a_candidate_never_loses_on_either_axis() {
        let base = s(100, 10.0);
        assert!(better(Objective::Cost, &base, &base, &s(100, 9.0)));
        assert!(!better(Objective::Cost, &base, &base, &s(101, 5.0)));
        assert!(!better(Objective::Throttling, &base, &base, &s(10, 10.5)));
        assert!(better(Objective::Throttling, &base, &base, &s(10, 10.0)));
        // Cost objective: a tie on cost is broken by throttling.
        assert!(better(Objective::Cost, &base, &s(50, 9.0), &s(40, 9.0)));
    }

    #[test]
    fn every_knob_reads_back_what_it_sets() {
        let mut p = crate::example_stream();
        for knob in &KNOBS {
            for &v in knob.values {
                (knob.set)(&mut p, v);
                assert_eq!((knob.get)(&p), v, "{}", knob.name);
            }
        }
    }
}
