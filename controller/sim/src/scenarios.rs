//! The built-in traffic scenarios of `shardctl simulate` and `run --simulate`.

use crate::traffic::{Diurnal, MIB, Scenario, Synthetic, TrafficEvent, TrafficModel};
use anyhow::{Result, bail};
use chrono::{DateTime, TimeZone, Utc};

/// The names of the built-in scenarios.
pub const SCENARIOS: [&str; 5] = [
    "hot-org-surge",
    "diurnal",
    "flash-crowd",
    "night-merge",
    "single-hot-key",
];

pub(crate) fn monday(hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 2, hour, 0, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

/// Records per second that load `shards` shards to `utilisation` (0..1) of their byte limit with
/// records of `record_bytes`.
fn rps_for(shards: usize, utilisation: f64, record_bytes: f64) -> f64 {
    shards as f64 * utilisation * MIB / record_bytes
}

/// A built-in scenario. `seed` places the organisations' keys. Unknown names are an error that
/// lists the known ones.
///
/// Every scenario starts on Monday 2026-11-02 (UTC) and uses organisations as partition keys
/// (20,000 organisations, Zipf exponent 0.8, 2 KiB records, the 32 largest tracked as heavy keys):
///
/// - `hot-org-surge`: 16 shards, a daily cycle peaking near 55 % of the byte limit at 14:00, the
///   nightly billing export doubling traffic 01:45–03:45, and one mid-sized organisation surging
///   by 650 records/s of 1 KiB (about 63 % of a shard) from 10:00 to 14:00.
/// - `diurnal`: 16 shards, a strong daily cycle from 15 % to 90 % of the byte limit (peak 15:00).
/// - `flash-crowd`: 16 shards at a steady 40 %, then the whole stream ×2.5 from 12:00 for 45
///   minutes (3-minute ramp).
/// - `night-merge`: 32 shards provisioned for a daytime peak, starting Monday 18:00; traffic falls
///   to about 5 % per shard at night and comes back in the morning.
/// - `single-hot-key`: 16 shards at 35 %, and one key of 8 KiB records at 1.4 MiB/s (more than a
///   whole shard can take) from 09:00 to 13:00.
pub fn scenario(name: &str, seed: u64) -> Result<Scenario> {
    const RECORD: f64 = 2048.0;
    let orgs = |seed| Synthetic::organisations(20_000, 0.8, 32, RECORD, seed);
    let (initial_shards, start, minutes, surge, description, traffic) = match name {
        "hot-org-surge" => {
            let mut t = orgs(seed);
            t.records_per_second = rps_for(16, 0.55, RECORD);
            t.diurnal = Some(Diurnal {
                low: 0.3,
                high: 1.0,
                peak_hour: 14.0,
            });
            t.events.push(TrafficEvent::StreamFactor {
                start: 105,
                end: 225,
                factor: 2.0,
                ramp: 5,
            });
            // A mid-sized organisation (rank 20) surges; its records are 1 KiB.
            t.heavy[19].record_bytes = 1024.0;
            t.events.push(TrafficEvent::KeySurge {
                key: 19,
                start: 600,
                end: 840,
                records_per_second: 650.0,
                ramp: 2,
            });
            (
                16,
                monday(0),
                24 * 60,
                Some((600, 840)),
                "one organisation surges to ~63% of a shard for 4 h on a 16-shard stream",
                t,
            )
        }
        "diurnal" => {
            let mut t = orgs(seed);
            t.records_per_second = rps_for(16, 0.9, RECORD);
            t.diurnal = Some(Diurnal {
                low: 0.17,
                high: 1.0,
                peak_hour: 15.0,
            });
            (
                16,
                monday(0),
                24 * 60,
                None,
                "a daily cycle from 15% to 90% of capacity on a 16-shard stream",
                t,
            )
        }
        "flash-crowd" => {
            let mut t = orgs(seed);
            t.records_per_second = rps_for(16, 0.4, RECORD);
            t.events.push(TrafficEvent::StreamFactor {
                start: 720,
                end: 765,
                factor: 2.5,
                ramp: 3,
            });
            (
                16,
                monday(0),
                24 * 60,
                Some((720, 765)),
                "the whole stream jumps to 2.5x for 45 minutes at noon",
                t,
            )
        }
        "night-merge" => {
            let mut t = orgs(seed);
            t.records_per_second = rps_for(32, 0.6, RECORD);
            t.diurnal = Some(Diurnal {
                low: 0.08,
                high: 1.0,
                peak_hour: 14.0,
            });
            (
                32,
                monday(18),
                24 * 60,
                None,
                "32 shards sized for the day peak; quiet night from Monday 18:00",
                t,
            )
        }
        "single-hot-key" => {
            let mut t = orgs(seed);
            t.records_per_second = rps_for(16, 0.35, RECORD);
            t.heavy[4].record_bytes = 8192.0;
            t.events.push(TrafficEvent::KeySurge {
                key: 4,
                start: 540,
                end: 780,
                records_per_second: 1.4 * MIB / 8192.0,
                ramp: 2,
            });
            (
                16,
                monday(0),
                24 * 60,
                Some((540, 780)),
                "one key at 1.4 MiB/s, more than any shard can take, for 4 h",
                t,
            )
        }
        other => bail!(
            "unknown scenario `{other}`; built-in scenarios: {}",
            SCENARIOS.join(", ")
        ),
    };
    Ok(Scenario {
        name: name.to_string(),
        description: description.to_string(),
        initial_shards,
        start,
        minutes,
        traffic: TrafficModel::Synthetic(traffic),
        surge,
        producers: Default::default(),
        large_records: Default::default(),
        readers: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::MinuteRates;

    #[test]
    fn every_builtin_scenario_builds() {
        for name in SCENARIOS {
            let s = scenario(name, 7).expect("builds");
            let mut r = MinuteRates::default();
            s.traffic.rates(0, s.start, true, &mut r);
            assert!(r.total_records() > 0.0, "{name}");
        }
        assert!(scenario("nope", 1).is_err());
    }
}
