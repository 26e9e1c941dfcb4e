//! `HOST[:PORT]` endpoints: parsing (with a default port), display, and
//! resolution with a deadline, Ctrl-C and clear errors.
//!
//! Accepted forms: `host`, `host:port`, `1.2.3.4`, `1.2.3.4:port`, `::1`,
//! `[::1]`, `[::1]:port`. A bare IPv6 address has no port (its colons are the
//! address), so a port with IPv6 needs brackets, as in URLs.

use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind, Result};
use crate::net::client::{SLICE, interrupted};
use crate::units::format_duration;

/// A host (name or IP literal) and a port, as the user wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name or IP literal, without brackets.
    pub host: String,
    /// Port number, 1–65535.
    pub port: u16,
}

/// Longest DNS name (RFC 1035, section 2.3.4).
const MAX_HOST_LEN: usize = 253;

impl Endpoint {
    /// Parse `HOST[:PORT]`, using `default_port` when none is given.
    ///
    /// # Errors
    /// `bad-value` naming the input when the host or the port is malformed.
    pub fn parse(s: &str, default_port: u16) -> Result<Endpoint> {
        let s = s.trim();
        let bad = |why: &str| {
            Error::bad_value(format!("'{}' is not HOST[:PORT]: {why}", s.escape_debug()))
                .with_hint("write e.g. 127.0.0.1:5050, example.org, or [::1]:5050")
        };
        if s.is_empty() {
            return Err(bad("it is empty"));
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let Some(end) = rest.find(']') else {
                return Err(bad("missing ']'"));
            };
            let host = &rest[..end];
            let after = &rest[end + 1..];
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(bad("unexpected text after ']'")),
            };
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(bad("the part in brackets is not an IPv6 address"));
            }
            (host, port)
        } else if s.matches(':').count() > 1 {
            if s.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(bad("not an IPv6 address (use [ADDR]:PORT for a port)"));
            }
            (s, None)
        } else {
            match s.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (s, None),
            }
        };
        let port = match port {
            None => default_port,
            Some(p) => parse_port(p).map_err(|why| bad(&why))?,
        };
        if host.is_empty() {
            return Err(bad("the host is empty"));
        }
        if host.parse::<IpAddr>().is_err() && !valid_hostname(host) {
            return Err(bad("the host has characters a host name cannot have"));
        }
        Ok(Endpoint {
            host: host.to_string(),
            port,
        })
    }

    /// Resolve to socket addresses (IPv4 first where both exist, as most
    /// clients try them), giving up after `timeout` or once `interrupt` is
    /// set. An IP literal is answered at once, without a thread.
    ///
    /// A name goes to the system resolver (`getaddrinfo`), which has no
    /// deadline of its own that we can set, on a short-lived `netsh-dns`
    /// thread, and the calling thread waits for the answer in slices of at
    /// most [`SLICE`]. When the wait ends first, the lookup thread is left
    /// detached: it cannot be cancelled, but it ends on its own once the
    /// resolver's own timeouts and attempts run out (`resolv.conf` `timeout`
    /// × `attempts`), and its late answer is dropped. If no thread can be
    /// started, the name is resolved on this thread, without the deadline.
    ///
    /// # Errors
    /// `dns` when the name does not resolve, resolves to nothing, or gets no
    /// answer within `timeout`; `interrupted` once `interrupt` is set.
    pub fn resolve_within(
        &self,
        timeout: Duration,
        interrupt: Option<&AtomicBool>,
    ) -> Result<Vec<SocketAddr>> {
        if let Ok(ip) = self.host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, self.port)]);
        }
        if interrupt.is_some_and(|f| f.load(Ordering::Relaxed)) {
            return Err(interrupted());
        }
        // Lookups given up on keep their thread until the resolver answers
        // (up to its own timeout × attempts): a script looking up a dead
        // name in a loop must not pile up threads without end.
        if LOOKUPS.fetch_add(1, Ordering::SeqCst) >= MAX_LOOKUPS {
            LOOKUPS.fetch_sub(1, Ordering::SeqCst);
            return Err(Error::new(
                ErrorKind::Dns,
                format!(
                    "resolve {}: {MAX_LOOKUPS} earlier lookups are still waiting on the resolver",
                    self.host
                ),
            )
            .with_hint("the DNS servers are not answering ('info' lists them): fix them, or use an IP address"));
        }
        let (tx, rx) = mpsc::channel();
        let (host, port) = (self.host.clone(), self.port);
        let spawned = thread::Builder::new()
            .name("netsh-dns".into())
            .spawn(move || {
                // The receiver is gone when the caller gave up: nobody wants
                // the answer any more.
                let _ = tx.send(lookup(&host, port));
                LOOKUPS.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            LOOKUPS.fetch_sub(1, Ordering::SeqCst);
        }
        match spawned {
            // Not joined: see above. The answer is itself a Result.
            Ok(_detached) => wait_for_result(&rx, timeout, interrupt).map_err(|mut e| {
                if e.kind == ErrorKind::Dns {
                    e.message = format!("resolve {}: {}", self.host, e.message);
                }
                e
            })?,
            Err(_) => lookup(&self.host, self.port),
        }
    }
}

/// Look up the name of `ip` (reverse DNS, or `/etc/hosts`) on a thread of
/// its own, and send `(ip, name)` on `tx` when the resolver answers; the
/// name is `None` when there is none. Returns false, starting nothing, while
/// [`MAX_LOOKUPS`] lookups already wait on the resolver: ask again later.
pub fn reverse_lookup(ip: IpAddr, tx: mpsc::Sender<(IpAddr, Option<String>)>) -> bool {
    if LOOKUPS.fetch_add(1, Ordering::SeqCst) >= MAX_LOOKUPS {
        LOOKUPS.fetch_sub(1, Ordering::SeqCst);
        return false;
    }
    let spawned = thread::Builder::new()
        .name("netsh-dns".into())
        .spawn(move || {
            let _ = tx.send((ip, name_of(ip)));
            LOOKUPS.fetch_sub(1, Ordering::SeqCst);
        });
    if spawned.is_err() {
        LOOKUPS.fetch_sub(1, Ordering::SeqCst);
        return false;
    }
    true
}

/// `getnameinfo` with `NI_NAMEREQD`: the name, or `None`.
fn name_of(ip: IpAddr) -> Option<String> {
    let sa = socket2::SockAddr::from(SocketAddr::new(ip, 0));
    let mut host = [0 as libc::c_char; 1025];
    // SAFETY: sa is a valid socket address of the length given; host is a
    // buffer of the length given, which getnameinfo NUL-terminates.
    let r = unsafe {
        libc::getnameinfo(
            sa.as_ptr().cast(),
            sa.len(),
            host.as_mut_ptr(),
            host.len() as libc::socklen_t,
            std::ptr::null_mut(),
            0,
            libc::NI_NAMEREQD,
        )
    };
    if r != 0 {
        return None;
    }
    // SAFETY: on success host holds a NUL-terminated string.
    let name = unsafe { std::ffi::CStr::from_ptr(host.as_ptr()) };
    let name = name.to_string_lossy();
    // A name from the network is shown escaped, and only if it is one.
    valid_hostname(&name).then(|| name.into_owned())
}

/// Lookups running on their own threads now, and the most there may be.
static LOOKUPS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
const MAX_LOOKUPS: usize = 32;

/// Ask the system resolver (blocking, no deadline of ours). IPv4 first.
fn lookup(host: &str, port: u16) -> Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| {
            Error::new(
                ErrorKind::Dns,
                format!("resolve {host}: {}", dns_reason(&e)),
            )
        })?
        .collect();
    if addrs.is_empty() {
        return Err(Error::new(
            ErrorKind::Dns,
            format!("resolve {host}: no addresses"),
        ));
    }
    let mut v4: Vec<SocketAddr> = addrs.iter().copied().filter(|a| a.is_ipv4()).collect();
    v4.extend(addrs.into_iter().filter(|a| a.is_ipv6()));
    Ok(v4)
}

/// Wait for the resolver thread's answer on `rx` until `timeout` has passed
/// or `interrupt` is set, in slices of at most [`SLICE`] so Ctrl-C is
/// noticed quickly.
///
/// # Errors
/// `dns` ("no answer within …", without the host: the caller adds it) at the
/// deadline or when the sender is gone without an answer; `interrupted` once
/// `interrupt` is set.
fn wait_for_result<T>(
    rx: &mpsc::Receiver<T>,
    timeout: Duration,
    interrupt: Option<&AtomicBool>,
) -> Result<T> {
    // A timeout too large for an Instant has no deadline.
    let deadline = Instant::now().checked_add(timeout);
    loop {
        if interrupt.is_some_and(|f| f.load(Ordering::Relaxed)) {
            return Err(interrupted());
        }
        let slice = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    // An answer that came in during the last slice still counts.
                    return rx.try_recv().map_err(|_| no_answer(timeout));
                }
                left.min(SLICE)
            }
            None => SLICE,
        };
        match rx.recv_timeout(slice) {
            Ok(v) => return Ok(v),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(Error::new(
                    ErrorKind::Dns,
                    "the resolver stopped without an answer",
                ));
            }
        }
    }
}

/// The `dns` error for a resolver that did not answer in time.
fn no_answer(timeout: Duration) -> Error {
    Error::new(
        ErrorKind::Dns,
        format!("no answer within {}", format_duration(timeout)),
    )
    .with_hint("check the DNS servers ('info' lists them), or use an IP address")
}

fn dns_reason(e: &std::io::Error) -> String {
    let s = e.to_string();
    s.strip_prefix("failed to lookup address information: ")
        .unwrap_or(&s)
        .to_lowercase()
}

fn parse_port(p: &str) -> std::result::Result<u16, String> {
    match p.parse::<u32>() {
        Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
        Ok(n) => Err(format!("port {n} is out of range (1-65535)")),
        Err(_) => Err(format!(
            "port '{}' is not a number (1-65535)",
            p.escape_debug()
        )),
    }
}

/// Letters, digits, '-', '_' and '.' in labels of 1–63 characters (RFC 1123,
/// plus '_' which real zones use).
fn valid_hostname(h: &str) -> bool {
    let h = h.strip_suffix('.').unwrap_or(h);
    !h.is_empty()
        && h.len() <= MAX_HOST_LEN
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(s: &str) -> Result<Endpoint> {
        Endpoint::parse(s, 5050)
    }

    #[test]
    fn forms() {
        assert_eq!(ep("127.0.0.1").unwrap().to_string(), "127.0.0.1:5050");
        assert_eq!(ep("localhost:7").unwrap().to_string(), "localhost:7");
        assert_eq!(ep("::1").unwrap().to_string(), "[::1]:5050");
        assert_eq!(ep("[::1]").unwrap().to_string(), "[::1]:5050");
        assert_eq!(ep("[fe80::1]:123").unwrap().port, 123);
        assert_eq!(ep(" pool.ntp.org ").unwrap().host, "pool.ntp.org");
    }

    #[test]
    fn rejects() {
        for bad in [
            "",
            ":5050",
            "host:",
            "host:0",
            "host:65536",
            "host:x",
            "[::1",
            "[::1]x",
            "[nothost]:1",
            "a b",
            "bad/host",
            "1::2::3",
            "\u{1b}[2J",
        ] {
            let e = ep(bad).unwrap_err();
            assert_eq!(e.code(), "bad-value", "{bad:?}");
            assert!(e.message.contains("HOST[:PORT]"), "{bad:?}: {}", e.message);
        }
    }

    #[test]
    fn port_range_message_names_the_range() {
        let e = ep("h:70000").unwrap_err();
        assert!(e.message.contains("70000") && e.message.contains("1-65535"));
    }

    #[test]
    fn ip_literals_resolve_at_once() {
        // A zero timeout and a set Ctrl-C flag would fail any real wait.
        let stop = AtomicBool::new(true);
        for (s, want) in [("127.0.0.1:7", "127.0.0.1:7"), ("[::1]:7", "[::1]:7")] {
            let t = Instant::now();
            let got = ep(s)
                .unwrap()
                .resolve_within(Duration::ZERO, Some(&stop))
                .unwrap();
            assert!(t.elapsed() < Duration::from_millis(50), "{s}");
            assert_eq!(got, vec![want.parse::<SocketAddr>().unwrap()], "{s}");
        }
    }

    /// Tests that start lookups, or fill the lookup count, take turns.
    static LOOKUP_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn lookup_turn() -> std::sync::MutexGuard<'static, ()> {
        LOOKUP_TESTS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    #[test]
    fn lookups_waiting_on_a_dead_resolver_are_capped() {
        let _turn = lookup_turn();
        // Pretend MAX_LOOKUPS lookups hang (added, not stored: other tests'
        // lookups may be counting themselves in and out meanwhile).
        LOOKUPS.fetch_add(MAX_LOOKUPS, Ordering::SeqCst);
        let e = ep("localhost")
            .unwrap()
            .resolve_within(Duration::from_secs(2), None);
        LOOKUPS.fetch_sub(MAX_LOOKUPS, Ordering::SeqCst);
        let e = e.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Dns, "{e}");
        assert!(
            e.message
                .contains("lookups are still waiting on the resolver"),
            "{e}"
        );
        // Finished lookups count themselves out: more than the cap in a row
        // all run.
        for i in 0..=MAX_LOOKUPS {
            let got = ep("localhost")
                .unwrap()
                .resolve_within(Duration::from_secs(2), None);
            assert!(got.is_ok(), "lookup {i}: {got:?}");
        }
    }

    #[test]
    fn localhost_resolves_within_two_seconds() {
        let _turn = lookup_turn();
        let t = Instant::now();
        let got = ep("localhost:7")
            .unwrap()
            .resolve_within(Duration::from_secs(2), None)
            .unwrap();
        assert!(t.elapsed() < Duration::from_secs(2));
        assert!(!got.is_empty());
        assert!(
            got.iter().all(|a| a.ip().is_loopback() && a.port() == 7),
            "{got:?}"
        );
        // IPv4 first.
        let first_v6 = got
            .iter()
            .position(SocketAddr::is_ipv6)
            .unwrap_or(got.len());
        assert!(got[first_v6..].iter().all(SocketAddr::is_ipv6), "{got:?}");
    }

    #[test]
    fn invalid_name_is_a_dns_error() {
        let _turn = lookup_turn();
        let e = ep("no-such-host.invalid")
            .unwrap()
            .resolve_within(Duration::from_secs(5), None)
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Dns, "{e}");
        assert!(
            e.message.starts_with("resolve no-such-host.invalid: "),
            "{e}"
        );
    }

    #[test]
    fn set_interrupt_stops_a_name_before_the_lookup() {
        let stop = AtomicBool::new(true);
        let e = ep("localhost")
            .unwrap()
            .resolve_within(Duration::from_secs(5), Some(&stop))
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Interrupted, "{e}");
    }

    /// A stand-in resolver thread that answers after `delay`.
    fn answer_after(delay: Duration) -> mpsc::Receiver<u32> {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            thread::sleep(delay);
            let _ = tx.send(42);
        });
        rx
    }

    #[test]
    fn wait_returns_an_answer_that_comes_in_time() {
        let rx = answer_after(Duration::from_millis(120));
        let got = wait_for_result(&rx, Duration::from_secs(2), None).unwrap();
        assert_eq!(got, 42);
    }

    #[test]
    fn wait_gives_up_at_the_deadline() {
        let rx = answer_after(Duration::from_secs(2));
        let timeout = Duration::from_millis(300);
        let t = Instant::now();
        let e = wait_for_result(&rx, timeout, None).unwrap_err();
        let took = t.elapsed();
        assert_eq!(e.kind, ErrorKind::Dns, "{e}");
        assert_eq!(e.message, "no answer within 300ms");
        assert!(
            e.hint.as_deref().is_some_and(|h| h.contains("DNS servers")),
            "{e}"
        );
        assert!(took >= timeout, "{took:?}");
        assert!(took < timeout + Duration::from_millis(200), "{took:?}");
    }

    #[test]
    fn wait_stops_at_once_when_interrupted() {
        let rx = answer_after(Duration::from_secs(2));
        let stop = AtomicBool::new(true);
        let t = Instant::now();
        let e = wait_for_result(&rx, Duration::from_secs(10), Some(&stop)).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Interrupted, "{e}");
        assert!(
            t.elapsed() < Duration::from_millis(100),
            "{:?}",
            t.elapsed()
        );
    }

    #[test]
    fn wait_notices_ctrl_c_pressed_while_waiting() {
        let rx = answer_after(Duration::from_secs(2));
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(150));
            flag.store(true, Ordering::Relaxed);
        });
        let t = Instant::now();
        let e = wait_for_result(&rx, Duration::from_secs(10), Some(&stop)).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Interrupted, "{e}");
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(150), "{took:?}");
        assert!(
            took < Duration::from_millis(150) + SLICE + Duration::from_millis(150),
            "{took:?}"
        );
    }

    #[test]
    fn wait_reports_a_resolver_that_vanished() {
        let (tx, rx) = mpsc::channel::<u32>();
        drop(tx);
        let t = Instant::now();
        let e = wait_for_result(&rx, Duration::from_secs(10), None).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Dns, "{e}");
        assert!(t.elapsed() < Duration::from_millis(100));
    }
}
