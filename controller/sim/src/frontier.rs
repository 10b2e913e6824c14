//! `shardctl simulate --frontier`: the comparison at equal throttling.
//!
//! Neither "fewer throttled records" nor "fewer shard-hours" alone says which strategy is better.
//! The frontier sweeps each provisioned baseline's knobs on the same traffic (static: the shard
//! count; scaling-utils: thresholds, windows, steps and cool-offs around its documented settings;
//! the Lambda sample: thresholds and windows around its shipped settings) and answers two
//! questions per family:
//!
//! - **cost at equal throttling**: the cheapest configuration that throttles at most as many
//!   records as shardctl, and shardctl's cost relative to it;
//! - **throttling at equal cost**: the least-throttling configuration that costs at most what
//!   shardctl costs, and its throttled records against shardctl's.
//!
//! On-demand (Standard and Advantage) has no knobs; it is one point each. [`svg`] draws every
//! point, cost across and throttled records down (log scale), with each family's Pareto front.
//!
//! The sweep is a grid, not a search: a family's true optimum may lie between grid points, so
//! a reported "cheapest at equal throttling" is an upper bound on that family's best. Static
//! provisioning is the exception: between the fewest swept shards that throttle no more than
//! shardctl and the swept count below, every count runs, so its answer is exact.

use crate::baselines::{Step, UniformConfig};
use crate::run::SimConfig;
use crate::run::{Strategy, Summary, run_static_with, run_uniform_with};
use crate::svg::escape;
use serde::Serialize;
use std::fmt::Write;

/// One configuration's result.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Point {
    /// `shardctl`, `static`, `scaling-utils`, `lambda-sample`, `on-demand`, `on-demand-advantage`.
    pub family: &'static str,
    /// The configuration, e.g. `24 shards` or `up>60% 3/15m x2.5, down<25% 15m, cool 15/60m`.
    pub config: String,
    /// Records throttled.
    pub throttled: u64,
    /// Cost in USD, every line item.
    pub cost_usd: f64,
}

impl Point {
    fn of(family: &'static str, config: String, s: &Summary) -> Self {
        Point {
            family,
            config,
            throttled: s.throttled_records,
            cost_usd: s.cost_usd,
        }
    }
}

/// One family's answers against shardctl.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FamilyAnswer {
    /// The family.
    pub family: &'static str,
    /// Configurations run.
    pub configurations: usize,
    /// The cheapest configuration throttling at most shardctl's records, if any.
    pub cheapest_at_equal_throttling: Option<Point>,
    /// shardctl's cost relative to it (-0.25 = 25 % cheaper).
    pub shardctl_cost_relative: Option<f64>,
    /// The least-throttling configuration costing at most shardctl's cost, if any.
    pub least_throttling_at_equal_cost: Option<Point>,
}

/// The whole sweep.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Frontier {
    /// shardctl's point.
    pub shardctl: Point,
    /// Every baseline point.
    pub points: Vec<Point>,
    /// Per family.
    pub answers: Vec<FamilyAnswer>,
}

/// The static shard counts swept: from half the scenario's shards to four times (at most 20
/// counts, evenly spaced).
fn static_counts(initial: usize) -> Vec<usize> {
    let lo = (initial / 2).max(1);
    let hi = (initial * 4).max(lo + 1);
    let step = (hi - lo).div_ceil(19).max(1);
    (lo..=hi).step_by(step).collect()
}

/// The scaling-utils grid around its documented settings: scale-up threshold, datapoints
/// before scaling up, scale-up step, scale-down threshold and scale-down cool-off.
fn uniform_grid(base: UniformConfig) -> Vec<UniformConfig> {
    let mut grid = Vec::new();
    for up_threshold in [50.0, 60.0, 75.0] {
        for up_after in [1, 3, 5] {
            for up_pct in [100.0, 150.0] {
                for down_threshold in [15.0, 25.0] {
                    for down_cool in [60, 240] {
                        grid.push(UniformConfig {
                            up_threshold,
                            up_after,
                            up_step: Step::Percent(up_pct),
                            down_threshold,
                            down_cool_off_minutes: down_cool,
                            ..base
                        });
                    }
                }
            }
        }
    }
    grid
}

/// The Lambda sample's grid around its shipped settings (5-minute datapoints): scale-up
/// threshold, datapoints of the last five above it, scale-down threshold, and datapoints of the
/// last hour below it.
fn lambda_grid(base: UniformConfig) -> Vec<UniformConfig> {
    let mut grid = Vec::new();
    for up_threshold in [50.0, 60.0, 75.0] {
        for up_after in [1, 3, 5] {
            for down_threshold in [15.0, 25.0] {
                for down_after in [12, 57] {
                    grid.push(UniformConfig {
                        up_threshold,
                        up_after,
                        down_threshold,
                        down_after,
                        ..base
                    });
                }
            }
        }
    }
    grid
}

fn describe(u: &UniformConfig) -> String {
    let step = |s: Step| match s {
        Step::Percent(p) => format!("{p:.0}%"),
        Step::Count(n) => format!("{n}"),
    };
    format!(
        "up>{:.0}% {}/{}m +{}, down<{:.0}% {}/{}m -{}, cool {}/{}m",
        u.up_threshold,
        u.up_after,
        u.up_window * u.period_minutes,
        step(u.up_step),
        u.down_threshold,
        u.down_after,
        u.down_window * u.period_minutes,
        step(u.down_step),
        u.up_cool_off_minutes,
        u.down_cool_off_minutes
    )
}

/// Runs the sweep against `shardctl`'s summary and the on-demand summaries given;
/// `progress(done, of)` after each configuration.
pub fn sweep(
    cfg: &SimConfig,
    shardctl: &Summary,
    fixed: &[&Summary],
    progress: &mut dyn FnMut(usize, usize),
) -> Frontier {
    let counts = static_counts(cfg.scenario.initial_shards);
    let grid = uniform_grid(cfg.uniform);
    let lambda = lambda_grid(UniformConfig::lambda_sample(&cfg.policy));
    let total = counts.len() + grid.len() + lambda.len();
    let mut points = Vec::with_capacity(total + fixed.len());
    let static_point =
        |n: usize| Point::of("static", format!("{n} shards"), &run_static_with(cfg, n));
    for (i, &n) in counts.iter().enumerate() {
        points.push(static_point(n));
        progress(i + 1, total);
    }
    // Static has one knob: every count between the fewest swept shards that throttle no more
    // than shardctl and the swept count below runs too, so that answer is exact, not a bound.
    if let Some(i) = points
        .iter()
        .position(|p| p.throttled <= shardctl.throttled_records)
        && i > 0
    {
        for n in counts[i - 1] + 1..counts[i] {
            points.push(static_point(n));
        }
    }
    for (i, u) in grid.iter().enumerate() {
        points.push(Point::of(
            "scaling-utils",
            describe(u),
            &run_uniform_with(cfg, u),
        ));
        progress(counts.len() + i + 1, total);
    }
    for (i, u) in lambda.iter().enumerate() {
        points.push(Point::of(
            "lambda-sample",
            describe(u),
            &run_uniform_with(cfg, u),
        ));
        progress(counts.len() + grid.len() + i + 1, total);
    }
    for s in fixed {
        points.push(Point::of(s.strategy.name(), "as documented".into(), s));
    }
    let me = Point::of("shardctl", "the policy".into(), shardctl);
    let mut families: Vec<&'static str> = Vec::new();
    for p in &points {
        if !families.contains(&p.family) {
            families.push(p.family);
        }
    }
    let answers = families
        .into_iter()
        .map(|family| answer(family, &points, &me))
        .collect();
    Frontier {
        shardctl: me,
        points,
        answers,
    }
}

fn answer(family: &'static str, points: &[Point], me: &Point) -> FamilyAnswer {
    let mine: Vec<&Point> = points.iter().filter(|p| p.family == family).collect();
    let cheapest = mine
        .iter()
        .filter(|p| p.throttled <= me.throttled)
        .min_by(|a, b| a.cost_usd.total_cmp(&b.cost_usd))
        .map(|p| (*p).clone());
    let least = mine
        .iter()
        .filter(|p| p.cost_usd <= me.cost_usd)
        .min_by_key(|p| p.throttled)
        .map(|p| (*p).clone());
    FamilyAnswer {
        family,
        configurations: mine.len(),
        shardctl_cost_relative: cheapest.as_ref().map(|c| me.cost_usd / c.cost_usd - 1.0),
        cheapest_at_equal_throttling: cheapest,
        least_throttling_at_equal_cost: least,
    }
}

/// The answers as a table for people.
pub fn render_table(f: &Frontier) -> String {
    let mut out = format!(
        "shardctl: {} records throttled, ${:.2}\n",
        f.shardctl.throttled, f.shardctl.cost_usd
    );
    for a in &f.answers {
        let _ = writeln!(out, "{} ({} configurations):", a.family, a.configurations);
        match (&a.cheapest_at_equal_throttling, a.shardctl_cost_relative) {
            (Some(p), Some(rel)) => {
                let _ = writeln!(
                    out,
                    "  cheapest at <= shardctl's throttling: {} -> ${:.2}, {} throttled; shardctl is {:+.0} % against it",
                    p.config,
                    p.cost_usd,
                    p.throttled,
                    rel * 100.0
                );
            }
            _ => {
                let _ = writeln!(
                    out,
                    "  no configuration throttles as little as shardctl ({} records)",
                    f.shardctl.throttled
                );
            }
        }
        match &a.least_throttling_at_equal_cost {
            Some(p) => {
                let _ = writeln!(
                    out,
                    "  least throttling at <= shardctl's cost: {} -> {} throttled (shardctl {}), ${:.2}",
                    p.config, p.throttled, f.shardctl.throttled, p.cost_usd
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "  no configuration costs as little as shardctl (${:.2})",
                    f.shardctl.cost_usd
                );
            }
        }
    }
    out
}

/// An SVG scatter of every point: cost across, throttled records down on a log scale
/// (`log10(1 + throttled)`), each family in its colour with its Pareto front joined, and
/// shardctl's point ringed.
pub fn svg(f: &Frontier, title: &str) -> String {
    const W: f64 = 900.0;
    const H: f64 = 560.0;
    const L: f64 = 80.0;
    const R: f64 = 200.0;
    const T: f64 = 50.0;
    const B: f64 = 60.0;
    let all: Vec<&Point> = f
        .points
        .iter()
        .chain(std::iter::once(&f.shardctl))
        .collect();
    let max_cost = all.iter().map(|p| p.cost_usd).fold(0.0, f64::max).max(1.0) * 1.05;
    let y_of = |t: u64| (1.0 + t as f64).log10();
    let max_y = all
        .iter()
        .map(|p| y_of(p.throttled))
        .fold(1.0, f64::max)
        .ceil();
    let x = |c: f64| L + c / max_cost * (W - L - R);
    let y = |t: u64| T + (1.0 - y_of(t) / max_y) * (H - T - B);
    let colour = |family: &str| match family {
        "static" => "#7f7f7f",
        "scaling-utils" => "#1f77b4",
        "on-demand" => "#ff7f0e",
        "on-demand-advantage" => "#d62728",
        "lambda-sample" => "#9467bd",
        _ => "#2ca02c",
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{L}" y="24" font-size="15">{}</text>"#,
        escape(title)
    );
    // Axes and ticks.
    let _ = writeln!(
        s,
        r#"<line x1="{L}" y1="{}" x2="{}" y2="{}" stroke="black"/><line x1="{L}" y1="{T}" x2="{L}" y2="{}" stroke="black"/>"#,
        H - B,
        W - R,
        H - B,
        H - B
    );
    for i in 0..=5 {
        let c = max_cost * f64::from(i) / 5.0;
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">${c:.0}</text>"#,
            x(c),
            H - B + 18.0
        );
    }
    for e in 0..=(max_y as u32) {
        let t = 10u64.saturating_pow(e).saturating_sub(1);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            L - 6.0,
            y(t) + 4.0,
            if e == 0 {
                "0".to_owned()
            } else {
                format!("1e{e}")
            }
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{}" text-anchor="middle">cost (USD, every line item)</text>"#,
        (L + W - R) / 2.0,
        H - 20.0
    );
    let _ = writeln!(
        s,
        r#"<text x="18" y="{:.1}" transform="rotate(-90 18 {:.1})" text-anchor="middle">records throttled (log)</text>"#,
        (T + H - B) / 2.0,
        (T + H - B) / 2.0
    );
    // Each family's Pareto front, then its points.
    let mut legend_y = T;
    let mut families: Vec<&'static str> = Vec::new();
    for p in &f.points {
        if !families.contains(&p.family) {
            families.push(p.family);
        }
    }
    for family in families {
        let mut pts: Vec<&Point> = f.points.iter().filter(|p| p.family == family).collect();
        pts.sort_by(|a, b| a.cost_usd.total_cmp(&b.cost_usd));
        let mut front = Vec::new();
        let mut best = u64::MAX;
        for p in &pts {
            if p.throttled < best {
                best = p.throttled;
                front.push(format!("{:.1},{:.1}", x(p.cost_usd), y(p.throttled)));
            }
        }
        if front.len() > 1 {
            let _ = writeln!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="1.5"/>"#,
                front.join(" "),
                colour(family)
            );
        }
        for p in &pts {
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{}"><title>{}: {} (${:.2}, {} throttled)</title></circle>"#,
                x(p.cost_usd),
                y(p.throttled),
                colour(family),
                family,
                escape(&p.config),
                p.cost_usd,
                p.throttled
            );
        }
        let _ = writeln!(
            s,
            r#"<circle cx="{}" cy="{legend_y}" r="5" fill="{}"/><text x="{}" y="{:.1}">{family}</text>"#,
            W - R + 20.0,
            colour(family),
            W - R + 32.0,
            legend_y + 4.0
        );
        legend_y += 20.0;
    }
    let me = &f.shardctl;
    let _ = writeln!(
        s,
        r#"<circle cx="{:.1}" cy="{:.1}" r="7" fill="{}" stroke="black" stroke-width="2"><title>shardctl: ${:.2}, {} throttled</title></circle>"#,
        x(me.cost_usd),
        y(me.throttled),
        colour("shardctl"),
        me.cost_usd,
        me.throttled
    );
    let _ = writeln!(
        s,
        r#"<circle cx="{}" cy="{legend_y}" r="6" fill="{}" stroke="black" stroke-width="2"/><text x="{}" y="{:.1}">shardctl</text>"#,
        W - R + 20.0,
        colour("shardctl"),
        W - R + 32.0,
        legend_y + 4.0
    );
    s.push_str("</svg>\n");
    s
}

/// Which strategies the frontier needs from the normal comparison.
pub const NEEDED: [Strategy; 3] = [
    Strategy::Shardctl,
    Strategy::OnDemand,
    Strategy::OnDemandAdvantage,
];

#[cfg(test)]
mod tests {
    use super::*;

    fn p(family: &'static str, throttled: u64, cost_usd: f64) -> Point {
        Point {
            family,
            config: format!("{throttled}@{cost_usd}"),
            throttled,
            cost_usd,
        }
    }

    #[test]
    fn answers_pick_the_cheapest_at_equal_throttling_and_the_least_throttling_at_equal_cost() {
        let me = p("shardctl", 100, 10.0);
        let points = [
            p("static", 1000, 8.0),
            p("static", 100, 14.0),
            p("static", 50, 20.0),
            p("static", 500, 9.5),
        ];
        let a = answer("static", &points, &me);
        assert_eq!(
            a.cheapest_at_equal_throttling.as_ref().map(|p| p.cost_usd),
            Some(14.0)
        );
        let rel = a.shardctl_cost_relative.unwrap_or_default();
        assert!((rel - (10.0 / 14.0 - 1.0)).abs() < 1e-9);
        assert_eq!(
            a.least_throttling_at_equal_cost.map(|p| p.throttled),
            Some(500)
        );
        let none = answer("static", &[p("static", 101, 1.0)], &me);
        assert!(
            none.cheapest_at_equal_throttling.is_none() && none.shardctl_cost_relative.is_none()
        );
    }

    #[test]
    fn sweeps_cover_half_to_four_times_and_the_documented_settings() {
        let counts = static_counts(16);
        assert_eq!((counts[0], *counts.last().unwrap_or(&0) >= 60), (8, true));
        assert!(counts.len() <= 20);
        let base = UniformConfig::scaling_utils(&crate::example_stream());
        assert!(
            uniform_grid(base).contains(&base),
            "the documented settings are a grid point"
        );
        let lambda = UniformConfig::lambda_sample(&crate::example_stream());
        assert!(
            lambda_grid(lambda).contains(&lambda),
            "the shipped settings are a grid point"
        );
    }

    #[test]
    fn the_plot_is_one_svg_with_every_point() {
        let f = Frontier {
            shardctl: p("shardctl", 10, 5.0),
            points: vec![p("static", 0, 9.0), p("static", 1_000_000, 4.0)],
            answers: Vec::new(),
        };
        let svg = svg(&f, "t <1>");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<title>").count(), 3);
        assert!(svg.contains("t &lt;1&gt;"));
    }
}
