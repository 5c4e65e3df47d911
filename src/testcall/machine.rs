//! One test call as a pure state machine: events and `now` in, [`Action`]s out, the next wake-up on
//! request. No sockets, no clocks; `shell.rs` feeds it and carries out what it returns.
//!
//! Phases: `Inviting` (INVITE sent; over UDP retransmitted per timer A until a provisional) ->
//! `Media` (answered: ACK sent, RTP going out 20 ms apart, echoes counted) -> `Bye` (BYE sent, waiting
//! at most [`BYE_WAIT`] for its final) -> done. A call that failed goes to `Lingering` instead, for
//! [`LINGER`]: a retransmitted or late final is ACKed there, a late provisional gets the CANCEL a
//! timeout could not send yet (RFC 3261 §9.1: none before a provisional), and a late 200 is ACKed and
//! BYEd so that no test call is left up at an answering point. The verdict is given once, as soon as
//! it is known; lingering and BYE never change it.

use super::message::{self, Ids, InviteParts};
use super::rtp;
use super::{Details, PathFailure, Verdict};
use crate::config::{Proto, TestCallMedia};
use crate::sip::{Limits, Message, Method, build};
use crate::transaction::{Retransmit, T2};
use bytes::Bytes;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// After the last RTP packet, how long we wait for echoes still on their way.
pub const ECHO_WAIT: Duration = Duration::from_millis(500);
/// How long we wait for the final response to our BYE.
pub const BYE_WAIT: Duration = Duration::from_secs(2);
/// How long a failed call stays to ACK, CANCEL or BYE what arrives late.
pub const LINGER: Duration = Duration::from_secs(2);

/// What one test call needs.
#[derive(Debug, Clone)]
pub struct Setup {
    pub request_uri: String,
    pub transport: Proto,
    /// Our SIP socket (Via, Contact, From).
    pub local: SocketAddr,
    /// Our RTP socket (the SDP offer).
    pub rtp_local: SocketAddr,
    /// INVITE to final response.
    pub timeout: Duration,
    pub media: TestCallMedia,
    pub rtp_packets: u32,
    pub ids: Ids,
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send bytes to the target over the call's SIP socket or connection.
    Sip(Bytes),
    /// Send an RTP packet from our RTP socket.
    Rtp(Bytes, SocketAddr),
    /// The verdict (once per call).
    Verdict(Verdict, Details),
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Inviting,
    Media {
        dest: SocketAddr,
        next_at: Instant,
        /// Set once every packet is out: echoes are waited for until then.
        end_at: Option<Instant>,
    },
    Bye {
        deadline: Instant,
    },
    Lingering {
        until: Instant,
    },
    Done,
}

pub struct TestCall {
    setup: Setup,
    invite: Message,
    started: Instant,
    timeout_at: Instant,
    phase: Phase,
    /// The request being retransmitted over UDP (INVITE until a provisional, BYE until a final).
    retransmit: Option<(Retransmit, Bytes)>,
    /// The ACK of our 2xx, resent on every retransmitted 2xx.
    ack: Option<Bytes>,
    bye_branch: Option<String>,
    /// The BYE, built when the 2xx came, sent once the media check is over.
    pending_bye: Option<Bytes>,
    cancelled: bool,
    /// The target sent BYE: no BYE of ours is needed.
    remote_bye: bool,
    verdict: Option<Verdict>,
    details: Details,
}

impl TestCall {
    /// Builds the INVITE and sends it. Err: our own INVITE does not parse (a bad `test_uri`).
    pub fn start(setup: Setup, now: Instant, out: &mut Vec<Action>) -> Result<TestCall, String> {
        let text = message::invite(
            &InviteParts {
                request_uri: &setup.request_uri,
                transport: setup.transport,
                local: setup.local,
                rtp: setup.rtp_local,
            },
            &setup.ids,
        );
        let bytes = Bytes::from(text);
        let invite = Message::parse(bytes.clone(), &Limits::default())
            .map_err(|e| format!("our test INVITE does not parse: {e}"))?;
        out.push(Action::Sip(bytes.clone()));
        let retransmit =
            (setup.transport == Proto::Udp).then(|| (Retransmit::new(now, Duration::MAX), bytes));
        Ok(TestCall {
            timeout_at: now + setup.timeout,
            setup,
            invite,
            started: now,
            phase: Phase::Inviting,
            retransmit,
            ack: None,
            bye_branch: None,
            pending_bye: None,
            cancelled: false,
            remote_bye: false,
            verdict: None,
            details: Details::default(),
        })
    }

    /// Nothing left to do: the shell may drop the call and its sockets.
    pub fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    pub fn verdict(&self) -> Option<&Verdict> {
        self.verdict.as_ref()
    }

    pub fn details(&self) -> &Details {
        &self.details
    }

    /// The earliest time [`TestCall::tick`] has work to do.
    pub fn next_wake(&self) -> Option<Instant> {
        let phase = match &self.phase {
            Phase::Inviting => Some(self.timeout_at),
            Phase::Media {
                next_at, end_at, ..
            } => Some(end_at.unwrap_or(*next_at)),
            Phase::Bye { deadline } => Some(*deadline),
            Phase::Lingering { until } => Some(*until),
            Phase::Done => None,
        };
        let rtx = self.retransmit.as_ref().map(|(r, _)| r.due_at());
        match (phase, rtx) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A SIP message arrived on the call's socket or connection.
    pub fn on_sip(&mut self, msg: Message, now: Instant, out: &mut Vec<Action>) {
        if msg.call_id() != self.setup.ids.call_id.as_bytes() {
            return;
        }
        if msg.is_request() {
            return self.on_request(&msg, out);
        }
        let Some(status) = msg.status() else { return };
        match msg.cseq().method {
            Method::Invite => self.on_invite_response(msg, status, now, out),
            Method::Bye => {
                let ours = msg.top_via().ok().and_then(|v| v.branch)
                    == self.bye_branch.as_deref().map(str::as_bytes);
                if ours && status >= 200 {
                    self.details.bye_status = Some(status);
                    self.retransmit = None;
                    if matches!(self.phase, Phase::Bye { .. }) {
                        self.phase = Phase::Done;
                    }
                }
            }
            _ => {}
        }
    }

    fn on_request(&mut self, req: &Message, out: &mut Vec<Action>) {
        match req.method() {
            Some(Method::Ack) | None => {}
            Some(Method::Bye) => {
                out.push(Action::Sip(build::response(req, 200, "", None, &[])));
                self.remote_bye = true;
                if matches!(self.phase, Phase::Bye { .. }) {
                    self.phase = Phase::Done;
                }
            }
            Some(_) => out.push(Action::Sip(build::response(req, 501, "", None, &[]))),
        }
    }

    fn on_invite_response(
        &mut self,
        resp: Message,
        status: u16,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let ours =
            resp.top_via().ok().and_then(|v| v.branch) == Some(self.setup.ids.branch.as_bytes());
        if !ours {
            return;
        }
        if status < 200 {
            self.details.provisional = self.details.provisional.max(Some(status));
            if matches!(self.phase, Phase::Inviting) {
                self.retransmit = None; // timer A stops on any provisional
            }
            if matches!(self.phase, Phase::Lingering { .. }) && !self.cancelled {
                self.cancelled = true;
                if let Some(leg) = build::Leg::of(&self.invite) {
                    out.push(Action::Sip(build::cancel(&self.invite, &leg)));
                }
            }
            return;
        }
        if status >= 300 {
            if let Some(leg) = build::Leg::of(&self.invite) {
                out.push(Action::Sip(build::ack_for_non2xx(
                    &self.invite,
                    &leg,
                    &resp,
                )));
            }
            if matches!(self.phase, Phase::Inviting) {
                self.final_seen(status, now);
                self.give(Verdict::of_final(status), now, out);
                match self.setup.transport {
                    // Only UDP retransmits finals.
                    Proto::Tcp | Proto::Tls => self.phase = Phase::Done,
                    Proto::Udp => self.linger(now),
                }
            }
            return;
        }
        // 2xx: a retransmission is ACKed again; only the first one moves the call on.
        if let Some(ack) = &self.ack {
            out.push(Action::Sip(ack.clone()));
            return;
        }
        let ack = Bytes::from(message::in_dialog(
            "ACK",
            1,
            &self.invite,
            &resp,
            &message::new_branch(),
        ));
        out.push(Action::Sip(ack.clone()));
        self.ack = Some(ack);
        self.retransmit = None;
        let bye = Bytes::from(message::in_dialog("BYE", 2, &self.invite, &resp, &{
            let b = message::new_branch();
            self.bye_branch = Some(b.clone());
            b
        }));
        match self.phase {
            Phase::Inviting => {
                self.final_seen(status, now);
                let dest = match self.setup.media {
                    TestCallMedia::Require if self.setup.rtp_packets > 0 => {
                        message::answer_media(resp.body())
                    }
                    _ => None,
                };
                match dest {
                    Some(dest) => {
                        self.details.media_checked = true;
                        self.phase = Phase::Media {
                            dest,
                            next_at: now,
                            end_at: None,
                        };
                        self.pending_bye = Some(bye);
                        self.tick(now, out);
                    }
                    None => {
                        self.give(Verdict::Good, now, out);
                        self.send_bye(bye, now, out);
                    }
                }
            }
            // A 200 after we gave up: hang it up at once.
            _ => self.send_bye(bye, now, out),
        }
    }

    /// A transport error toward the target (ICMP unreachable, TCP refused, reset or closed).
    pub fn on_transport_error(&mut self, why: &str, now: Instant, out: &mut Vec<Action>) {
        match self.phase {
            Phase::Inviting => {
                let v = Verdict::CallPathFailed(PathFailure::Transport(why.to_string()));
                self.give(v, now, out);
                self.retransmit = None;
                self.phase = Phase::Done;
            }
            // The media verdict does not depend on the signalling socket.
            Phase::Media { .. } => {}
            Phase::Bye { .. } | Phase::Lingering { .. } | Phase::Done => {
                self.retransmit = None;
                self.phase = Phase::Done;
            }
        }
    }

    /// A datagram arrived on our RTP socket.
    pub fn on_rtp(&mut self, from: SocketAddr, packet: &[u8], now: Instant, out: &mut Vec<Action>) {
        let Phase::Media { dest, end_at, .. } = self.phase else {
            return;
        };
        if !rtp::is_echo(packet, from, self.setup.ids.ssrc, dest) {
            return;
        }
        self.details.rtp_echoed = (self.details.rtp_echoed + 1).min(self.details.rtp_sent);
        if end_at.is_some() && self.details.rtp_echoed >= self.details.rtp_sent {
            self.end_media(now, out);
        }
    }

    /// Timers: retransmissions, the answer timeout, RTP pacing, the echo wait, the BYE and linger bounds.
    pub fn tick(&mut self, now: Instant, out: &mut Vec<Action>) {
        if let Some((r, bytes)) = &mut self.retransmit
            && r.fire(now)
        {
            out.push(Action::Sip(bytes.clone()));
        }
        match self.phase {
            Phase::Inviting if now >= self.timeout_at => {
                self.retransmit = None;
                let why = match self.details.provisional {
                    Some(p) => {
                        self.cancelled = true;
                        if let Some(leg) = build::Leg::of(&self.invite) {
                            out.push(Action::Sip(build::cancel(&self.invite, &leg)));
                        }
                        PathFailure::NoAnswer(p)
                    }
                    None => PathFailure::NoResponse,
                };
                self.give(Verdict::CallPathFailed(why), now, out);
                self.linger(now);
            }
            Phase::Media { .. } => self.pace_media(now, out),
            Phase::Bye { deadline } | Phase::Lingering { until: deadline } if now >= deadline => {
                self.retransmit = None;
                self.phase = Phase::Done;
            }
            _ => {}
        }
    }

    /// Sends the RTP packets that are due; ends the media check once the echo wait is over.
    fn pace_media(&mut self, now: Instant, out: &mut Vec<Action>) {
        let Phase::Media {
            dest,
            mut next_at,
            mut end_at,
        } = self.phase
        else {
            return;
        };
        while end_at.is_none() && now >= next_at {
            let packet = rtp::packet(self.setup.ids.ssrc, self.details.rtp_sent);
            out.push(Action::Rtp(packet, dest));
            self.details.rtp_sent += 1;
            if self.details.rtp_sent >= self.setup.rtp_packets {
                end_at = Some(next_at + ECHO_WAIT);
            }
            next_at += rtp::PACKET_GAP;
        }
        self.phase = Phase::Media {
            dest,
            next_at,
            end_at,
        };
        if end_at.is_some_and(|e| now >= e) {
            self.end_media(now, out);
        }
    }

    fn end_media(&mut self, now: Instant, out: &mut Vec<Action>) {
        let v = if self.details.rtp_echoed > 0 {
            Verdict::Good
        } else {
            Verdict::MediaFailed
        };
        self.give(v, now, out);
        match self.pending_bye.take() {
            Some(bye) => self.send_bye(bye, now, out),
            None => self.phase = Phase::Done,
        }
    }

    fn send_bye(&mut self, bye: Bytes, now: Instant, out: &mut Vec<Action>) {
        if self.remote_bye {
            self.phase = Phase::Done;
            return;
        }
        out.push(Action::Sip(bye.clone()));
        self.retransmit =
            (self.setup.transport == Proto::Udp).then(|| (Retransmit::new(now, T2), bye));
        self.phase = Phase::Bye {
            deadline: now + BYE_WAIT,
        };
    }

    fn final_seen(&mut self, status: u16, now: Instant) {
        self.details.status = Some(status);
        self.details.answer_ms = Some(ms(now - self.started));
    }

    fn linger(&mut self, now: Instant) {
        self.retransmit = None;
        self.phase = Phase::Lingering {
            until: now + LINGER,
        };
    }

    fn give(&mut self, v: Verdict, now: Instant, out: &mut Vec<Action>) {
        if self.verdict.is_some() {
            return;
        }
        self.details.elapsed_ms = ms(now - self.started);
        self.verdict = Some(v.clone());
        out.push(Action::Verdict(v, self.details.clone()));
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
