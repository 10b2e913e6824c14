//! `shardctl simulate` from its arguments: trace files, outputs, errors.

use clap::Parser;
use shardctl_sim::cli::{SimOutput, SimulateArgs, render, run_simulate, sim_config};
use shardctl_sim::run::{Strategy, Summary, compare};
use std::path::PathBuf;

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    args: SimulateArgs,
}

fn policy() -> String {
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../policies/examples/telecom-org-events.yaml"
    )
    .to_string()
}

fn temp(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shardctl-sim-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

fn args(extra: &[&str]) -> SimulateArgs {
    let p = policy();
    let mut argv = vec!["simulate", "--policy", p.as_str()];
    argv.extend_from_slice(extra);
    Cli::try_parse_from(argv).expect("parses").args
}

#[test]
fn a_trace_runs_and_renders_as_csv_json_and_svg() {
    // 4 buckets at 70 % of a 4-shard stream's byte limit, and one key that surges in minute 10.
    let mut text = String::from("minute,target,records_per_second,bytes_per_second\n");
    for b in 0..4 {
        text += &format!("0,bucket:{b}/4,350,734003\n");
    }
    text += "0,key:org-acme,10,20480\n10,key:org-acme,600,1228800\n40,key:org-acme,10,20480\n";
    let trace = temp("trace.csv", &text);
    let plot = trace.with_extension("svg");
    let a = args(&[
        "--trace",
        trace.to_str().expect("utf-8"),
        "--shards",
        "4",
        "--duration",
        "1h",
        "--output",
        "csv",
        "--plot",
        plot.to_str().expect("utf-8"),
        "--strategies",
        "shardctl,static,on-demand",
    ]);
    let cfg = sim_config(&a).expect("config");
    assert_eq!(cfg.minutes, 60);
    let outcomes = compare(&cfg, &a.strategies, &mut |_, _, _| {}).expect("runs");
    let csv = render(&cfg, &outcomes, SimOutput::Csv).expect("csv");
    assert_eq!(csv.lines().count(), 4, "{csv}");
    assert!(csv.starts_with("strategy,offered_records"));
    let json: serde_json::Value =
        serde_json::from_str(&render(&cfg, &outcomes, SimOutput::Json).expect("json"))
            .expect("valid JSON");
    assert_eq!(json["results"].as_array().map(Vec::len), Some(3));
    assert!(json["prices"]["shardHour"].as_f64().is_some());
    let table = render(&cfg, &outcomes, SimOutput::Table).expect("table");
    assert!(table.contains("shardctl"));
    assert_eq!(
        run_simulate(a).expect("runs"),
        std::process::ExitCode::SUCCESS
    );
    let svg = std::fs::read_to_string(&plot).expect("plot written");
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(
        outcomes
            .iter()
            .any(|o| o.summary.strategy == Strategy::Static)
    );
}

#[test]
fn bad_inputs_are_errors_with_their_place() {
    let trace = temp(
        "bad.csv",
        "minute,target,records_per_second,bytes_per_second\n0,bucket:1/0,5,5\n",
    );
    let e = sim_config(&args(&["--trace", trace.to_str().expect("utf-8")])).expect_err("bad");
    assert!(format!("{e:#}").contains("bad.csv:2:"), "{e:#}");
    let e = sim_config(&args(&["--scenario", "nope"])).expect_err("unknown");
    assert!(format!("{e:#}").contains("hot-org-surge"), "{e:#}");
    let e = sim_config(&args(&["--scenario", "diurnal", "--stream", "other"])).expect_err("stream");
    assert!(format!("{e:#}").contains("other"), "{e:#}");
    let p = policy();
    for bad in [
        vec!["simulate", "--policy", p.as_str()],
        vec![
            "simulate",
            "--policy",
            p.as_str(),
            "--scenario",
            "diurnal",
            "--duration",
            "5x",
        ],
        vec![
            "simulate",
            "--policy",
            p.as_str(),
            "--scenario",
            "diurnal",
            "--duration",
            "40d",
        ],
        vec![
            "simulate",
            "--policy",
            p.as_str(),
            "--scenario",
            "a",
            "--trace",
            "b",
        ],
    ] {
        assert!(Cli::try_parse_from(&bad).is_err(), "{bad:?}");
    }
    let missing = args(&["--trace", "/nonexistent/trace.csv"]);
    assert!(
        format!("{:#}", sim_config(&missing).expect_err("missing"))
            .contains("/nonexistent/trace.csv")
    );
}

/// `--frontier`: every swept configuration is run on the same traffic, the answers name real
/// points, and the plot is written.
#[test]
fn frontier_sweeps_the_baselines_and_plots_every_point() {
    let a = args(&["--scenario", "hot-org-surge", "--duration", "30m"]);
    let cfg = sim_config(&a).expect("config");
    let result = frontier_of(&cfg);
    let families: Vec<&str> = result.answers.iter().map(|a| a.family).collect();
    assert_eq!(
        families,
        [
            "static",
            "scaling-utils",
            "lambda-sample",
            "on-demand",
            "on-demand-advantage"
        ]
    );
    for a in &result.answers {
        if let Some(p) = &a.cheapest_at_equal_throttling {
            assert!(p.throttled <= result.shardctl.throttled);
            assert!(
                result
                    .points
                    .iter()
                    .any(|q| q.config == p.config && q.family == a.family)
            );
        }
        if let Some(p) = &a.least_throttling_at_equal_cost {
            assert!(p.cost_usd <= result.shardctl.cost_usd);
        }
    }
    static_answer_is_exact(&result);
    // A stream that needs more shards than it starts with: the static answer lies above the
    // fewest swept shards, between grid points.
    let trace = temp(
        "frontier.csv",
        "minute,target,records_per_second,bytes_per_second\n0,bucket:0/1,19000,19456000\n",
    );
    let path = trace.to_str().expect("utf-8");
    let cfg = sim_config(&args(&["--trace", path, "--duration", "10m"])).expect("config");
    let busy = frontier_of(&cfg);
    let answer = static_answer_is_exact(&busy).expect("some static count throttles no more");
    assert!(answer > 8, "{answer} shards");
    let plot = temp("frontier.svg", "");
    let a = args(&[
        "--scenario",
        "hot-org-surge",
        "--duration",
        "30m",
        "--frontier",
        plot.to_str().expect("utf-8"),
    ]);
    assert_eq!(
        run_simulate(a).expect("runs"),
        std::process::ExitCode::SUCCESS
    );
    let svg = std::fs::read_to_string(&plot).expect("plot written");
    assert_eq!(svg.matches("<title>").count(), result.points.len() + 1);
}

/// The frontier of `cfg`: shardctl and on-demand run once, the baselines swept.
fn frontier_of(cfg: &shardctl_sim::run::SimConfig) -> shardctl_sim::frontier::Frontier {
    use shardctl_sim::frontier;
    let outcomes = compare(cfg, &frontier::NEEDED, &mut |_, _, _| {}).expect("runs");
    let get = |s: Strategy| {
        &outcomes
            .iter()
            .find(|o| o.summary.strategy == s)
            .expect("ran")
            .summary
    };
    let fixed = [get(Strategy::OnDemand), get(Strategy::OnDemandAdvantage)];
    frontier::sweep(cfg, get(Strategy::Shardctl), &fixed, &mut |_, _| {})
}

/// Static provisioning's answer in a frontier is exact: the count below it ran and throttles
/// more than shardctl. Returns the answer's shard count.
fn static_answer_is_exact(result: &shardctl_sim::frontier::Frontier) -> Option<usize> {
    let shards = |p: &shardctl_sim::frontier::Point| -> usize {
        p.config
            .split(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .expect("`N shards`")
    };
    let statics: Vec<&shardctl_sim::frontier::Point> = result
        .points
        .iter()
        .filter(|p| p.family == "static")
        .collect();
    let fewest = statics.iter().map(|p| shards(p)).min().expect("swept");
    let answer = result.answers[0]
        .cheapest_at_equal_throttling
        .as_ref()
        .map(shards);
    if let Some(n) = answer.filter(|&n| n > fewest) {
        let below = statics
            .iter()
            .find(|p| shards(p) == n - 1)
            .expect("the count below the answer ran");
        assert!(below.throttled > result.shardctl.throttled);
    }
    answer
}

#[derive(Debug, Parser)]
struct TuneCli {
    #[command(flatten)]
    args: shardctl_sim::TuneArgs,
}

/// `shardctl tune`: the written policy validates, loses on neither axis, and the same seed gives
/// the same policy.
#[test]
fn tune_writes_a_valid_policy_no_worse_on_either_axis_and_deterministic() {
    use shardctl_sim::tune::{Objective, tune};
    let p = policy();
    let out = temp("tuned.yaml", "");
    let parse = |out: &str| {
        TuneCli::try_parse_from([
            "tune",
            "--policy",
            p.as_str(),
            "--scenario",
            "hot-org-surge",
            "--duration",
            "30m",
            "--out",
            out,
        ])
        .expect("parses")
        .args
    };
    let args = parse(out.to_str().expect("utf-8"));
    assert_eq!(args.objective, Objective::Cost);
    assert_eq!(
        shardctl_sim::run_tune(args).expect("tunes"),
        std::process::ExitCode::SUCCESS
    );
    let text = std::fs::read_to_string(&out).expect("written");
    let tuned =
        shardctl_policies::load_policy(&text, "tuned.yaml").expect("the tuned policy validates");

    let sim = sim_config(&args_for(&p)).expect("config");
    let file =
        shardctl_policies::load_policy(&std::fs::read_to_string(&p).expect("policy"), "input")
            .expect("valid");
    let a = tune(&file, 0, &sim, Objective::Cost, &mut |_, _| {}).expect("tunes");
    assert!(a.tuned.throttled_records <= a.input.throttled_records);
    assert!(a.tuned.cost_usd <= a.input.cost_usd);
    assert!(a.runs > 10, "{} simulations", a.runs);
    let b = tune(&file, 0, &sim, Objective::Cost, &mut |_, _| {}).expect("tunes");
    assert_eq!(a.file, b.file, "the same seed gives the same policy");
    assert_eq!(a.file, tuned, "the written policy is the tuned one");
}

fn args_for(p: &str) -> SimulateArgs {
    Cli::try_parse_from([
        "simulate",
        "--policy",
        p,
        "--scenario",
        "hot-org-surge",
        "--duration",
        "30m",
    ])
    .expect("parses")
    .args
}

/// The summaries of `strategies` run with `extra` arguments.
fn summaries(extra: &[&str], strategies: &[Strategy]) -> Vec<Summary> {
    let cfg = sim_config(&args(extra)).expect("config");
    compare(&cfg, strategies, &mut |_, _, _| {})
        .expect("runs")
        .into_iter()
        .map(|o| o.summary)
        .collect()
}

/// The summaries of `strategies` on ten minutes of `trace` over four shards, with `extra`
/// arguments.
fn on_trace(trace: &std::path::Path, extra: &[&str], strategies: &[Strategy]) -> Vec<Summary> {
    let path = trace.to_str().expect("utf-8");
    let mut a = vec!["--trace", path, "--shards", "4", "--duration", "10m"];
    a.extend_from_slice(extra);
    summaries(&a, strategies)
}

/// Producers that retry throttled records offer them again to the hot shard: more records
/// offered and throttled than without retries, on the provisioned strategies and on-demand alike;
/// bad retry settings are errors.
#[test]
fn retried_records_add_load_where_the_shard_is_hot() {
    let text = "minute,target,records_per_second,bytes_per_second\n0,bucket:0/4,100,102400\n0,key:org-acme,1500,1536000\n";
    let trace = temp("retry.csv", text);
    let run = |share: &str| {
        on_trace(
            &trace,
            &["--retry-share", share, "--retry-delay", "2"],
            &[Strategy::Static],
        )
        .remove(0)
    };
    let (without, with) = (run("0"), run("0.5"));
    assert!(
        without.throttled_records > 0,
        "the key is over one shard's limit"
    );
    assert!(
        with.offered_records > without.offered_records,
        "{} vs {}",
        with.offered_records,
        without.offered_records
    );
    assert!(with.throttled_records > without.throttled_records);
    let e = sim_config(&args(&["--scenario", "diurnal", "--retry-share", "1.5"])).expect_err("bad");
    assert!(format!("{e:#}").contains("retry share"), "{e:#}");
}

/// Records above 1 MiB draw on their shard's burst tank: in the provisioned world they add
/// records, PUT payload units and throttling where the tank runs low; on-demand takes them all
/// and bills their bytes; sizes above Kinesis' 10 MiB are refused.
#[test]
fn large_records_draw_on_the_shard_tank_and_are_billed() {
    let text = "minute,target,records_per_second,bytes_per_second\n0,bucket:0/4,100,102400\n0,key:org-acme,900,921600\n";
    let trace = temp("large.csv", text);
    let run = |per_hour: &str| {
        on_trace(
            &trace,
            &["--large-records-per-hour", per_hour],
            &[Strategy::Static, Strategy::OnDemand],
        )
    };
    let (without, with) = (run("0"), run("1800"));
    let (s0, s1) = (&without[0], &with[0]);
    // One large record every other second on average: about 300 in 10 minutes.
    let extra = s1.offered_records - s0.offered_records;
    assert!((240..=360).contains(&extra), "{extra} large records");
    assert!(
        s1.throttled_records > s0.throttled_records,
        "the hot key's shard has no tank left for them: {} vs {}",
        s1.throttled_records,
        s0.throttled_records
    );
    assert!(s1.costs.put_payload_units > s0.costs.put_payload_units);
    let (d0, d1) = (&without[1], &with[1]);
    assert_eq!(d1.throttled_records, d0.throttled_records);
    assert_eq!(d1.accepted_records - d0.accepted_records, extra);
    // About 300 records of 1 to 10 MiB: well over a GB more data in.
    assert!(d1.costs.on_demand_data_in - d0.costs.on_demand_data_in > 0.08);
    let e = sim_config(&args(&[
        "--scenario",
        "diurnal",
        "--large-records-per-hour",
        "10",
        "--large-record-max-mib",
        "12",
    ]))
    .expect_err("bad");
    assert!(format!("{e:#}").contains("at most 10 MiB"), "{e:#}");
}

/// Readers on the command line: enhanced fan-out consumers cost consumer-shard-hours and data
/// out in provisioned mode and data out in on-demand; a second polling application adds
/// on-demand data out only; out-of-range counts are refused.
#[test]
fn readers_from_the_command_line_are_charged_where_they_read() {
    let run = |extra: &[&str]| {
        let mut a = vec!["--scenario", "diurnal", "--duration", "1h"];
        a.extend_from_slice(extra);
        summaries(&a, &[Strategy::Static, Strategy::OnDemand])
    };
    let base = run(&[]);
    let fan_out = run(&["--fan-out-readers", "2"]);
    let polling = run(&["--polling-readers", "2"]);
    assert_eq!(base[0].costs.efo_consumer_shard_hours, 0.0);
    // Static keeps its shards: two consumers on every shard for the hour.
    let shards = base[0].shard_hours.expect("provisioned");
    let per_hour = fan_out[0].costs.efo_consumer_shard_hours / (2.0 * shards);
    assert!((per_hour - 0.015).abs() < 1e-9, "{per_hour}");
    assert!(fan_out[0].costs.efo_data_out > 0.0);
    assert!(fan_out[1].costs.on_demand_data_out > base[1].costs.on_demand_data_out);
    assert_eq!(polling[0].cost_usd, base[0].cost_usd);
    assert!(polling[1].costs.on_demand_data_out > base[1].costs.on_demand_data_out);
    for (flag, n, says) in [
        ("--polling-readers", "6", "GetRecords"),
        ("--fan-out-readers", "21", "20 enhanced fan-out"),
    ] {
        let e = sim_config(&args(&["--scenario", "diurnal", flag, n])).expect_err("bad");
        assert!(format!("{e:#}").contains(says), "{e:#}");
    }
}
