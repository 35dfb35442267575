//! Every foca timing and the agent's own periods, with LAN defaults.

use std::num::{NonZeroU8, NonZeroU32, NonZeroUsize};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::envelope::{DATAGRAM_HEADER_MAX, OVERHEAD};

/// Largest SWIM datagram payload; sealed, it still fits a 1472-byte IPv4
/// UDP payload (`1400 + envelope + time and key ids + tag byte`).
pub const MAX_PACKET_SIZE: usize = 1400;
/// Largest sealed datagram this build sends and accepts: a full SWIM
/// payload, its tag byte, and what the box carries before it. (Leaving
/// out the time and key ids refused every datagram foca filled to within
/// 13 bytes of its limit: a node whose gossip was that full could not be
/// heard, and stayed down on every other node.)
pub const MAX_DATAGRAM: usize = MAX_PACKET_SIZE + 1 + OVERHEAD + DATAGRAM_HEADER_MAX;

/// Failure-detection and dissemination timings.
///
/// Defaults follow the measurements in `notes/foca-timings.md` (5 nodes, real
/// UDP): a `kill -9` is declared down in ~2.3 s median (max ~4 s), with no
/// false downs under 2x CPU oversubscription. A node whose agent freezes for
/// more than ~2 s is declared down (and rejoins under a new epoch).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timings {
    /// One probe of a random member per period.
    #[serde(with = "humanish")]
    pub probe_period: Duration,
    /// Wait for a direct ack before asking others to probe; < `probe_period`.
    #[serde(with = "humanish")]
    pub probe_rtt: Duration,
    /// How long a member stays suspect before it is declared down. The
    /// dominant term of detection time.
    #[serde(with = "humanish")]
    pub suspect_to_down_after: Duration,
    /// Members asked to probe indirectly; also gossip fan-out.
    pub num_indirect_probes: usize,
    /// Sends per membership update and per custom broadcast.
    pub max_transmissions: u8,
    /// Period of gossip while updates are queued.
    #[serde(with = "humanish")]
    pub gossip_period: Duration,
    /// Members gossiped to per period.
    pub gossip_fanout: usize,
    /// Period of asking a random member for more members.
    #[serde(with = "humanish")]
    pub announce_period: Duration,
    /// Period of announcing to members believed down (heals partitions).
    #[serde(with = "humanish")]
    pub announce_down_period: Duration,
    /// How long a down member is remembered.
    #[serde(with = "humanish")]
    pub remove_down_after: Duration,
    /// Period of the TCP membership push-pull with one random member.
    #[serde(with = "humanish")]
    pub push_pull_period: Duration,
    /// First delay between announces to the seeds while not joined.
    #[serde(with = "humanish")]
    pub rejoin_min: Duration,
    /// Cap of the rejoin backoff.
    #[serde(with = "humanish")]
    pub rejoin_max: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            probe_period: Duration::from_millis(500),
            probe_rtt: Duration::from_millis(150),
            suspect_to_down_after: Duration::from_millis(1500),
            num_indirect_probes: 3,
            max_transmissions: 6,
            gossip_period: Duration::from_millis(200),
            gossip_fanout: 3,
            announce_period: Duration::from_secs(30),
            announce_down_period: Duration::from_secs(5),
            remove_down_after: Duration::from_secs(24 * 3600),
            push_pull_period: Duration::from_secs(10),
            rejoin_min: Duration::from_millis(200),
            rejoin_max: Duration::from_secs(5),
        }
    }
}

/// Longest any timing may be (a year).
pub const MAX_TIMING: Duration = Duration::from_secs(365 * 24 * 3600);

impl Timings {
    /// Checks ranges; the error names the field.
    pub fn validate(&self) -> Result<(), Error> {
        let positive = [
            ("probe_period", self.probe_period),
            ("probe_rtt", self.probe_rtt),
            ("suspect_to_down_after", self.suspect_to_down_after),
            ("gossip_period", self.gossip_period),
            ("announce_period", self.announce_period),
            ("announce_down_period", self.announce_down_period),
            ("remove_down_after", self.remove_down_after),
            ("push_pull_period", self.push_pull_period),
            ("rejoin_min", self.rejoin_min),
            ("rejoin_max", self.rejoin_max),
        ];
        for (field, value) in positive {
            if value.is_zero() {
                return Err(Error::Config(format!("{field} must be greater than zero")));
            }
            // Timers add these to the clock: absurd values must not overflow it.
            if value > MAX_TIMING {
                return Err(Error::Config(format!(
                    "{field} ({value:?}) must be at most {MAX_TIMING:?}"
                )));
            }
        }
        if self.probe_rtt >= self.probe_period {
            return Err(Error::Config(format!(
                "probe_rtt ({:?}) must be shorter than probe_period ({:?})",
                self.probe_rtt, self.probe_period
            )));
        }
        if self.rejoin_min > self.rejoin_max {
            return Err(Error::Config(
                "rejoin_min must not exceed rejoin_max".into(),
            ));
        }
        for (field, value) in [
            ("num_indirect_probes", self.num_indirect_probes),
            ("gossip_fanout", self.gossip_fanout),
            ("max_transmissions", usize::from(self.max_transmissions)),
        ] {
            if value == 0 {
                return Err(Error::Config(format!("{field} must be at least 1")));
            }
        }
        Ok(())
    }

    /// The foca configuration these timings describe.
    pub fn foca_config(&self) -> Result<foca::Config, Error> {
        self.validate()?;
        let nonzero = |v: usize| NonZeroUsize::new(v).ok_or_else(|| Error::Config("zero".into()));
        let mut config = foca::Config::new_lan(NonZeroU32::MIN);
        config.probe_period = self.probe_period;
        config.probe_rtt = self.probe_rtt;
        config.suspect_to_down_after = self.suspect_to_down_after;
        config.num_indirect_probes = nonzero(self.num_indirect_probes)?;
        config.max_transmissions =
            NonZeroU8::new(self.max_transmissions).ok_or_else(|| Error::Config("zero".into()))?;
        config.remove_down_after = Some(self.remove_down_after);
        config.max_packet_size = nonzero(MAX_PACKET_SIZE)?;
        config.notify_down_members = true;
        config.periodic_gossip = Some(foca::PeriodicParams {
            frequency: self.gossip_period,
            num_members: nonzero(self.gossip_fanout)?,
        });
        config.periodic_announce = Some(foca::PeriodicParams {
            frequency: self.announce_period,
            num_members: nonzero(1)?,
        });
        config.periodic_announce_to_down_members = Some(foca::PeriodicParams {
            frequency: self.announce_down_period,
            num_members: nonzero(2)?,
        });
        Ok(config)
    }
}

/// Durations as humane strings (`"500ms"`, `"1.5s"`, `"2m"`, `"24h"`), via `humantime`.
pub mod humanish {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Parses a humane duration (`"500ms"`, `"1.5s"`, `"2m"`, `"1h 30m"`).
    pub fn parse(text: &str) -> Result<Duration, String> {
        humantime::parse_duration(text.trim()).map_err(|e| format!("{text:?}: {e}"))
    }

    /// Formats as milliseconds.
    pub fn format(d: &Duration) -> String {
        format!("{}ms", d.as_millis())
    }

    /// Serializes as milliseconds.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(d))
    }

    /// Deserializes a humane duration.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_reach_foca() {
        let t = Timings::default();
        let c = t.foca_config().unwrap();
        assert_eq!(c.probe_period, Duration::from_millis(500));
        assert_eq!(c.suspect_to_down_after, Duration::from_millis(1500));
        assert_eq!(c.max_transmissions.get(), 6);
        assert!(c.notify_down_members);
        assert_eq!(c.max_packet_size.get(), MAX_PACKET_SIZE);
    }

    /// The largest datagram foca can make, sealed with the most keys a
    /// ring holds, is accepted, and fits one IPv4 UDP payload.
    #[test]
    fn a_full_datagram_is_accepted_and_fits_one_udp_payload() {
        use crate::freshness::ReplayGuard;
        use crate::keyring::{Keyring, MAX_KEYS};
        use crate::{ClusterKey, Envelope, KeyId};
        let keys = (0..MAX_KEYS).map(|_| ClusterKey::generate()).collect();
        let envelope = Envelope::with_keyring(&Keyring::from_keys(keys).unwrap());
        let plain = vec![7u8; 1 + MAX_PACKET_SIZE];
        let sealed = envelope.seal_datagram(&plain, 1_000, &[] as &[KeyId]);
        assert_eq!(sealed.len(), MAX_DATAGRAM);
        const { assert!(MAX_DATAGRAM <= 1472) };
        let mut guard = ReplayGuard::default();
        let opened = envelope
            .open_datagram(&sealed, MAX_DATAGRAM, 1_000, &mut guard)
            .unwrap();
        assert_eq!(opened.payload, plain);
    }

    #[test]
    fn bad_values_name_the_field() {
        let t = Timings {
            probe_rtt: Duration::from_secs(1),
            ..Timings::default()
        };
        assert!(t.validate().unwrap_err().to_string().contains("probe_rtt"));
        let t = Timings {
            gossip_fanout: 0,
            ..Timings::default()
        };
        assert!(
            t.validate()
                .unwrap_err()
                .to_string()
                .contains("gossip_fanout")
        );
        let t = Timings {
            push_pull_period: Duration::ZERO,
            ..Timings::default()
        };
        assert!(
            t.validate()
                .unwrap_err()
                .to_string()
                .contains("push_pull_period")
        );
    }

    #[test]
    fn durations_parse() {
        assert_eq!(
            humanish::parse("500ms").unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(
            humanish::parse("1.5s").unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(humanish::parse("2m").unwrap(), Duration::from_secs(120));
        assert!(humanish::parse("10").unwrap_err().contains("\"10\""));
        assert!(humanish::parse("10 parsecs").unwrap_err().contains("unit"));
        assert!(humanish::parse("abc").is_err());
        assert!(humanish::parse("-1s").is_err());
    }
}
