//! What the strategies cost: the price list (one documented file, [`PRICES_FILE`], overridable
//! with `shardctl simulate --prices FILE`) and the cost of a run, line item by line item.
//!
//! Line items: shard-hours and PUT payload units (provisioned strategies); shardctl's own reads,
//! the shard-level metrics it turns on (3 per open shard, billed as CloudWatch custom metrics,
//! prorated by the hour) and the metrics its `GetMetricData` calls request (3 per open shard per
//! evaluation, at the policy's interval); on-demand Standard's stream-hours and data in and out;
//! on-demand Advantage's data in and out (no stream-hours) and the part of its minimum throughput
//! commitment (ingest and retrieval) that the stream's own traffic does not use; enhanced fan-out (consumer-shard-hours
//! and data out in provisioned mode, data out in on-demand) for the consumers that use it.
//! Stream-level metrics, which the uniform baselines read, are free; their `GetMetricStatistics`
//! requests and alarms are not counted (cents a month). Not priced: extended retention.

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The shipped price list (US East, N. Virginia), with the source and date of every line.
pub const PRICES_FILE: &str = include_str!("../prices.yaml");

/// Hours per month as AWS prorates monthly prices.
pub const HOURS_PER_MONTH: f64 = 730.0;

/// Shard-level metrics shardctl turns on and reads per open shard.
pub const METRICS_PER_SHARD: f64 = 3.0;

/// Prices in USD, one field per line of the price file.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Prices {
    /// Per provisioned shard-hour.
    pub shard_hour: f64,
    /// Per million PUT payload units of 25 KB.
    pub put_payload_units_per_million: f64,
    /// On-demand (Standard): per stream-hour.
    pub on_demand_stream_hour: f64,
    /// On-demand (Standard): per GB written, each record rounded up to 1 KB.
    pub on_demand_gb_in: f64,
    /// On-demand (Standard): per GB read.
    pub on_demand_gb_out: f64,
    /// Per metric-month of shard-level metrics (CloudWatch custom metric rate).
    pub shard_level_metric_month: f64,
    /// Per 1,000 metrics requested by `GetMetricData`.
    pub get_metric_data_per_thousand_metrics: f64,
    /// On-demand Standard: per GB read by enhanced fan-out consumers.
    pub on_demand_efo_gb_out: f64,
    /// On-demand Advantage: per GB written (records rounded up to 1 KB), also the rate of the
    /// unused ingest commitment.
    pub on_demand_advantage_gb_in: f64,
    /// On-demand Advantage: per GB read by shared-throughput consumers, also the rate of the
    /// unused retrieval commitment.
    pub on_demand_advantage_gb_out: f64,
    /// On-demand Advantage: per GB read by enhanced fan-out consumers.
    pub on_demand_advantage_efo_gb_out: f64,
    /// Provisioned: per enhanced fan-out consumer-shard-hour.
    pub efo_consumer_shard_hour: f64,
    /// Provisioned: per GB read by enhanced fan-out consumers.
    pub efo_gb_out: f64,
}

impl Default for Prices {
    /// The shipped list, [`PRICES_FILE`] (a unit test proves it parses).
    fn default() -> Self {
        #[allow(clippy::expect_used)]
        Prices::parse(PRICES_FILE, "the shipped prices.yaml")
            .expect("the shipped price list is valid")
    }
}

/// One line of the price file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceLine {
    usd: f64,
    per: String,
    source: String,
    checked: String,
    /// How far the line could be verified, when not fully.
    #[serde(default)]
    #[allow(dead_code)]
    note: Option<String>,
}

const NAMES: [&str; 13] = [
    "shardHour",
    "putPayloadUnitsPerMillion",
    "onDemandStreamHour",
    "onDemandGbIn",
    "onDemandGbOut",
    "shardLevelMetricMonth",
    "getMetricDataPerThousandMetrics",
    "onDemandEfoGbOut",
    "onDemandAdvantageGbIn",
    "onDemandAdvantageGbOut",
    "onDemandAdvantageEfoGbOut",
    "efoConsumerShardHour",
    "efoGbOut",
];

impl Prices {
    /// Reads a price file (the format of [`PRICES_FILE`]).
    pub fn load(path: &Path) -> Result<Prices> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read price list {}", path.display()))?;
        Prices::parse(&text, &path.display().to_string())
    }

    /// Parses a price file; `source` names it in errors. Every price must be present, finite and
    /// not negative, with what it is per, where it comes from and when it was checked.
    pub fn parse(text: &str, source: &str) -> Result<Prices> {
        let lines: BTreeMap<String, PriceLine> =
            serde_saphyr::from_str(text).map_err(|e| anyhow::anyhow!("{source}: {e}"))?;
        for name in lines.keys() {
            if !NAMES.contains(&name.as_str()) {
                bail!(
                    "{source}: unknown price `{name}` (known: {})",
                    NAMES.join(", ")
                );
            }
        }
        let get = |name: &str| -> Result<f64> {
            let line = lines
                .get(name)
                .with_context(|| format!("{source}: price `{name}` is missing"))?;
            if !line.usd.is_finite() || line.usd < 0.0 {
                bail!(
                    "{source}: price `{name}` must be a non-negative number, not {}",
                    line.usd
                );
            }
            if line.per.trim().is_empty()
                || line.source.trim().is_empty()
                || line.checked.trim().is_empty()
            {
                bail!("{source}: price `{name}` needs `per`, `source` and `checked`");
            }
            Ok(line.usd)
        };
        Ok(Prices {
            shard_hour: get(NAMES[0])?,
            put_payload_units_per_million: get(NAMES[1])?,
            on_demand_stream_hour: get(NAMES[2])?,
            on_demand_gb_in: get(NAMES[3])?,
            on_demand_gb_out: get(NAMES[4])?,
            shard_level_metric_month: get(NAMES[5])?,
            get_metric_data_per_thousand_metrics: get(NAMES[6])?,
            on_demand_efo_gb_out: get(NAMES[7])?,
            on_demand_advantage_gb_in: get(NAMES[8])?,
            on_demand_advantage_gb_out: get(NAMES[9])?,
            on_demand_advantage_efo_gb_out: get(NAMES[10])?,
            efo_consumer_shard_hour: get(NAMES[11])?,
            efo_gb_out: get(NAMES[12])?,
        })
    }
}

/// The cost of one run, line by line, in USD. Lines a strategy does not incur are 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Costs {
    /// Provisioned shard-hours.
    pub shard_hours: f64,
    /// PUT payload units.
    pub put_payload_units: f64,
    /// Shard-level metrics shardctl turns on.
    pub shard_level_metrics: f64,
    /// Metrics requested by shardctl's `GetMetricData` calls.
    pub get_metric_data: f64,
    /// On-demand stream-hours.
    pub on_demand_stream_hours: f64,
    /// On-demand data written.
    pub on_demand_data_in: f64,
    /// On-demand data read (shared-throughput and enhanced fan-out consumers).
    pub on_demand_data_out: f64,
    /// On-demand Advantage: the committed ingest and retrieval the stream did not use, each at
    /// its rate.
    pub on_demand_commitment: f64,
    /// Provisioned enhanced fan-out consumer-shard-hours.
    pub efo_consumer_shard_hours: f64,
    /// Provisioned enhanced fan-out data read.
    pub efo_data_out: f64,
}

impl Costs {
    /// A provisioned run: `shard_hours` open shard-hours and `payload_units` PUT payload units.
    pub fn provisioned(prices: &Prices, shard_hours: f64, payload_units: f64) -> Costs {
        Costs {
            shard_hours: shard_hours * prices.shard_hour,
            put_payload_units: payload_units / 1e6 * prices.put_payload_units_per_million,
            ..Costs::default()
        }
    }

    /// Adds what `consumers` enhanced fan-out consumers cost on a provisioned stream over
    /// `shard_hours` open shard-hours, each reading `gb_read_each` GB.
    pub fn with_enhanced_fan_out(
        mut self,
        prices: &Prices,
        consumers: u32,
        shard_hours: f64,
        gb_read_each: f64,
    ) -> Costs {
        let n = f64::from(consumers);
        self.efo_consumer_shard_hours = n * shard_hours * prices.efo_consumer_shard_hour;
        self.efo_data_out = n * gb_read_each * prices.efo_gb_out;
        self
    }

    /// Adds what shardctl's own reads cost over `shard_hours` open shard-hours, evaluated every
    /// `evaluation_interval_secs`: the shard-level metrics (hour-prorated metric-months) and the
    /// metrics each evaluation requests.
    pub fn with_shardctl_reads(
        mut self,
        prices: &Prices,
        shard_hours: f64,
        evaluation_interval_secs: f64,
    ) -> Costs {
        let metric_hours = METRICS_PER_SHARD * shard_hours;
        self.shard_level_metrics = metric_hours / HOURS_PER_MONTH * prices.shard_level_metric_month;
        let evaluations_per_hour = 3600.0 / evaluation_interval_secs.max(1.0);
        let metrics_requested = metric_hours * evaluations_per_hour;
        self.get_metric_data =
            metrics_requested / 1000.0 * prices.get_metric_data_per_thousand_metrics;
        self
    }

    /// Every line added up.
    pub fn total(&self) -> f64 {
        self.shard_hours
            + self.put_payload_units
            + self.shard_level_metrics
            + self.get_metric_data
            + self.on_demand_stream_hours
            + self.on_demand_data_in
            + self.on_demand_data_out
            + self.on_demand_commitment
            + self.efo_consumer_shard_hours
            + self.efo_data_out
    }

    /// What shardctl's own metric reads cost (0 for other strategies).
    pub fn metrics(&self) -> f64 {
        self.shard_level_metrics + self.get_metric_data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_price_list_parses_and_every_line_is_documented() {
        let p = Prices::parse(PRICES_FILE, "prices.yaml").expect("valid");
        assert_eq!(p.shard_hour, 0.015);
        assert_eq!(p, Prices::default());
        let lines: BTreeMap<String, PriceLine> =
            serde_saphyr::from_str(PRICES_FILE).expect("parses");
        assert_eq!(lines.len(), NAMES.len());
        for line in lines.values() {
            assert!(
                line.source.starts_with("https://aws.amazon.com/"),
                "{}",
                line.source
            );
        }
    }

    #[test]
    fn bad_price_files_are_errors_that_name_the_file() {
        let missing = PRICES_FILE.replace("shardHour:", "shardHours:");
        let e = Prices::parse(&missing, "p.yaml").expect_err("unknown name");
        assert!(
            format!("{e:#}").contains("p.yaml: unknown price `shardHours`"),
            "{e:#}"
        );
        let negative = PRICES_FILE.replace("usd: 0.015", "usd: -1");
        assert!(Prices::parse(&negative, "p.yaml").is_err());
        assert!(Prices::parse("shardHour: [", "p.yaml").is_err());
    }

    #[test]
    fn shardctls_own_reads_cost_about_two_dollars_per_shard_month_at_one_minute() {
        let p = Prices::default();
        let c = Costs::provisioned(&p, HOURS_PER_MONTH, 0.0).with_shardctl_reads(
            &p,
            HOURS_PER_MONTH,
            60.0,
        );
        // 3 metrics x $0.30, and 3 metrics x 43,800 evaluations / 1,000 x $0.01.
        assert!((c.shard_level_metrics - 0.90).abs() < 1e-9, "{c:?}");
        assert!((c.get_metric_data - 1.314).abs() < 1e-9, "{c:?}");
        assert!((c.total() - (10.95 + 0.90 + 1.314)).abs() < 1e-9);
    }
}
