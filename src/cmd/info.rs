//! `info`: this machine — host name, every interface (index, state, carrier,
//! MAC, MTU, flags, addresses with prefix), default gateways and DNS servers.
//! The data comes from [`crate::host`]; this file parses the words and renders.

use clap::{ArgMatches, Args};

use crate::cmd::{Command, args_of};
use crate::error::{Error, Result};
use crate::host::{HostInfo, Interface};
use crate::paint::Paint;
use crate::report::Report;
use crate::session::Session;

/// `info` words.
#[derive(Debug, Args)]
struct InfoArgs {
    /// Show only this interface (e.g. eth0)
    #[arg(value_name = "IFACE")]
    iface: Option<String>,
}

/// The `info` command.
pub struct Info;

impl Command for Info {
    fn name(&self) -> &'static str {
        "info"
    }
    fn summary(&self) -> &'static str {
        "This machine: host name, interfaces, addresses, gateways, DNS servers"
    }
    fn args(&self, c: clap::Command) -> clap::Command {
        InfoArgs::augment_args(c)
    }
    fn run(&self, m: &ArgMatches, _s: &mut Session) -> Result<Report> {
        let a: InfoArgs = args_of(m)?;
        let mut info = crate::host::gather();
        if let Some(want) = a.iface {
            let names: Vec<String> = info.interfaces.iter().map(|i| i.name.clone()).collect();
            info.interfaces.retain(|i| i.name == want);
            if info.interfaces.is_empty() {
                return Err(Error::bad_value(format!(
                    "no interface named '{}'",
                    crate::proto::escape::escape_controls(&want)
                ))
                .with_hint(format!("this machine has: {}", names.join(", "))));
            }
        }
        Ok(Report::Info(info))
    }
}

fn state_word(i: &Interface, p: &Paint) -> String {
    match (i.up, i.carrier) {
        (false, _) => p.red("DOWN"),
        (true, Some(false)) => p.yellow("NO-CARRIER"),
        (true, _) => p.green("UP"),
    }
}

/// Text form of `info`.
pub fn render(r: &HostInfo, p: &Paint) -> String {
    let mut out = String::new();
    let label = |s: &str| p.bold(&format!("{s:<12}"));
    out.push_str(&format!(
        "{}: {}\n",
        label("Host name"),
        p.cyan(&r.hostname)
    ));
    out.push_str(&format!("{}:\n", label("Interfaces")));
    for i in &r.interfaces {
        let idx = i.index.map_or("?".into(), |n| n.to_string());
        // Pad, then paint: escape codes have no width on screen.
        let name = p.bold(&format!("{:<10}", i.name));
        let mut head = format!("  {idx:>2}: {name} {}", state_word(i, p));
        if let Some(t) = &i.link_type {
            head.push_str(&format!("  {t}"));
        }
        if let Some(m) = i.mtu {
            head.push_str(&format!("  mtu {m}"));
        }
        if let Some(mac) = &i.mac {
            head.push_str(&format!("  mac {mac}"));
        }
        out.push_str(&head);
        out.push('\n');
        if !i.flags.is_empty() {
            out.push_str(&format!(
                "      {} <{}>{}\n",
                p.dim("flags"),
                i.flags.join(","),
                i.oper_state
                    .as_ref()
                    .map(|s| p.dim(&format!("  operstate {s}")))
                    .unwrap_or_default()
            ));
        }
        for a in &i.addresses {
            let mut line = format!(
                "      {:<5} {}/{}",
                a.family,
                p.cyan(&a.address.to_string()),
                a.prefix
            );
            if let Some(b) = a.broadcast {
                line.push_str(&format!(" brd {b}"));
            }
            line.push_str(&format!(" scope {}", a.scope));
            out.push_str(&line);
            out.push('\n');
        }
    }
    let gws = if r.gateways.is_empty() {
        p.dim("(none)")
    } else {
        r.gateways
            .iter()
            .map(|g| {
                format!(
                    "{} via {} (metric {})",
                    p.cyan(&g.address.to_string()),
                    g.interface,
                    g.metric
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    out.push_str(&format!("{}: {gws}\n", label("Gateways")));
    let list = |v: &[std::net::IpAddr]| {
        v.iter()
            .map(|a| p.cyan(&a.to_string()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut dns = if r.dns.servers.is_empty() {
        p.dim("(none in /etc/resolv.conf)")
    } else {
        list(&r.dns.servers)
    };
    if r.dns.stub {
        match &r.dns.upstream {
            Some(up) => dns.push_str(&format!(" (local stub; upstream {})", list(up))),
            None => dns.push_str(&p.dim(" (local stub; upstream servers not found)")),
        }
    }
    out.push_str(&format!("{}: {dns}", label("DNS servers")));
    if !r.dns.search.is_empty() {
        out.push_str(&format!(
            "\n{}: {}",
            label("DNS search"),
            r.dns.search.join(" ")
        ));
    }
    out
}
