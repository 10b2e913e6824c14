//! `shardctl simulate`: runs a policy and the baselines on identical simulated traffic and prints
//! the comparison.

use crate::run::{
    OnDemandConfig, Outcome, Prices, SimConfig, Strategy, Summary, UniformConfig, compare,
};
use crate::traffic::{SCENARIOS, Scenario, read_trace, scenario};
use crate::{frontier, svg};
use anyhow::{Context, Result, anyhow, bail};
use clap::{ArgGroup, ValueEnum};
use comfy_table::{Cell, CellAlignment, Table};
use serde::Serialize;
use shardctl_controller::files::read_policy;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SimOutput {
    /// A table for people.
    Table,
    /// JSON for machines.
    Json,
    /// CSV, one row per strategy.
    Csv,
}

/// What `shardctl simulate` and `shardctl tune` share: the policy, the traffic, prices and
/// producer behaviour.
#[derive(Debug, Clone, clap::Args)]
#[command(group(ArgGroup::new("traffic").required(true).args(["scenario", "trace"])))]
pub struct TrafficArgs {
    /// The policy file; the simulated stream is its first stream (or `--stream`).
    #[arg(long)]
    pub policy: PathBuf,
    /// The policy's stream to simulate (default: the first).
    #[arg(long)]
    pub stream: Option<String>,
    /// A built-in scenario: hot-org-surge, diurnal, flash-crowd, night-merge, single-hot-key.
    #[arg(long)]
    pub scenario: Option<String>,
    /// Recorded traffic (CSV of per-minute rates per hash bucket or hash key; see the docs of
    /// `shardctl_sim::trace`).
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Shards at the start for `--trace` (scenarios bring their own).
    #[arg(long, default_value_t = 16)]
    pub shards: usize,
    /// Simulated time, e.g. `24h`, `90m` (default: the scenario's, 24h).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Seed of all randomness: the same seed gives the same result.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// A price list to charge instead of the shipped one (same format as
    /// `controller/sim/prices.yaml`: every price with what it is per, its source and date).
    #[arg(long)]
    pub prices: Option<PathBuf>,
    /// Share (0 to 0.95) of throttled records that producers send again (the SDKs and the KPL
    /// retry `ProvisionedThroughputExceeded`): extra load exactly where a shard is hot.
    #[arg(long, default_value_t = 0.0)]
    pub retry_share: f64,
    /// Seconds before a throttled record is sent again (1 to 600).
    #[arg(long, default_value_t = 1)]
    pub retry_delay: u64,
    /// Records above 1 MiB per hour across the stream, on random keys (the stream's maximum
    /// record size raised with `UpdateMaxRecordSize`); each draws on its shard's 10 MiB burst
    /// tank, which refills at 1 MiB/s and which ordinary writes share.
    #[arg(long, default_value_t = 0.0, value_name = "N")]
    pub large_records_per_hour: f64,
    /// The largest of those records in MiB (sizes are uniform from 1 MiB up to it; at most 10).
    #[arg(long, default_value_t = 10.0, value_name = "MIB")]
    pub large_record_max_mib: f64,
    /// Consumer applications reading with shared throughput (`GetRecords`, polling; 0 to 5: a
    /// shard serves 5 `GetRecords` calls a second across all of them). Each reads every record:
    /// on-demand bills what they read, and scaling-utils scales on their reads.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub polling_readers: u32,
    /// Consumer applications reading with enhanced fan-out (`SubscribeToShard`; 0 to 20, the
    /// registered consumers a stream allows outside On-demand Advantage). Each costs
    /// consumer-shard-hours and data out in provisioned mode, data out in on-demand.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub fan_out_readers: u32,
    /// The share (0 to 1) of the account's On-demand Advantage commitment (25 MiB/s of ingest
    /// and of retrieval) this stream is charged for when it does not use it: 1 if it would be the
    /// account's only on-demand stream, 0 if other streams already meet the commitment (then
    /// Advantage costs only this stream's own data).
    #[arg(long, default_value_t = 1.0, value_name = "SHARE")]
    pub advantage_commitment_share: f64,
}

/// Arguments of `shardctl simulate`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// The policy and the traffic.
    #[command(flatten)]
    pub traffic: TrafficArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = SimOutput::Table)]
    pub output: SimOutput,
    /// Write an SVG of per-shard load over time with the operations marked.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Strategies to run (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub strategies: Vec<Strategy>,
    /// Compare at equal throttling: sweep the static, scaling-utils and Lambda sample baselines'
    /// knobs on the same traffic, report the cheapest configuration throttling at most
    /// shardctl's records (and the least throttling at shardctl's cost), and draw every point to
    /// this SVG file (see `shardctl_sim::frontier`). Runs shardctl and on-demand once, and about
    /// 130 baseline configurations.
    #[arg(long, value_name = "SVG")]
    pub frontier: Option<PathBuf>,
}

impl AsRef<TrafficArgs> for SimulateArgs {
    fn as_ref(&self) -> &TrafficArgs {
        &self.traffic
    }
}

impl AsRef<TrafficArgs> for TrafficArgs {
    fn as_ref(&self) -> &TrafficArgs {
        self
    }
}

/// Parses `30s`, `90m`, `24h`, `2d` (one number, one unit).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{text}` needs a unit: s, m, h or d (e.g. 24h)"))?;
    let (n, unit) = t.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("`{text}` must start with a whole number, e.g. 24h"))?;
    let unit_secs: u64 = match unit.trim() {
        "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}`: use s, m, h or d"
            ));
        }
    };
    // Beyond u64 seconds is beyond the range too.
    let secs = n.saturating_mul(unit_secs);
    if !(60..=31 * 86_400).contains(&secs) {
        return Err(format!("`{text}`: simulate between 1m and 31d"));
    }
    Ok(Duration::from_secs(secs))
}

/// The JSON document of `--output json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Report<'a> {
    scenario: &'a str,
    description: &'a str,
    stream: &'a str,
    initial_shards: usize,
    minutes: u64,
    seed: u64,
    prices: Prices,
    uniform: UniformConfig,
    on_demand: OnDemandConfig,
    results: Vec<&'a Summary>,
}

/// Builds the configuration of a run from the arguments.
pub fn sim_config(args: &impl AsRef<TrafficArgs>) -> Result<SimConfig> {
    let args = args.as_ref();
    let file = read_policy(&args.policy)?;
    let policy = match &args.stream {
        Some(name) => file
            .stream(name)
            .cloned()
            .with_context(|| format!("{} has no stream named {name}", args.policy.display()))?,
        None => file
            .spec
            .streams
            .first()
            .cloned()
            .with_context(|| format!("{} names no stream", args.policy.display()))?,
    };
    let scenario: Scenario = match (&args.scenario, &args.trace) {
        (Some(name), _) => scenario(name, args.seed)?,
        (None, Some(path)) => {
            if args.shards == 0 || args.shards > 10_000 {
                bail!("--shards must be between 1 and 10000");
            }
            read_trace(path, args.shards)?
        }
        (None, None) => bail!(
            "give --scenario NAME ({}) or --trace FILE",
            SCENARIOS.join(", ")
        ),
    };
    let mut scenario = scenario;
    scenario.producers = crate::workload::Producers {
        retry_share: args.retry_share,
        retry_delay_secs: args.retry_delay,
    };
    scenario
        .producers
        .validate()
        .map_err(|e| anyhow!("--retry-share/--retry-delay: {e}"))?;
    scenario.large_records = crate::workload::LargeRecords {
        per_hour: args.large_records_per_hour,
        max_mib: args.large_record_max_mib,
    };
    scenario
        .large_records
        .validate()
        .map_err(|e| anyhow!("--large-records-per-hour/--large-record-max-mib: {e}"))?;
    let minutes = args.duration.map_or(scenario.minutes, |d| d.as_secs() / 60);
    scenario.readers = crate::workload::Readers {
        polling: args.polling_readers,
        enhanced_fan_out: args.fan_out_readers,
    };
    scenario
        .readers
        .validate()
        .map_err(|e| anyhow!("--polling-readers/--fan-out-readers: {e}"))?;
    if !(0.0..=1.0).contains(&args.advantage_commitment_share) {
        bail!(
            "--advantage-commitment-share must be between 0 and 1, not {}",
            args.advantage_commitment_share
        );
    }
    Ok(SimConfig {
        uniform: UniformConfig::for_policy(&policy),
        on_demand: OnDemandConfig {
            advantage_commitment_share: args.advantage_commitment_share,
            ..OnDemandConfig::default()
        },
        prices: match &args.prices {
            Some(path) => Prices::load(path)?,
            None => Prices::default(),
        },
        evaluation_interval: file.spec.evaluation_interval.0,
        minutes,
        seed: args.seed,
        scenario,
        policy,
    })
}

/// Runs `shardctl simulate`.
pub fn run_simulate(args: SimulateArgs) -> Result<ExitCode> {
    let cfg = sim_config(&args)?;
    if let Some(path) = &args.frontier {
        return run_frontier(&cfg, path, args.output);
    }
    let strategies = if args.strategies.is_empty() {
        Strategy::ALL.to_vec()
    } else {
        args.strategies.clone()
    };
    let tty = std::io::stderr().is_terminal();
    let mut progress = |s: Strategy, done: u64, of: u64| {
        if tty {
            eprint!("\rsimulating {:<10} {:>5}/{} minutes", s.name(), done, of);
            if done >= of {
                eprintln!();
            }
        }
    };
    let outcomes = compare(&cfg, &strategies, &mut progress)?;
    if let Some(path) = &args.plot {
        std::fs::write(path, svg::render(&cfg.scenario, cfg.minutes, &outcomes))
            .with_context(|| format!("cannot write plot {}", path.display()))?;
    }
    print!("{}", render(&cfg, &outcomes, args.output)?);
    Ok(ExitCode::SUCCESS)
}

/// `shardctl simulate --frontier SVG`.
fn run_frontier(cfg: &SimConfig, path: &std::path::Path, output: SimOutput) -> Result<ExitCode> {
    let tty = std::io::stderr().is_terminal();
    let outcomes = compare(cfg, &frontier::NEEDED, &mut |s, done, of| {
        if tty {
            eprint!("\rsimulating {:<20} {:>5}/{} minutes", s.name(), done, of);
            if done >= of {
                eprintln!();
            }
        }
    })?;
    let find = |s: Strategy| {
        outcomes
            .iter()
            .find(|o| o.summary.strategy == s)
            .map(|o| &o.summary)
            .ok_or_else(|| anyhow!("{} did not run", s.name()))
    };
    let shardctl = find(Strategy::Shardctl)?;
    let fixed = [
        find(Strategy::OnDemand)?,
        find(Strategy::OnDemandAdvantage)?,
    ];
    let result = frontier::sweep(cfg, shardctl, &fixed, &mut |done, of| {
        if tty {
            eprint!("\rsweeping baselines {done:>4}/{of}");
            if done >= of {
                eprintln!();
            }
        }
    });
    let title = format!(
        "{}: cost against records throttled, seed {}",
        cfg.scenario.name, cfg.seed
    );
    std::fs::write(path, frontier::svg(&result, &title))
        .with_context(|| format!("cannot write frontier plot {}", path.display()))?;
    match output {
        SimOutput::Json => print!("{}", serde_json::to_string_pretty(&result)? + "\n"),
        SimOutput::Csv => {
            let mut out = String::from("family,config,throttled_records,cost_usd\n");
            for p in result
                .points
                .iter()
                .chain(std::iter::once(&result.shardctl))
            {
                out += &format!(
                    "{},\"{}\",{},{:.4}\n",
                    p.family, p.config, p.throttled, p.cost_usd
                );
            }
            print!("{out}");
        }
        SimOutput::Table => print!("{}", frontier::render_table(&result)),
    }
    Ok(ExitCode::SUCCESS)
}

/// Renders the comparison in the given format.
pub fn render(cfg: &SimConfig, outcomes: &[Outcome], output: SimOutput) -> Result<String> {
    let summaries: Vec<&Summary> = outcomes.iter().map(|o| &o.summary).collect();
    Ok(match output {
        SimOutput::Json => {
            let report = Report {
                scenario: &cfg.scenario.name,
                description: &cfg.scenario.description,
                stream: &cfg.policy.name,
                initial_shards: cfg.scenario.initial_shards,
                minutes: cfg.minutes,
                seed: cfg.seed,
                prices: cfg.prices,
                uniform: cfg.uniform,
                on_demand: cfg.on_demand,
                results: summaries,
            };
            serde_json::to_string_pretty(&report)? + "\n"
        }
        SimOutput::Csv => {
            let mut out = String::from(
                "strategy,offered_records,accepted_records,throttled_records,throttled_percent,shard_hours,cost_usd,operations,relief_minutes,peak_utilisation_percent,final_shards,max_shards,shard_hours_usd,put_payload_units_usd,shard_level_metrics_usd,get_metric_data_usd,on_demand_stream_hours_usd,on_demand_data_in_usd,on_demand_data_out_usd\n",
            );
            for s in summaries {
                let relief = match s.relief {
                    crate::run::Relief::After(m) => m.to_string(),
                    crate::run::Relief::Never => "never".to_string(),
                    crate::run::Relief::NoSurge => String::new(),
                };
                let c = &s.costs;
                out += &format!(
                    "{},{},{},{},{:.4},{},{:.4},{},{},{:.1},{},{},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4}\n",
                    s.strategy.name(),
                    s.offered_records,
                    s.accepted_records,
                    s.throttled_records,
                    s.throttled_percent,
                    s.shard_hours.map_or(String::new(), |h| format!("{h:.2}")),
                    s.cost_usd,
                    s.operations,
                    relief,
                    s.peak_utilisation_percent,
                    s.final_shards.map_or(String::new(), |n| n.to_string()),
                    s.max_shards.map_or(String::new(), |n| n.to_string()),
                    c.shard_hours,
                    c.put_payload_units,
                    c.shard_level_metrics,
                    c.get_metric_data,
                    c.on_demand_stream_hours,
                    c.on_demand_data_in,
                    c.on_demand_data_out,
                );
            }
            out
        }
        SimOutput::Table => {
            let mut t = Table::new();
            t.load_style(comfy_table::presets::UTF8_FULL_CONDENSED);
            t.set_header([
                "STRATEGY",
                "THROTTLED",
                "THROTTLED %",
                "SHARD-HOURS",
                "COST $",
                "OF WHICH METRICS $",
                "OPS",
                "RELIEF",
                "PEAK UTIL",
                "SHARDS start→end (max)",
            ]);
            for s in &summaries {
                t.add_row(vec![
                    Cell::new(s.strategy.name()),
                    Cell::new(s.throttled_records).set_alignment(CellAlignment::Right),
                    Cell::new(format!("{:.3}%", s.throttled_percent))
                        .set_alignment(CellAlignment::Right),
                    Cell::new(s.shard_hours.map_or("-".to_string(), |h| format!("{h:.1}")))
                        .set_alignment(CellAlignment::Right),
                    Cell::new(format!("{:.2}", s.cost_usd)).set_alignment(CellAlignment::Right),
                    Cell::new(format!(
                        "{:.2}",
                        s.costs.shard_level_metrics + s.costs.get_metric_data
                    ))
                    .set_alignment(CellAlignment::Right),
                    Cell::new(s.operations).set_alignment(CellAlignment::Right),
                    Cell::new(s.relief.to_string()).set_alignment(CellAlignment::Right),
                    Cell::new(format!("{:.0}%", s.peak_utilisation_percent))
                        .set_alignment(CellAlignment::Right),
                    Cell::new(match (s.final_shards, s.max_shards) {
                        (Some(f), Some(m)) => {
                            format!("{}→{} ({m})", cfg.scenario.initial_shards, f)
                        }
                        _ => "-".to_string(),
                    }),
                ]);
            }
            let offered = summaries.first().map_or(0, |s| s.offered_records);
            format!(
                "scenario {} ({}), stream {}, {} simulated minutes, seed {}: {} records offered\n{t}\n",
                cfg.scenario.name,
                cfg.scenario.description,
                cfg.policy.name,
                cfg.minutes,
                cfg.seed,
                offered
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_parsed_and_bounded_without_overflow() {
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("90m"), Ok(Duration::from_secs(5400)));
        for text in [
            "99999999999999999999d",
            "18446744073709551615d",
            "32d",
            "59s",
            "5y",
            "h",
        ] {
            assert!(parse_duration(text).is_err(), "{text}");
        }
    }
}
