//! An SVG picture of a simulation: one panel per provisioned strategy, time across, the hash key
//! space down. Each shard is a band over its key range for as long as it is open, coloured by its
//! offered load (share of the per-shard write limit); splits, merges and resizes are marked where
//! and when they happened, and the surge window is shaded.
//!
//! The plot is rectangles and lines on two linear axes; a small writer keeps it dependency-free
//! and its output byte-for-byte deterministic.

use crate::run::{Outcome, Summary};
use crate::traffic::Scenario;
use crate::world::{OpKind, World};
use shardctl_policies::{HashKey, MAX_HASH_KEY};
use std::fmt::Write;

const WIDTH: f64 = 1100.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 130.0;
const PANEL: f64 = 260.0;
const GAP: f64 = 70.0;
const TOP: f64 = 60.0;
const COLUMNS: u64 = 360;

struct Svg(String);

impl Svg {
    fn rect(&mut self, x: f64, y: f64, w: f64, h: f64, fill: &str, extra: &str) {
        let _ = writeln!(
            self.0,
            r#"<rect x="{x:.1}" y="{y:.2}" width="{w:.2}" height="{h:.2}" fill="{fill}"{extra}/>"#
        );
    }

    fn line(&mut self, [x1, y1, x2, y2]: [f64; 4], stroke: &str, width: f64, extra: &str) {
        let _ = writeln!(
            self.0,
            r#"<line x1="{x1:.1}" y1="{y1:.2}" x2="{x2:.1}" y2="{y2:.2}" stroke="{stroke}" stroke-width="{width}"{extra}/>"#
        );
    }

    fn text(&mut self, x: f64, y: f64, size: f64, anchor: &str, text: &str) {
        let escaped = escape(text);
        let _ = writeln!(
            self.0,
            r#"<text x="{x:.1}" y="{y:.1}" font-size="{size}" text-anchor="{anchor}">{escaped}</text>"#
        );
    }
}

/// `text` safe inside SVG markup.
pub(crate) fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Colour of a utilisation (1.0 = the per-shard limit): pale blue when idle, through yellow and
/// orange to red at and above the limit. Quantised to 12 steps.
fn colour(util: f64) -> (usize, &'static str) {
    const STEPS: [&str; 12] = [
        "#eef4fb", "#d4e6f4", "#b3d3ea", "#9ecae1", "#c7e9a0", "#f2f28a", "#fde07a", "#fdb95b",
        "#f98e44", "#ee5a32", "#d62f27", "#8b0d16",
    ];
    let i = if util >= 1.0 {
        if util >= 1.25 { 11 } else { 10 }
    } else {
        ((util.max(0.0) * 10.0) as usize).min(9)
    };
    (i, STEPS[i])
}

fn key_y(key: HashKey, top: f64) -> f64 {
    top + (key as f64 / MAX_HASH_KEY as f64) * PANEL
}

fn panel(svg: &mut Svg, w: &World, s: &Summary, scenario: &Scenario, minutes: u64, top: f64) {
    let plot_w = WIDTH - LEFT - RIGHT;
    let x_of = |second: f64| LEFT + second / (minutes as f64 * 60.0) * plot_w;
    let title = format!(
        "{} — throttled {} records ({:.3}%), {:.1} shard-hours, ${:.2}, {} operations, {} → {} shards",
        s.strategy.name(),
        s.throttled_records,
        s.throttled_percent,
        s.shard_hours.unwrap_or(0.0),
        s.cost_usd,
        s.operations,
        scenario.initial_shards,
        s.final_shards.unwrap_or(0),
    );
    svg.text(LEFT, top - 8.0, 13.0, "start", &title);
    svg.rect(LEFT, top, plot_w, PANEL, "#ffffff", r##" stroke="#444""##);
    let step = minutes.div_ceil(COLUMNS).max(1);
    for shard in w.shards() {
        let (y0, y1) = (
            key_y(shard.range.starting_hash_key, top),
            key_y(shard.range.ending_hash_key, top),
        );
        let h = (y1 - y0).max(0.3);
        let mut run: Option<(u64, u64, usize, &str)> = None;
        let flush = |svg: &mut Svg, run: Option<(u64, u64, usize, &str)>| {
            if let Some((a, b, _, fill)) = run {
                let (xa, xb) = (x_of(a as f64 * 60.0), x_of(b as f64 * 60.0));
                svg.rect(xa, y0, xb - xa, h, fill, "");
            }
        };
        for (chunk_i, chunk) in shard.minutes.chunks(step as usize).enumerate() {
            let first = shard.first_minute + chunk_i as u64 * step;
            if first >= minutes {
                break;
            }
            let util = chunk
                .iter()
                .map(|m| m.offered_utilisation(1))
                .fold(0.0, f64::max);
            let (level, fill) = colour(util);
            let last = (first + chunk.len() as u64).min(minutes);
            run = match run {
                Some((a, _, l, f)) if l == level => Some((a, last, l, f)),
                other => {
                    flush(svg, other);
                    Some((first, last, level, fill))
                }
            };
        }
        flush(svg, run);
        // The shard's lower boundary while it is open.
        let (from, to) = (
            x_of(shard.created as f64),
            x_of(shard.closed.unwrap_or(minutes * 60).min(minutes * 60) as f64),
        );
        svg.line([from, y1, to, y1], "#ffffff", 0.6, "");
    }
    if let Some((a, b)) = scenario.surge {
        let (xa, xb) = (x_of(a as f64 * 60.0), x_of(b as f64 * 60.0));
        svg.rect(xa, top - 4.0, xb - xa, 4.0, "#7b3294", "");
        svg.text(xb + 3.0, top - 0.5, 10.0, "start", "surge");
    }
    for op in &w.ops {
        let x = x_of(op.at as f64);
        match op.kind {
            OpKind::Split { range, key } => {
                svg.line(
                    [
                        x,
                        key_y(range.starting_hash_key, top),
                        x,
                        key_y(range.ending_hash_key, top),
                    ],
                    "#000000",
                    1.2,
                    "",
                );
                let y = key_y(key, top);
                let _ = writeln!(
                    svg.0,
                    r##"<path d="M{:.1},{:.2} l5,-4 l0,8 z" fill="#000000"/>"##,
                    x, y
                );
            }
            OpKind::Merge { range } => svg.line(
                [
                    x,
                    key_y(range.starting_hash_key, top),
                    x,
                    key_y(range.ending_hash_key, top),
                ],
                "#2166ac",
                1.2,
                r#" stroke-dasharray="3,2""#,
            ),
            OpKind::Resize { .. } => svg.line(
                [x, top, x, top + PANEL],
                "#000000",
                1.2,
                r#" stroke-dasharray="6,3""#,
            ),
        }
    }
    // Axes: hours across, key space down.
    let hours = minutes / 60;
    let every = if hours > 48 {
        12
    } else if hours > 12 {
        2
    } else {
        1
    };
    for h in (0..=hours).step_by(every as usize) {
        let x = x_of(h as f64 * 3600.0);
        svg.line([x, top + PANEL, x, top + PANEL + 4.0], "#444", 1.0, "");
        let at = scenario.start + chrono::TimeDelta::hours(h as i64);
        svg.text(
            x,
            top + PANEL + 16.0,
            10.0,
            "middle",
            &at.format("%H:%M").to_string(),
        );
    }
    for q in 0..=4 {
        let y = top + PANEL * q as f64 / 4.0;
        svg.line([LEFT - 4.0, y, LEFT, y], "#444", 1.0, "");
        svg.text(LEFT - 6.0, y + 3.5, 10.0, "end", &format!("{}%", q * 25));
    }
}

/// Renders the outcomes that have a world (provisioned strategies) as one SVG document.
pub fn render(scenario: &Scenario, minutes: u64, outcomes: &[Outcome]) -> String {
    let panels: Vec<&Outcome> = outcomes.iter().filter(|o| o.world.is_some()).collect();
    let height = TOP + panels.len() as f64 * (PANEL + GAP) + 20.0;
    let mut svg = Svg(String::new());
    let _ = writeln!(
        svg.0,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif">"#
    );
    svg.rect(0.0, 0.0, WIDTH, height, "#ffffff", "");
    svg.text(
        LEFT,
        22.0,
        16.0,
        "start",
        &format!(
            "shardctl simulate — scenario {}: {}",
            scenario.name, scenario.description
        ),
    );
    svg.text(
        LEFT,
        40.0,
        11.0,
        "start",
        "per-shard offered load over time (y: hash key space); ◀ and black line: split, blue dashed: merge, black dashed: UpdateShardCount",
    );
    for (i, o) in panels.iter().enumerate() {
        if let Some(w) = &o.world {
            let top = TOP + 20.0 + i as f64 * (PANEL + GAP);
            panel(&mut svg, w, &o.summary, scenario, minutes, top);
        }
    }
    // Legend.
    let lx = WIDTH - RIGHT + 25.0;
    svg.text(lx, TOP + 30.0, 11.0, "start", "offered load");
    for (i, (label, u)) in [
        ("0%", 0.0),
        ("20%", 0.25),
        ("40%", 0.45),
        ("60%", 0.65),
        ("75%", 0.75),
        ("90%", 0.95),
        ("100%", 1.0),
        ("125%+", 1.3),
    ]
    .iter()
    .enumerate()
    {
        let y = TOP + 40.0 + i as f64 * 18.0;
        svg.rect(lx, y, 16.0, 14.0, colour(*u).1, r##" stroke="#999""##);
        svg.text(lx + 22.0, y + 11.0, 10.0, "start", label);
    }
    svg.0.push_str("</svg>\n");
    svg.0
}
