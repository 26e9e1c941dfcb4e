//! What other threads hold of a running server: [`Handle`] (stop it, read
//! its counters, let the operator into the chat room) and [`Stats`], the
//! live counters behind `serve status`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};

use mio::Waker;
use serde::Serialize;

/// Lines the operator typed, and a pending change of attachment.
pub(super) type OperatorInput = (VecDeque<String>, Option<Option<OperatorView>>);

/// Where the operator's view of the room goes.
#[derive(Debug)]
pub enum OperatorView {
    /// Batches of room lines, one per turn of the loop (the shell's `chat`).
    Lines(Sender<Vec<String>>),
    /// The console prints the room already (foreground `serve`): the
    /// operator is in the room and nothing else is sent, so no other thread
    /// is woken for each turn.
    Console,
}

/// Counters shared with `serve status` (atomics: read from other threads).
#[derive(Debug, Default)]
pub struct Stats {
    /// Clients connected now.
    pub clients: AtomicU64,
    /// Clients accepted since start.
    pub clients_total: AtomicU64,
    /// Clients refused (server full).
    pub refused: AtomicU64,
    /// Bytes read from clients (TCP and UDP).
    pub bytes_in: AtomicU64,
    /// Bytes written to clients (TCP and UDP).
    pub bytes_out: AtomicU64,
    /// Request lines answered.
    pub requests: AtomicU64,
    /// UDP datagrams echoed.
    pub datagrams: AtomicU64,
    /// UDP datagrams not echoed because echoing them could start a loop
    /// (see `server::limit`: a reflecting source port, or our own echo back).
    pub datagrams_ignored: AtomicU64,
    /// UDP datagrams not echoed because their source was over its budget
    /// (`--udp-rate-limit`).
    pub datagrams_limited: AtomicU64,
    /// TCP connections closed at accept: the source is not allowed (`--allow`/`--deny`).
    pub denied_tcp: AtomicU64,
    /// UDP echo datagrams dropped: the source is not allowed.
    pub denied_udp: AtomicU64,
    /// SNTP requests dropped: the source is not allowed.
    pub denied_ntp: AtomicU64,
    /// Datagrams that reached the SNTP port.
    pub ntp_requests: AtomicU64,
    /// SNTP replies sent (kiss-o'-death included).
    pub ntp_replies: AtomicU64,
    /// Datagrams on the SNTP port that were not answered.
    pub ntp_ignored: AtomicU64,
    /// RATE kiss-o'-death replies sent.
    pub ntp_kod: AtomicU64,
    /// `ECHO` requests answered.
    pub echo_requests: AtomicU64,
    /// Lines members sent to the chat room.
    pub chat_lines: AtomicU64,
    /// Members in the chat room now.
    pub chat_members: AtomicU64,
    /// What the server refused or cut short, by [`Refusal`].
    pub refusals: [AtomicU64; Refusal::ALL.len()],
}

/// What the server refuses a client for, or closes it for: the `code`
/// label of `netsh_server_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `ERR server full`.
    ServerFull,
    /// `ERR too many connections from …`.
    TooManyPerAddress,
    /// A request line over the limit (the connection is closed).
    LineTooLong,
    /// A chat line over the limit (the line is refused).
    ChatLineTooLong,
    /// A request word the protocol does not know.
    UnknownCommand,
    /// `CHAT` with a nick that is not valid.
    BadNick,
    /// Closed after the idle timeout.
    IdleTimeout,
    /// A chat member closed for not reading its lines.
    NotReading,
    /// A line not finished within the line timeout (slowloris).
    SlowLine,
    /// A chat member silent longer than the room's idle limit.
    ChatIdle,
    /// A join past the address's share of the room.
    RoomShare,
    /// A chat line over the address's rate (refused, with a notice).
    ChatRate,
    /// A TLS handshake that failed or did not end in time.
    TlsHandshake,
    /// A join without the chat key's proof (wrong, replayed, missing).
    ChatAuth,
}

impl Refusal {
    /// Every refusal, in label order.
    pub const ALL: [Refusal; 14] = [
        Refusal::ServerFull,
        Refusal::TooManyPerAddress,
        Refusal::LineTooLong,
        Refusal::ChatLineTooLong,
        Refusal::UnknownCommand,
        Refusal::BadNick,
        Refusal::IdleTimeout,
        Refusal::NotReading,
        Refusal::SlowLine,
        Refusal::ChatIdle,
        Refusal::RoomShare,
        Refusal::ChatRate,
        Refusal::TlsHandshake,
        Refusal::ChatAuth,
    ];

    /// The stable label.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::ServerFull => "server-full",
            Refusal::TooManyPerAddress => "too-many-per-address",
            Refusal::LineTooLong => "line-too-long",
            Refusal::ChatLineTooLong => "chat-line-too-long",
            Refusal::UnknownCommand => "unknown-command",
            Refusal::BadNick => "bad-nick",
            Refusal::IdleTimeout => "idle-timeout",
            Refusal::NotReading => "not-reading",
            Refusal::SlowLine => "slow-line",
            Refusal::ChatIdle => "chat-idle",
            Refusal::RoomShare => "room-share",
            Refusal::ChatRate => "chat-rate",
            Refusal::TlsHandshake => "tls-handshake",
            Refusal::ChatAuth => "chat-auth",
        }
    }
}

impl Stats {
    /// Count one refusal.
    pub fn refuse(&self, why: Refusal) {
        if let Some(i) = Refusal::ALL.iter().position(|&r| r == why) {
            self.refusals[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Count bytes read from a client.
    pub fn add_in(&self, n: usize) {
        self.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
    }
    /// Count bytes written to a client.
    pub fn add_out(&self, n: usize) {
        self.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
    }
    /// Count one request line answered.
    pub fn add_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }
    /// A plain copy for reports.
    pub fn snapshot(&self) -> StatsSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            clients: g(&self.clients),
            clients_total: g(&self.clients_total),
            refused: g(&self.refused),
            bytes_in: g(&self.bytes_in),
            bytes_out: g(&self.bytes_out),
            requests: g(&self.requests),
            datagrams: g(&self.datagrams),
            datagrams_ignored: g(&self.datagrams_ignored),
            datagrams_limited: g(&self.datagrams_limited),
            denied_tcp: g(&self.denied_tcp),
            denied_udp: g(&self.denied_udp),
            denied_ntp: g(&self.denied_ntp),
            ntp_requests: g(&self.ntp_requests),
            ntp_replies: g(&self.ntp_replies),
            ntp_ignored: g(&self.ntp_ignored),
            ntp_kod: g(&self.ntp_kod),
            echo_requests: g(&self.echo_requests),
            chat_lines: g(&self.chat_lines),
            chat_members: g(&self.chat_members),
            refusals: Refusal::ALL
                .iter()
                .zip(&self.refusals)
                .map(|(r, a)| (r.code(), g(a)))
                .collect(),
        }
    }
}

/// [`Stats`] at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct StatsSnapshot {
    /// Clients connected now.
    pub clients: u64,
    /// Clients accepted since start.
    pub clients_total: u64,
    /// Clients refused because the server was full.
    pub refused: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Request lines answered.
    pub requests: u64,
    /// UDP datagrams echoed.
    pub datagrams: u64,
    /// UDP datagrams not echoed: their source could loop.
    pub datagrams_ignored: u64,
    /// UDP datagrams not echoed: their source was over its rate limit.
    pub datagrams_limited: u64,
    /// TCP connections closed at accept: source not allowed.
    pub denied_tcp: u64,
    /// UDP echo datagrams dropped: source not allowed.
    pub denied_udp: u64,
    /// SNTP requests dropped: source not allowed.
    pub denied_ntp: u64,
    /// Datagrams that reached the SNTP port.
    pub ntp_requests: u64,
    /// SNTP replies sent.
    pub ntp_replies: u64,
    /// Datagrams on the SNTP port not answered (not a request, or rate-limited).
    pub ntp_ignored: u64,
    /// RATE kiss-o'-death replies sent.
    pub ntp_kod: u64,
    /// `ECHO` requests answered.
    pub echo_requests: u64,
    /// Lines members sent to the chat room.
    pub chat_lines: u64,
    /// Members in the chat room now.
    pub chat_members: u64,
    /// What was refused or cut short, by code (`server-full`, …).
    pub refusals: std::collections::BTreeMap<&'static str, u64>,
}

/// What the operator (console or shell) hands to the loop.
#[derive(Default)]
struct OperatorBox {
    /// Lines the operator typed.
    inbox: VecDeque<String>,
    /// A pending change of attachment: `Some(Some(view))` join, `Some(None)` leave.
    attach: Option<Option<OperatorView>>,
}

/// Lines the operator may queue before the loop takes them.
const OPERATOR_INBOX_MAX: usize = 1024;

/// Stops a running server from another thread, reads its counters, and
/// lets the operator take part in the chat room.
#[derive(Clone)]
pub struct Handle {
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    operator: Arc<Mutex<OperatorBox>>,
    /// Live counters.
    pub stats: Arc<Stats>,
}

impl Handle {
    /// A handle that wakes the loop through `waker`.
    pub(super) fn new(waker: Waker) -> Handle {
        Handle {
            waker: Arc::new(waker),
            stop: Arc::new(AtomicBool::new(false)),
            operator: Arc::new(Mutex::new(OperatorBox::default())),
            stats: Arc::new(Stats::default()),
        }
    }

    /// True once a stop was asked for.
    pub(super) fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// What the operator queued: lines typed, and a change of attachment
    /// (`Some(Some(view))` join, `Some(None)` leave).
    pub(super) fn take_operator(&self) -> OperatorInput {
        match self.operator.lock() {
            Ok(mut b) => (std::mem::take(&mut b.inbox), b.attach.take()),
            Err(_) => (VecDeque::new(), None),
        }
    }

    /// Ask the server to shut down (it says goodbye to clients and returns).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
    }

    /// Join the chat room as the operator; room lines arrive on the
    /// receiver, in batches (what one turn of the loop produced).
    pub fn attach_operator(&self) -> Receiver<Vec<String>> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.attach(OperatorView::Lines(tx));
        rx
    }

    /// Join the chat room as the operator whose view is the console: the
    /// room's lines are not sent anywhere else.
    pub fn attach_operator_console(&self) {
        self.attach(OperatorView::Console);
    }

    fn attach(&self, view: OperatorView) {
        if let Ok(mut b) = self.operator.lock() {
            b.attach = Some(Some(view));
        }
        let _ = self.waker.wake();
    }

    /// Leave the chat room as the operator.
    pub fn detach_operator(&self) {
        if let Ok(mut b) = self.operator.lock() {
            b.attach = Some(None);
        }
        let _ = self.waker.wake();
    }

    /// Say a line in the room as the operator (`/me`, `/who` … work too).
    /// Returns false if the server is not taking lines (gone or flooded).
    pub fn operator_say(&self, line: &str) -> bool {
        let ok = match self.operator.lock() {
            Ok(mut b) if b.inbox.len() < OPERATOR_INBOX_MAX => {
                b.inbox.push_back(line.to_string());
                true
            }
            _ => false,
        };
        ok && self.waker.wake().is_ok()
    }
}
