//! The words every ping-like command shares (`ping`, `tcping`), with
//! ping's letters and meanings, and the duration parsers of probe commands
//! (`echo` and `trace` use them too): one definition, one wording of every
//! range.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use clap::Args;

use crate::net::client::Family;
use crate::net::probe::Plan;
use crate::units;

/// Most probes in one run (without `-c`: until Ctrl-C, up to this many).
pub const MAX_COUNT: u64 = 1_000_000_000;

/// `-c -i -W -w -q -4 -6`.
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// Stop after COUNT probes [default: until Ctrl-C or -w]
    #[arg(short = 'c', long, value_name = "COUNT",
          value_parser = clap::value_parser!(u64).range(1..=MAX_COUNT))]
    pub count: Option<u64>,
    /// Time between probes: 1s, 200ms (ping: 0 for as fast as replies come)
    #[arg(short = 'i', long, value_name = "INTERVAL", default_value = "1s", value_parser = interval)]
    pub interval: Duration,
    /// How long to wait for each answer [default: 'set timeout']
    #[arg(short = 'W', long = "timeout", value_name = "TIMEOUT", value_parser = wait)]
    pub timeout: Option<Duration>,
    /// Stop after this long, whatever the count: 10s
    #[arg(short = 'w', long, value_name = "DEADLINE", value_parser = deadline)]
    pub deadline: Option<Duration>,
    /// Quiet: only the first line and the summary
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// IPv4 only
    #[arg(short = '4', conflicts_with = "ipv6")]
    pub ipv4: bool,
    /// IPv6 only
    #[arg(short = '6')]
    pub ipv6: bool,
}

impl ProbeArgs {
    /// `-4` / `-6`.
    pub fn family(&self) -> Family {
        Family::from_flags(self.ipv4, self.ipv6)
    }

    /// The plan: probes numbered from 1 (as `icmp_seq`), each waiting `-W`
    /// or `default_timeout`, Ctrl-\ asking for the statistics so far.
    pub fn plan(&self, default_timeout: Duration, progress: &Arc<AtomicBool>) -> Plan {
        Plan {
            count: self.count.unwrap_or(MAX_COUNT),
            first_seq: 1,
            interval: self.interval,
            deadline: self.deadline,
            timeout: self.timeout.unwrap_or(default_timeout),
            await_previous: None,
            progress: Some(Arc::clone(progress)),
            light: false,
        }
    }
}

/// Between probes: 0 (as fast as answers come) to an hour.
///
/// # Errors
/// The value and the range, for clap to show.
pub fn interval(s: &str) -> Result<Duration, String> {
    units::duration_in(s, Duration::ZERO, Duration::from_secs(3600))
}

/// One probe's wait for its answer: 1 ms to an hour.
///
/// # Errors
/// The value and the range.
pub fn wait(s: &str) -> Result<Duration, String> {
    units::duration_in(s, Duration::from_millis(1), Duration::from_secs(3600))
}

/// A whole run's deadline: 1 ms to a week.
///
/// # Errors
/// The value and the range.
pub fn deadline(s: &str) -> Result<Duration, String> {
    units::duration_in(s, Duration::from_millis(1), Duration::from_secs(7 * 86_400))
}
