//! The `checkpoint` attribute: a sentinel or a Kinesis sequence number.

use std::fmt;

/// Where processing of a shard stands, as stored in the `checkpoint` and
/// `checkpointSubSequenceNumber` attributes.
///
/// ```
/// use shardctl_lease::Checkpoint;
/// assert_eq!(Checkpoint::parse("SHARD_END", 0), Ok(Checkpoint::ShardEnd));
/// let cp = Checkpoint::parse("49590338271490256608559692538361571095921575989136588898", 0).unwrap();
/// assert!(cp.is_past_start());
/// // Anything else is not a checkpoint KCL or this library writes.
/// assert!(Checkpoint::parse("12ab", 0).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Checkpoint {
    /// Start from the oldest record still retained.
    TrimHorizon,
    /// Start from records written after the iterator is created.
    Latest,
    /// Start from the application's configured timestamp (KCL stores only the sentinel).
    AtTimestamp,
    /// The shard was read to its end and the processor confirmed it. Children may start.
    ShardEnd,
    /// Processing continues after this record.
    Sequence {
        /// Kinesis sequence number (decimal digits).
        sequence_number: String,
        /// Sub-sequence number within a KPL-aggregated record, 0 otherwise.
        sub_sequence_number: u64,
    },
}

/// A `checkpoint` value that is neither a sentinel nor a sequence number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("checkpoint `{shown}` is neither a sentinel nor a decimal sequence number")]
pub struct CheckpointError {
    /// The value, shortened (by characters) for messages.
    pub shown: String,
}

/// Longest sequence number accepted (Kinesis writes up to 56 digits; 128 leaves room).
const MAX_SEQUENCE_DIGITS: usize = 128;

impl Checkpoint {
    /// Sentinel string for [`Checkpoint::TrimHorizon`].
    pub const TRIM_HORIZON: &'static str = "TRIM_HORIZON";
    /// Sentinel string for [`Checkpoint::Latest`].
    pub const LATEST: &'static str = "LATEST";
    /// Sentinel string for [`Checkpoint::AtTimestamp`].
    pub const AT_TIMESTAMP: &'static str = "AT_TIMESTAMP";
    /// Sentinel string for [`Checkpoint::ShardEnd`].
    pub const SHARD_END: &'static str = "SHARD_END";

    /// Reads the stored `checkpoint` and `checkpointSubSequenceNumber` values. A value that is
    /// neither a sentinel nor 1 to 128 ASCII digits is an error, never a guess.
    ///
    /// ```
    /// use shardctl_lease::Checkpoint;
    /// assert_eq!(Checkpoint::parse("TRIM_HORIZON", 0), Ok(Checkpoint::TrimHorizon));
    /// assert!(Checkpoint::parse("４２", 0).is_err()); // full-width digits are not ASCII
    /// ```
    pub fn parse(value: &str, sub_sequence_number: u64) -> Result<Self, CheckpointError> {
        Ok(match value {
            Self::TRIM_HORIZON => Self::TrimHorizon,
            Self::LATEST => Self::Latest,
            Self::AT_TIMESTAMP => Self::AtTimestamp,
            Self::SHARD_END => Self::ShardEnd,
            digits
                if !digits.is_empty()
                    && digits.len() <= MAX_SEQUENCE_DIGITS
                    && digits.bytes().all(|b| b.is_ascii_digit()) =>
            {
                Self::Sequence {
                    sequence_number: digits.to_owned(),
                    sub_sequence_number,
                }
            }
            other => {
                return Err(CheckpointError {
                    shown: shorten(other, 40),
                });
            }
        })
    }

    /// The value stored in the `checkpoint` attribute.
    ///
    /// ```
    /// use shardctl_lease::Checkpoint;
    /// assert_eq!(Checkpoint::Latest.as_str(), "LATEST");
    /// ```
    pub fn as_str(&self) -> &str {
        match self {
            Self::TrimHorizon => Self::TRIM_HORIZON,
            Self::Latest => Self::LATEST,
            Self::AtTimestamp => Self::AT_TIMESTAMP,
            Self::ShardEnd => Self::SHARD_END,
            Self::Sequence {
                sequence_number, ..
            } => sequence_number,
        }
    }

    /// The value stored in the `checkpointSubSequenceNumber` attribute.
    ///
    /// ```
    /// use shardctl_lease::Checkpoint;
    /// assert_eq!(Checkpoint::ShardEnd.sub_sequence_number(), 0);
    /// ```
    pub fn sub_sequence_number(&self) -> u64 {
        match self {
            Self::Sequence {
                sub_sequence_number,
                ..
            } => *sub_sequence_number,
            _ => 0,
        }
    }

    /// True for [`Checkpoint::ShardEnd`].
    ///
    /// ```
    /// use shardctl_lease::Checkpoint;
    /// assert!(Checkpoint::ShardEnd.is_shard_end());
    /// ```
    pub fn is_shard_end(&self) -> bool {
        matches!(self, Self::ShardEnd)
    }

    /// True when the lease's shard is under way or done: a sequence number, `SHARD_END`, or
    /// `LATEST`. This is KCL's own test before it deletes a finished parent's lease (every child
    /// past `TRIM_HORIZON` and `AT_TIMESTAMP`), and so the evidence that a missing ancestor row
    /// was cleaned up rather than never written. `LATEST` counts: KCL and this library write it
    /// only on shards whose ancestors the application chose not to read.
    ///
    /// ```
    /// use shardctl_lease::Checkpoint;
    /// assert!(Checkpoint::ShardEnd.is_past_start());
    /// assert!(!Checkpoint::TrimHorizon.is_past_start());
    /// assert!(!Checkpoint::AtTimestamp.is_past_start());
    /// ```
    pub fn is_past_start(&self) -> bool {
        !matches!(self, Self::TrimHorizon | Self::AtTimestamp)
    }

    /// A short form for messages: long sequence numbers keep their last 12 digits.
    ///
    /// ```
    /// use shardctl_lease::Checkpoint;
    /// let cp = Checkpoint::parse("49590338271490256608559692538361571095921575989136588898", 0).unwrap();
    /// assert_eq!(cp.short(), "…989136588898");
    /// assert_eq!(Checkpoint::ShardEnd.short(), "SHARD_END");
    /// ```
    pub fn short(&self) -> String {
        match self {
            Self::Sequence {
                sequence_number, ..
            } if sequence_number.len() > 16 => {
                // ASCII digits only (checked by `parse`), but stay character-safe regardless.
                let start = sequence_number
                    .char_indices()
                    .rev()
                    .nth(11)
                    .map_or(0, |(i, _)| i);
                format!("…{}", &sequence_number[start..])
            }
            other => other.to_string(),
        }
    }
}

impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sequence {
                sequence_number,
                sub_sequence_number: 0,
            } => f.write_str(sequence_number),
            Self::Sequence {
                sequence_number,
                sub_sequence_number,
            } => write!(f, "{sequence_number}.{sub_sequence_number}"),
            other => f.write_str(other.as_str()),
        }
    }
}

/// At most `max` characters of `text`, with `…` when cut. Character-safe for any UTF-8.
pub(crate) fn shorten(text: &str, max: usize) -> String {
    let mut chars = text.chars();
    let head: String = chars.by_ref().take(max).collect();
    if chars.next().is_some() {
        format!("{head}…")
    } else {
        head
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn parse_never_panics_and_round_trips(value in "\\PC{0,60}", sub in any::<u64>()) {
            if let Ok(cp) = Checkpoint::parse(&value, sub) {
                prop_assert_eq!(cp.as_str(), value.as_str());
                let _ = cp.short();
            }
        }

        #[test]
        fn sequence_numbers_parse(digits in "[0-9]{1,56}") {
            let cp = Checkpoint::parse(&digits, 3);
            let is_sequence = matches!(cp, Ok(Checkpoint::Sequence { sub_sequence_number: 3, .. }));
            prop_assert!(is_sequence);
        }
    }

    #[test]
    fn non_ascii_checkpoint_is_an_error_with_a_character_safe_message() {
        let err = Checkpoint::parse(&"é".repeat(100), 0).unwrap_err();
        assert_eq!(err.shown.chars().count(), 41);
    }
}
