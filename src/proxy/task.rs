//! The async shell around one call: routes it, owns its `Call` state machine, feeds it events and
//! timers, and carries out its actions. One task and one span per call.

use super::call::{Action, Call, CallSetup};
use super::forward::{self, Inbound};
use super::{Branch, Proxy, ServerEntry, undelivered};
use crate::config::Transport as Proto;
use crate::routing::{self, CallFacts, Target};
use crate::sip::Message;
use crate::transaction::{ServerKey, TIMEOUT_64T1};
use crate::transport::Destination;
use bytes::Bytes;
use dashmap::mapref::entry::Entry;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::mpsc;
use tracing::Instrument;

/// What the dispatcher tells a call.
#[derive(Debug)]
pub enum CallEvent {
    Response(Message),
    Unreachable(SocketAddr),
    Cancel,
    Retransmit,
    Ack,
}

fn now() -> std::time::Instant {
    // tokio's clock, so tests with paused time drive the state machine too.
    tokio::time::Instant::now().into_std()
}

pub(super) fn spawn_call(proxy: Arc<Proxy>, msg: Message, inb: Inbound, key: ServerKey, mf: u32) {
    let (tx, rx) = mpsc::unbounded_channel();
    match proxy.server.entry(key.clone()) {
        Entry::Occupied(_) => return, // a retransmission raced us; the first copy owns the call
        Entry::Vacant(v) => {
            v.insert(ServerEntry::Active(tx.clone(), proxy.protection.enter()));
        }
    }
    // Calls keep the rules snapshot they started with, whatever a reload does meanwhile.
    let rules = proxy.rules.load_full();
    let facts = CallFacts::from_message(&msg, inb.src.ip());
    let sel = rules.select(&facts);
    let health = proxy.health.clone();
    let plan = routing::plan(&rules, &sel.route, &|id| health.readiness(id));
    let (popped, _) = forward::our_routes(&msg, &proxy.local);
    let call_id = String::from_utf8_lossy(msg.call_id()).into_owned();
    let span = tracing::info_span!("call", call_id = %call_id, route = %sel.route.id, emergency = sel.emergency);
    span.in_scope(|| {
        let order: Vec<&str> = plan.iter().map(|t| &*t.id).collect();
        tracing::debug!(reason = %sel.reason, plan = ?order, "routed");
    });
    let local = proxy.local;
    let orig = msg.clone();
    let build_invite = Box::new(move |t: &Target, branch: &str| {
        forward::invite_for_attempt(&orig, &inb, &local, t, branch, mf, popped)
    });
    let setup = CallSetup {
        invite: msg,
        plan,
        last_resort: sel.route.chain.last().cloned(),
        timers: sel.route.timers,
        failover: sel.route.failover.clone(),
        caller_reliable: inb.proto == Proto::Tcp,
        to_tag: format!("sos{:08x}", rand::random::<u32>()),
        build_invite,
    };
    let ctx = Ctx {
        proxy,
        inb,
        tx,
        branches: Vec::new(),
        route: sel.route.id.clone(),
        emergency: sel.emergency,
    };
    tokio::spawn(run(ctx, setup, key, rx).instrument(span));
}

struct Ctx {
    proxy: Arc<Proxy>,
    inb: Inbound,
    tx: mpsc::UnboundedSender<CallEvent>,
    branches: Vec<Bytes>,
    route: Arc<str>,
    emergency: bool,
}

async fn run(
    mut ctx: Ctx,
    setup: CallSetup,
    key: ServerKey,
    mut rx: mpsc::UnboundedReceiver<CallEvent>,
) {
    let invite = setup.invite.clone();
    let mut out = Vec::new();
    let mut call = Call::start(setup, now(), &mut out);
    ctx.execute(&mut out, &invite);
    loop {
        if call.is_finished(now()) {
            break;
        }
        let wake = call.next_wake();
        let sleep_to = tokio::time::Instant::from_std(wake.unwrap_or_else(|| now() + TIMEOUT_64T1));
        tokio::select! {
            ev = rx.recv() => {
                let Some(ev) = ev else { break };
                let t = now();
                match ev {
                    CallEvent::Response(m) => call.on_response(m, t, &mut out),
                    CallEvent::Unreachable(a) => call.on_unreachable(a, t, &mut out),
                    CallEvent::Cancel => call.on_caller_cancel(t, &mut out),
                    CallEvent::Retransmit => call.on_caller_retransmit(&mut out),
                    CallEvent::Ack => call.on_caller_ack(),
                }
            }
            _ = tokio::time::sleep_until(sleep_to) => call.on_timer(now(), &mut out),
        }
        ctx.execute(&mut out, &invite);
    }
    for b in &ctx.branches {
        ctx.proxy.branches.remove(b);
    }
    let last = call.last_to_caller();
    ctx.proxy.server.insert(
        key,
        ServerEntry::Done {
            until: now() + TIMEOUT_64T1,
            last,
        },
    );
    tracing::debug!(state = ?call.state(), "call ended");
}

impl Ctx {
    fn execute(&mut self, out: &mut Vec<Action>, invite: &Message) {
        for a in out.drain(..) {
            match a {
                Action::SendTarget(t, b) => self
                    .proxy
                    .transport
                    .send(Destination::new(t.transport, t.next_hop), b),
                Action::SendCaller(b) => self.proxy.transport.send(self.inb.reply_to(), b),
                Action::Listen(branch, addr) => {
                    let k = Bytes::from(branch.into_bytes());
                    let tx = self.tx.clone();
                    self.proxy.branches.insert(k.clone(), Branch { tx, addr });
                    self.branches.push(k);
                }
                Action::Report(id, o) => {
                    let k = super::OutcomeKind::of(o) as usize;
                    self.proxy.counters.outcomes[k]
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    self.proxy.health.report(&id, o);
                }
                Action::Undelivered(recs) => {
                    let c = &self.proxy.counters.undelivered;
                    c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let rec = undelivered::record(invite, &self.route, self.emergency, &recs);
                    self.proxy.undelivered.record(rec);
                }
            }
        }
    }
}
