//! Test fixture: a multi-hop network made only of Linux network namespaces.
//!
//! ```text
//! client ──link 0── r1 ──link 1── r2 ── … ── rN ──link N── target
//! ```
//!
//! Every node is its own namespace; every link is one veth pair whose two
//! ends are created directly inside the two namespaces it joins (the kernel
//! never puts them in the host's namespace, not even for a moment). No
//! interface of the chain is linked to the host namespace, so no packet sent
//! inside it can leave the machine. In each node the interface towards the
//! client is called `west` and the one towards the target `east`.
//!
//! Uniqueness across parallel tests and processes: each chain owns a 16-bit
//! id. The id is taken by creating the client namespace `nsht-<id>-c`, which
//! `ip netns add` does with `O_EXCL`, so two chains (in any process) can never
//! hold the same id; a taken id is skipped. The id picks both the namespace
//! names and the address block:
//!
//! * IPv4: link `i` is `10.<id_hi>.<id_lo>.<4i>/30`; the west node is `.4i+1`,
//!   the east node `.4i+2` (hence at most [`MAX_HOPS`] routers).
//! * IPv6: link `i` is the ULA `fd6e:7368:<id>:<i>::/64`; the west node is
//!   `::1`, the east node `::2`.
//!
//! Routers forward both families and have explicit routes to every link (no
//! default route); the client and the target have default routes into the
//! chain. ICMP rate limiting is off in every node so that every probe is
//! answered, and DAD is off so IPv6 addresses are usable at once.
//!
//! Every external command is bounded in time; a failure reports the command
//! line and its stderr. [`Chain::new`] returns `None` (after a one-time note
//! on stderr) where namespaces cannot be made at all (not root, no `ip`,
//! EPERM in a container), so tests can return early.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Most routers a chain can have (64 `/30` links fit one `/24`).
pub const MAX_HOPS: usize = 63;

/// Time limit for every command the fixture runs (and for [`run`]).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// How long [`Chain::new`] waits for the target to answer pings.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// Interface names inside every node (namespace-local, so never colliding).
pub const WEST: &str = "west";
pub const EAST: &str = "east";

/// The chains' IPv6 addresses: `fd6e:7368:<id>:<link>::/64` (ULA).
const ULA_PREFIX: u128 = 0xfd6e_7368 << 96;

/// nftables table put in a router by [`Chain::drop_icmp_from`].
const NFT_TABLE: &str = "netsh_fixture";

/// A linear chain of namespaces: client, `hops` routers, target.
pub struct Chain {
    id: u16,
    hops: usize,
    client: String,
    target: String,
    routers: Vec<String>,
    /// Namespaces this chain created (client first); deleted on drop.
    created: Vec<String>,
    setup_time: Duration,
}

/// Why building a chain with one id did not work.
enum BuildError {
    /// A namespace name of this id exists already: try another id.
    Taken,
    /// Namespaces cannot be created here at all.
    Unavailable(String),
}

impl Chain {
    /// Builds a chain with `hops` routers between client and target and
    /// waits until the target answers pings from the client in both
    /// families.
    ///
    /// Returns `None`, with a note printed once per process to stderr, when
    /// network namespaces cannot be made here. Panics (after removing what
    /// it made) on any other failure, with the failing command and its
    /// stderr.
    pub fn new(hops: usize) -> Option<Chain> {
        assert!(hops <= MAX_HOPS, "a chain has at most {MAX_HOPS} hops");
        if SKIP_REASON.get().is_some() {
            return None;
        }
        if ip_path().is_none() {
            skip("`ip` (iproute2) not found");
            return None;
        }
        let started = Instant::now();
        let mut id = initial_id();
        for _ in 0..1024 {
            match Chain::build(id, hops, started) {
                Ok(chain) => return Some(chain),
                Err(BuildError::Taken) => id = id.wrapping_add(1),
                Err(BuildError::Unavailable(reason)) => {
                    skip(&reason);
                    return None;
                }
            }
        }
        panic!("netns fixture: found no free chain id (many stale `nsht-*` namespaces?)");
    }

    fn build(id: u16, hops: usize, started: Instant) -> Result<Chain, BuildError> {
        let prefix = format!("nsht-{id:04x}");
        let mut chain = Chain {
            id,
            hops,
            client: format!("{prefix}-c"),
            target: format!("{prefix}-t"),
            routers: (1..=hops).map(|k| format!("{prefix}-r{k}")).collect(),
            created: Vec::new(),
            setup_time: Duration::ZERO,
        };

        // The client namespace is the lock on the id: create it alone first.
        let client = chain.client.clone();
        match add_namespace(&client) {
            Ok(()) => chain.created.push(client),
            Err(e) if is_exists(&e) => return Err(BuildError::Taken),
            // Where namespaces worked before, or on a timeout, this is a
            // real failure, not a missing capability.
            Err(e) if !BUILT.load(Ordering::Relaxed) && !e.contains(" timed out ") => {
                return Err(BuildError::Unavailable(e));
            }
            Err(e) => panic!("netns fixture: {e}"),
        }

        // The rest in parallel. From here on a panic drops `chain`, which
        // deletes whatever was created.
        let rest: Vec<String> = chain
            .routers
            .iter()
            .chain([&chain.target])
            .cloned()
            .collect();
        let pending: Vec<_> = rest
            .iter()
            .map(|ns| spawn_bounded(ip().args(["netns", "add", ns]), None, COMMAND_TIMEOUT))
            .collect();
        let mut errors = Vec::new();
        let mut taken = false;
        for (ns, p) in rest.iter().zip(pending) {
            match p.and_then(|p| p.wait_ok()) {
                Ok(_) => chain.created.push(ns.clone()),
                Err(e) if is_exists(&e) => taken = true,
                Err(e) => errors.push(e),
            }
        }
        if taken && errors.is_empty() {
            return Err(BuildError::Taken); // stale names of a crashed run
        }
        check_all("creating namespaces", errors);

        chain.configure();
        chain.wait_ready();
        chain.setup_time = started.elapsed();
        BUILT.store(true, Ordering::Relaxed);
        Ok(chain)
    }

    /// Namespace of the client end.
    pub fn client(&self) -> &str {
        &self.client
    }

    /// Namespace of the target end.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Router namespaces, client side first.
    pub fn routers(&self) -> &[String] {
        &self.routers
    }

    /// Number of routers.
    pub fn hops(&self) -> usize {
        self.hops
    }

    /// Every namespace: client, routers in order, target.
    pub fn namespaces(&self) -> Vec<&str> {
        let mut all = vec![self.client.as_str()];
        all.extend(self.routers.iter().map(String::as_str));
        all.push(&self.target);
        all
    }

    /// Time `new` took, readiness check included.
    pub fn setup_time(&self) -> Duration {
        self.setup_time
    }

    /// The client's address (on its only link).
    pub fn client_addr_v4(&self) -> Ipv4Addr {
        self.v4(0, 1)
    }

    /// The client's IPv6 address (on its only link).
    pub fn client_addr_v6(&self) -> Ipv6Addr {
        self.v6(0, 1)
    }

    /// Another IPv6 address for the client, in the same /64 as
    /// [`Chain::client_addr_v6`] (`host` the last 16 bits, not 1 or 2).
    pub fn add_client_addr_v6(&self, host: u16) -> Ipv6Addr {
        assert!(host > 2, "::1 and ::2 are the link's own");
        let a = Ipv6Addr::from_bits(self.v6(0, 0).to_bits() | u128::from(host));
        let cidr = format!("{a}/64");
        run(&mut self.exec(
            &self.client,
            "ip",
            &["-6", "addr", "add", &cidr, "dev", EAST, "nodad"],
        ))
        .unwrap_or_else(|e| panic!("netns fixture: {e}"));
        a
    }

    /// The /64 network `a` is in, as the server writes it.
    pub fn slash_64(a: Ipv6Addr) -> Ipv6Addr {
        Ipv6Addr::from_bits(a.to_bits() & !u128::from(u64::MAX))
    }

    /// Run `f` on a thread that lives in namespace `ns`: sockets it opens
    /// are that namespace's (setns moves only the calling thread).
    pub fn in_ns<T: Send + 'static>(&self, ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        use std::os::fd::AsRawFd;
        let ns_file = std::fs::File::open(format!("/run/netns/{ns}"))
            .unwrap_or_else(|e| panic!("netns fixture: open /run/netns/{ns}: {e}"));
        std::thread::spawn(move || {
            // SAFETY: a valid namespace descriptor; setns affects this thread only.
            let r = unsafe { libc::setns(ns_file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }

    /// The target's address (on its only link).
    pub fn target_addr_v4(&self) -> Ipv4Addr {
        self.v4(self.hops, 2)
    }

    /// The target's IPv6 address (on its only link).
    pub fn target_addr_v6(&self) -> Ipv6Addr {
        self.v6(self.hops, 2)
    }

    /// What a traceroute from the client should list: each router's address
    /// on its client-side interface, in order, then the target's address.
    pub fn hop_addrs_v4(&self) -> Vec<Ipv4Addr> {
        (0..=self.hops).map(|link| self.v4(link, 2)).collect()
    }

    /// IPv6 counterpart of [`Chain::hop_addrs_v4`].
    pub fn hop_addrs_v6(&self) -> Vec<Ipv6Addr> {
        (0..=self.hops).map(|link| self.v6(link, 2)).collect()
    }

    /// `ip netns exec NS PROGRAM ARGS…`, not yet run. A bare `program` name
    /// is resolved to a full path here (PATH, then the sbin directories), so
    /// tools in `/usr/sbin` are found even with a narrow PATH. Run it with
    /// [`run`] or [`output`] to keep it bounded in time.
    pub fn exec(&self, ns: &str, program: &str, args: &[&str]) -> Command {
        let mut cmd = ip();
        cmd.args(["netns", "exec", ns]);
        if program.contains('/') {
            cmd.arg(program);
        } else {
            cmd.arg(find_tool(program).unwrap_or_else(|| program.into()));
        }
        cmd.args(args);
        cmd
    }

    /// Makes router `router` (0-based index into [`Chain::routers`]) drop,
    /// with nftables, the ICMP time-exceeded and destination-unreachable
    /// errors it would send (IPv4 and IPv6), so it shows as `*` in a
    /// traceroute. Packets are still forwarded. Idempotent. Panics if `nft`
    /// fails.
    pub fn drop_icmp_from(&self, router: usize) {
        assert!(
            router < self.hops,
            "router index {router} out of range (chain has {} routers)",
            self.hops
        );
        let rules = format!(
            "table inet {NFT_TABLE}\n\
             flush table inet {NFT_TABLE}\n\
             table inet {NFT_TABLE} {{\n\
             \tchain output {{\n\
             \t\ttype filter hook output priority 0; policy accept;\n\
             \t\ticmp type {{ time-exceeded, destination-unreachable }} drop\n\
             \t\ticmpv6 type {{ time-exceeded, destination-unreachable }} drop\n\
             \t}}\n\
             }}\n"
        );
        let mut cmd = self.exec(&self.routers[router], "nft", &["-f", "-"]);
        if let Err(e) =
            spawn_bounded(&mut cmd, Some(&rules), COMMAND_TIMEOUT).and_then(|p| p.wait_ok())
        {
            panic!("netns fixture: drop_icmp_from({router}): {e}");
        }
    }

    /// IPv4 address of the `end` (1: west node, 2: east node) of `link`.
    fn v4(&self, link: usize, end: u8) -> Ipv4Addr {
        let [hi, lo] = self.id.to_be_bytes();
        Ipv4Addr::new(10, hi, lo, (link * 4) as u8 + end)
    }

    /// IPv6 address of the `end` (1: west node, 2: east node) of `link`.
    fn v6(&self, link: usize, end: u8) -> Ipv6Addr {
        let (id, link, end) = (u128::from(self.id), link as u128, u128::from(end));
        Ipv6Addr::from_bits(ULA_PREFIX | (id << 80) | (link << 64) | end)
    }

    /// Sysctls, links, addresses and routes.
    fn configure(&self) {
        let names = self.namespaces();
        let last = names.len() - 1;

        // Sysctls first: `default.accept_dad` must be set before the
        // interfaces exist.
        let pending: Vec<_> = names
            .iter()
            .enumerate()
            .map(|(node, ns)| {
                let mut settings = vec![
                    "net.ipv4.icmp_ratelimit=0",
                    "net.ipv6.icmp.ratelimit=0",
                    // The per-namespace global ICMP limit (1000/s, burst 50)
                    // only applies to the types in these masks: none.
                    "net.ipv4.icmp_ratemask=0",
                    "net.ipv6.icmp.ratemask=",
                    "net.ipv6.conf.all.accept_dad=0",
                    "net.ipv6.conf.default.accept_dad=0",
                ];
                if node != 0 && node != last {
                    settings.extend(["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"]);
                }
                let mut args = vec!["-q", "-w"];
                args.extend(settings);
                spawn_bounded(&mut self.exec(ns, "sysctl", &args), None, COMMAND_TIMEOUT)
            })
            .collect();
        check_all("setting sysctls", wait_all(pending));

        // Links: each veth end created directly in its namespace.
        let links: String = (0..=self.hops)
            .map(|link| {
                format!(
                    "link add {EAST} netns {} type veth peer name {WEST} netns {}\n",
                    names[link],
                    names[link + 1]
                )
            })
            .collect();
        check_all(
            "creating veth pairs",
            wait_all(vec![spawn_bounded(
                ip().args(["-batch", "-"]),
                Some(&links),
                COMMAND_TIMEOUT,
            )]),
        );

        // Addresses and routes, one `ip -batch` per namespace. IPv4 and IPv6
        // routes via a gateway on a link whose peer is not up yet are
        // accepted (marked linkdown until the carrier comes).
        let pending: Vec<_> = names
            .iter()
            .enumerate()
            .map(|(node, ns)| {
                let script = self.node_script(node);
                spawn_bounded(
                    ip().args(["-n", ns, "-batch", "-"]),
                    Some(&script),
                    COMMAND_TIMEOUT,
                )
            })
            .collect();
        check_all("configuring addresses and routes", wait_all(pending));
    }

    /// `ip -batch` input for node `node` (0: client, hops + 1: target).
    fn node_script(&self, node: usize) -> String {
        let mut s = String::from("link set lo up\n");
        let has_west = node > 0;
        let has_east = node <= self.hops;
        if has_west {
            let link = node - 1;
            s += &format!("link set {WEST} up\n");
            s += &format!("addr add {}/30 dev {WEST}\n", self.v4(link, 2));
            s += &format!("addr add {}/64 dev {WEST} nodad\n", self.v6(link, 2));
        }
        if has_east {
            let link = node;
            s += &format!("link set {EAST} up\n");
            s += &format!("addr add {}/30 dev {EAST}\n", self.v4(link, 1));
            s += &format!("addr add {}/64 dev {EAST} nodad\n", self.v6(link, 1));
        }
        match (has_west, has_east) {
            // Client: everything is east.
            (false, _) => {
                s += &format!("route add default via {}\n", self.v4(0, 2));
                s += &format!("route add ::/0 via {}\n", self.v6(0, 2));
            }
            // Target: everything is west.
            (_, false) => {
                s += &format!("route add default via {}\n", self.v4(self.hops, 1));
                s += &format!("route add ::/0 via {}\n", self.v6(self.hops, 1));
            }
            // Router k = node: links k-1 and k are connected; links
            // 0..=k-2 are behind the west neighbour (the west end of link
            // k-1), links k+1..=hops behind the east one (east end of k).
            (true, true) => {
                let k = node;
                for link in 0..=self.hops {
                    let (gw4, gw6) = if link + 1 < k {
                        (self.v4(k - 1, 1), self.v6(k - 1, 1))
                    } else if link > k {
                        (self.v4(k, 2), self.v6(k, 2))
                    } else {
                        continue; // directly connected
                    };
                    s += &format!("route add {}/30 via {gw4}\n", self.v4(link, 0));
                    s += &format!("route add {}/64 via {gw6}\n", self.v6(link, 0));
                }
            }
        }
        s
    }

    /// Polls (with a deadline) until the target answers a ping from the
    /// client in both families.
    fn wait_ready(&self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        let targets = [
            ("-4", self.target_addr_v4().to_string()),
            ("-6", self.target_addr_v6().to_string()),
        ];
        let mut ok = [false, false];
        let mut last_failure = String::new();
        loop {
            let pending: Vec<_> = targets
                .iter()
                .zip(ok)
                .filter(|(_, done)| !done)
                .map(|((family, addr), _)| {
                    let args = [*family, "-n", "-c1", "-W1", addr.as_str()];
                    spawn_bounded(
                        &mut self.exec(&self.client, "ping", &args),
                        None,
                        COMMAND_TIMEOUT,
                    )
                })
                .collect();
            let mut results = wait_all_results(pending).into_iter();
            for done in ok.iter_mut().filter(|d| !**d) {
                match results.next() {
                    Some(Ok(_)) => *done = true,
                    Some(Err(e)) => last_failure = e,
                    None => {}
                }
            }
            if ok.iter().all(|d| *d) {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "netns fixture: target {} / {} not reachable from {} within {READY_TIMEOUT:?}: {last_failure}",
                    targets[0].1, targets[1].1, self.client
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Chain {
    /// Deletes every namespace this chain made (their veth ends go with
    /// them), the client — the id lock — last. Errors are ignored.
    fn drop(&mut self) {
        if self.created.is_empty() {
            return;
        }
        let script: String = self
            .created
            .iter()
            .rev()
            .map(|ns| format!("netns del {ns}\n"))
            .collect();
        if let Ok(p) = spawn_bounded(
            ip().args(["-force", "-batch", "-"]),
            Some(&script),
            COMMAND_TIMEOUT,
        ) {
            let _ = p.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// Bounded commands
// ---------------------------------------------------------------------------

/// A spawned command with a deadline.
pub struct Running {
    child: Child,
    desc: String,
    timeout: Duration,
    deadline: Instant,
    /// `(is_stderr, bytes)` from the two reader threads.
    pipes: mpsc::Receiver<(bool, Vec<u8>)>,
}

/// Spawns `cmd` with piped stdout/stderr (and `stdin` written to its
/// standard input, or a null one); it is killed if still running
/// `timeout` after now.
/// `netsh ARGS…` run inside namespace `ns` (as root, through `ip netns exec`).
pub fn netsh_in_ns(
    chain: &Chain,
    ns: &str,
    dir: &std::path::Path,
    args: &[&str],
) -> crate::common::Output {
    let mut words = vec!["--data-dir", dir.to_str().expect("utf-8 temp dir")];
    words.extend_from_slice(args);
    let mut c = chain.exec(ns, env!("CARGO_BIN_EXE_netsh"), &words);
    crate::common::scrub_env(&mut c);
    c.current_dir(dir);
    crate::common::run(c, None, crate::common::LIMIT)
}

pub fn spawn_bounded(
    cmd: &mut Command,
    stdin: Option<&str>,
    timeout: Duration,
) -> Result<Running, String> {
    let desc = describe(cmd);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("`{desc}`: cannot start: {e}"))?;
    let (tx, rx) = mpsc::channel();
    for (is_stderr, pipe) in [
        (
            false,
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ),
        (
            true,
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ),
    ] {
        let tx = tx.clone();
        let mut pipe = pipe.expect("piped");
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            let _ = tx.send((is_stderr, buf));
        });
    }
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // On a thread, so a child that does not read cannot block us. An
        // early exit of the child shows in its status, so a write error is
        // not reported here.
        let input = input.to_owned();
        std::thread::spawn(move || {
            let _ = pipe.write_all(input.as_bytes());
        });
    }
    Ok(Running {
        child,
        desc,
        timeout,
        deadline: Instant::now() + timeout,
        pipes: rx,
    })
}

impl Running {
    /// Waits for the exit (killing the command at the deadline) and
    /// collects its output. `Err` only if it timed out or could not be
    /// waited for; a non-zero exit is in the `Output`.
    pub fn wait(mut self) -> Result<Output, String> {
        let mut nap = Duration::from_micros(200);
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) => {}
                Err(e) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return Err(format!("`{}`: cannot wait: {e}", self.desc));
                }
            }
            let now = Instant::now();
            if now >= self.deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(nap.min(self.deadline - now));
            nap = (nap * 2).min(Duration::from_millis(5));
        };
        // The pipes close when the process exits, unless a grandchild keeps
        // them open: then wait no longer than the deadline (plus a little).
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let until = self.deadline.max(Instant::now()) + Duration::from_millis(100);
        for _ in 0..2 {
            match self
                .pipes
                .recv_timeout(until.saturating_duration_since(Instant::now()))
            {
                Ok((false, b)) => stdout = b,
                Ok((true, b)) => stderr = b,
                Err(_) => break,
            }
        }
        match status {
            Some(status) => Ok(Output {
                status,
                stdout,
                stderr,
            }),
            None => Err(format!(
                "`{}` timed out after {:?}; stderr: {}",
                self.desc,
                self.timeout,
                String::from_utf8_lossy(&stderr).trim()
            )),
        }
    }

    /// Like [`Running::wait`], but a non-zero exit is an `Err` too, with
    /// the command line, the status and stderr. `Ok` holds stdout.
    pub fn wait_ok(self) -> Result<String, String> {
        let desc = self.desc.clone();
        let out = self.wait()?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "`{desc}` failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            ))
        }
    }
}

impl Drop for Running {
    /// A command given up on (e.g. by a panic) is killed, not leaked.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `cmd` (no stdin) to completion within `timeout`; a non-zero exit
/// is returned as is, a timeout or spawn failure is an `Err`.
pub fn output(cmd: &mut Command, timeout: Duration) -> Result<Output, String> {
    spawn_bounded(cmd, None, timeout)?.wait()
}

/// Runs `cmd` (no stdin) within [`COMMAND_TIMEOUT`]; `Ok(stdout)` if it
/// exited 0, else an `Err` naming the command with its status and stderr.
pub fn run(cmd: &mut Command) -> Result<String, String> {
    spawn_bounded(cmd, None, COMMAND_TIMEOUT)?.wait_ok()
}

/// The command line, for messages.
pub fn describe(cmd: &Command) -> String {
    fn quote(s: &OsStr) -> String {
        let s = s.to_string_lossy();
        if !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./:=,+@%".contains(c))
        {
            s.into_owned()
        } else {
            format!("'{}'", s.replace('\'', r"'\''"))
        }
    }
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(quote)
        .collect::<Vec<_>>()
        .join(" ")
}

fn wait_all_results(pending: Vec<Result<Running, String>>) -> Vec<Result<String, String>> {
    pending
        .into_iter()
        .map(|p| p.and_then(Running::wait_ok))
        .collect()
}

/// Waits for every command; the errors.
fn wait_all(pending: Vec<Result<Running, String>>) -> Vec<String> {
    wait_all_results(pending)
        .into_iter()
        .filter_map(Result::err)
        .collect()
}

fn check_all(what: &str, errors: Vec<String>) {
    if !errors.is_empty() {
        panic!("netns fixture: {what}:\n  {}", errors.join("\n  "));
    }
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Why namespaces cannot be made in this process (set once).
static SKIP_REASON: OnceLock<String> = OnceLock::new();

/// Whether a chain was ever built in this process.
static BUILT: AtomicBool = AtomicBool::new(false);

fn skip(reason: &str) {
    SKIP_REASON.get_or_init(|| {
        // Straight to the process's stderr: `eprintln!` would be captured
        // (and dropped) by the test harness.
        let _ = writeln!(
            std::io::stderr(),
            "skipping: cannot create network namespaces here: {reason}"
        );
        reason.to_owned()
    });
}

/// Full path of `name`: from PATH, then the usual sbin/bin directories.
fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn ip_path() -> Option<&'static PathBuf> {
    static IP: OnceLock<Option<PathBuf>> = OnceLock::new();
    IP.get_or_init(|| find_tool("ip")).as_ref()
}

/// A `Command` for iproute2's `ip`.
fn ip() -> Command {
    Command::new(ip_path().map_or_else(|| PathBuf::from("ip"), Clone::clone))
}

fn add_namespace(ns: &str) -> Result<(), String> {
    run(ip().args(["netns", "add", ns])).map(drop)
}

fn is_exists(error: &str) -> bool {
    error.contains("File exists")
}

/// A starting id that differs between processes and calls (taken ids are
/// skipped anyway).
fn initial_id() -> u16 {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u32(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish() as u16
}

// ---------------------------------------------------------------------------
// Tests of the fixture itself
// ---------------------------------------------------------------------------

/// Hop column of `traceroute -n -q1` output: the address, or `*`.
fn traceroute_hops(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            words.next()?.parse::<u32>().ok()?;
            Some(words.next().unwrap_or("*").to_owned())
        })
        .collect()
}

fn namespace_list() -> Vec<String> {
    let out = run(ip().args(["netns", "list"])).expect("ip netns list");
    out.lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

fn ping(chain: &Chain, family: &str, addr: &str) -> Result<String, String> {
    run(&mut chain.exec(chain.client(), "ping", &[family, "-n", "-c1", "-W1", addr]))
}

fn traceroute(chain: &Chain, family: &str, addr: &str) -> Vec<String> {
    let out = run(&mut chain.exec(
        chain.client(),
        "traceroute",
        &[family, "-n", "-q1", "-w1", addr],
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    traceroute_hops(&out)
}

fn strings<T: ToString>(addrs: &[T]) -> Vec<String> {
    addrs.iter().map(T::to_string).collect()
}

#[test]
fn three_hops_ping_both_families() {
    let Some(chain) = Chain::new(3) else { return };
    eprintln!("3-hop chain set up in {:?}", chain.setup_time());
    assert_eq!(chain.routers().len(), 3);
    ping(&chain, "-4", &chain.target_addr_v4().to_string()).unwrap();
    ping(&chain, "-6", &chain.target_addr_v6().to_string()).unwrap();
    // And back: the target reaches the client.
    let back = |family, addr: String| {
        run(&mut chain.exec(chain.target(), "ping", &[family, "-n", "-c1", "-W1", &addr]))
    };
    back("-4", chain.client_addr_v4().to_string()).unwrap();
    back("-6", chain.client_addr_v6().to_string()).unwrap();
}

#[test]
fn three_hops_traceroute_v4_lists_hops_in_order() {
    let Some(chain) = Chain::new(3) else { return };
    let hops = traceroute(&chain, "-4", &chain.target_addr_v4().to_string());
    assert_eq!(hops, strings(&chain.hop_addrs_v4()));
}

#[test]
fn three_hops_traceroute_v6_lists_hops_in_order() {
    let Some(chain) = Chain::new(3) else { return };
    let hops = traceroute(&chain, "-6", &chain.target_addr_v6().to_string());
    assert_eq!(hops, strings(&chain.hop_addrs_v6()));
}

#[test]
fn dropped_icmp_shows_hop_as_star() {
    let Some(chain) = Chain::new(3) else { return };
    chain.drop_icmp_from(1);
    chain.drop_icmp_from(1); // idempotent
    for (family, target, mut expected) in [
        (
            "-4",
            chain.target_addr_v4().to_string(),
            strings(&chain.hop_addrs_v4()),
        ),
        (
            "-6",
            chain.target_addr_v6().to_string(),
            strings(&chain.hop_addrs_v6()),
        ),
    ] {
        expected[1] = "*".into();
        assert_eq!(
            traceroute(&chain, family, &target),
            expected,
            "traceroute {family}"
        );
    }
    // Forwarding through the silent router still works.
    ping(&chain, "-4", &chain.target_addr_v4().to_string()).unwrap();
    ping(&chain, "-6", &chain.target_addr_v6().to_string()).unwrap();
}

#[test]
fn drop_deletes_the_namespaces() {
    let Some(chain) = Chain::new(2) else { return };
    let names: Vec<String> = chain.namespaces().into_iter().map(str::to_owned).collect();
    assert_eq!(names.len(), 4);
    let listed = namespace_list();
    assert!(
        names.iter().all(|n| listed.contains(n)),
        "{names:?} not all in {listed:?}"
    );
    drop(chain);
    let listed = namespace_list();
    assert!(
        names.iter().all(|n| !listed.contains(n)),
        "{names:?} still in {listed:?}"
    );
}

#[test]
fn no_link_to_the_host_namespace() {
    let Some(chain) = Chain::new(2) else { return };
    let all = chain.namespaces();
    for (node, ns) in all.iter().enumerate() {
        let out = run(ip().args(["-n", ns, "-o", "link", "show"])).unwrap();
        let mut names = Vec::new();
        for line in out.lines() {
            // "2: east@if3: <…> … link-netns nsht-1234-r1"
            let name = line
                .split(": ")
                .nth(1)
                .unwrap()
                .split('@')
                .next()
                .unwrap()
                .to_owned();
            if name != "lo" {
                let words: Vec<&str> = line.split_whitespace().collect();
                let peer = words
                    .iter()
                    .position(|w| *w == "link-netns")
                    .map(|i| words[i + 1]);
                let expected = if name == WEST {
                    all.get(node.wrapping_sub(1))
                } else {
                    all.get(node + 1)
                };
                assert_eq!(peer, expected.copied(), "peer of {name} in {ns}: {line}");
            }
            names.push(name);
        }
        let mut expected = vec!["lo"];
        if node > 0 {
            expected.push(WEST);
        }
        if node < all.len() - 1 {
            expected.push(EAST);
        }
        names.sort();
        expected.sort();
        assert_eq!(names, expected, "links of {ns}");
    }
}

#[test]
fn parallel_chains_do_not_collide() {
    let chains: Vec<Option<Chain>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4).map(|_| s.spawn(|| Chain::new(2))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let chains: Vec<Chain> = chains.into_iter().flatten().collect();
    if chains.is_empty() {
        return;
    }
    let mut names: Vec<String> = chains
        .iter()
        .flat_map(|c| c.namespaces())
        .map(str::to_owned)
        .collect();
    let mut v4: Vec<Ipv4Addr> = chains.iter().flat_map(|c| c.hop_addrs_v4()).collect();
    let mut v6: Vec<Ipv6Addr> = chains.iter().flat_map(|c| c.hop_addrs_v6()).collect();
    for v in [names.len(), v4.len(), v6.len()] {
        assert!(v >= chains.len() * 3);
    }
    let n = (names.len(), v4.len(), v6.len());
    names.sort();
    names.dedup();
    v4.sort();
    v4.dedup();
    v6.sort();
    v6.dedup();
    assert_eq!(
        (names.len(), v4.len(), v6.len()),
        n,
        "duplicates across chains"
    );
    for c in &chains {
        ping(c, "-4", &c.target_addr_v4().to_string()).unwrap();
        ping(c, "-6", &c.target_addr_v6().to_string()).unwrap();
    }
}

#[test]
fn icmp_errors_are_not_rate_limited() {
    let Some(chain) = Chain::new(1) else { return };
    // 100 probes in well under a second that expire at the router: Linux's
    // default limits would answer only a few of them.
    for (family, target) in [
        ("-4", chain.target_addr_v4().to_string()),
        ("-6", chain.target_addr_v6().to_string()),
    ] {
        let args = [
            family, "-n", "-q", "-t1", "-i0.002", "-c100", "-W1", &target,
        ];
        let out = output(
            &mut chain.exec(chain.client(), "ping", &args),
            COMMAND_TIMEOUT,
        )
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("+100 errors"), "ping {family}: {stdout}");
    }
}

#[test]
fn ten_hops_set_up_quickly_and_trace_in_order() {
    let Some(chain) = Chain::new(10) else { return };
    eprintln!("10-hop chain set up in {:?}", chain.setup_time());
    // Generous bound: parallel test processes share the machine.
    assert!(
        chain.setup_time() < Duration::from_secs(10),
        "setup took {:?}",
        chain.setup_time()
    );
    let hops = traceroute(&chain, "-4", &chain.target_addr_v4().to_string());
    assert_eq!(hops, strings(&chain.hop_addrs_v4()));
    let hops = traceroute(&chain, "-6", &chain.target_addr_v6().to_string());
    assert_eq!(hops, strings(&chain.hop_addrs_v6()));
}

#[test]
fn traceroute_parser() {
    let out = "traceroute to 10.0.0.14 (10.0.0.14), 30 hops max, 60 byte packets\n \
               1  10.0.0.2  0.051 ms\n 2  *\n 3  10.0.0.14  0.101 ms\n";
    assert_eq!(traceroute_hops(out), ["10.0.0.2", "*", "10.0.0.14"]);
}
