//! In-dialog requests (BYE, re-INVITE, UPDATE, INFO, ... and ACK for 2xx) that follow our
//! Record-Route: forwarded with our Via, and their responses sent back where the request came from.
//! The branch is derived from the incoming one, so a retransmission is forwarded identically.

use super::forward::{Inbound, Local};
use crate::config::Proto;
use crate::sip::{Editor, Message};
use crate::transaction::{TIMEOUT_64T1, derived_branch};
use crate::transport::{Destination, Transport};
use bytes::Bytes;
use dashmap::DashMap;
use std::time::Instant;

struct Relay {
    reply: Destination,
    until: Instant,
}

/// Branch → where the response goes. Entries live 64*T1 (timer F), then the sweeper removes them.
#[derive(Default)]
pub(super) struct Relays {
    map: DashMap<Bytes, Relay>,
}

impl Relays {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn forward(
        &self,
        msg: &Message,
        inb: &Inbound,
        local: &Local,
        dst: Destination,
        popped: usize,
        mf: u32,
        transport: &Transport,
    ) {
        let via = msg.top_via().ok();
        let in_branch = via.as_ref().and_then(|v| v.branch).unwrap_or_default();
        let sent_by = via.as_ref().map(|v| v.host).unwrap_or_default();
        let method = msg.method_bytes().unwrap_or_default();
        let is_ack = msg.method() == Some(crate::sip::Method::Ack);
        let branch = derived_branch('r', &[in_branch, sent_by, msg.call_id(), method]);
        let mut e = Editor::new(msg);
        e.stamp_top_via(inb.source())
            .push_via(&local.via(dst.proto, &branch))
            .set_max_forwards(mf)
            .pop_routes(popped);
        if dst.proto == Proto::Tcp {
            e.ensure_content_length();
        }
        let out = e.finish();
        if !is_ack {
            let until = Instant::now() + TIMEOUT_64T1;
            let reply = inb.reply_to();
            self.map
                .insert(Bytes::from(branch.into_bytes()), Relay { reply, until });
        }
        tracing::trace!(to = %dst.addr, "in-dialog request relayed");
        transport.send(dst, out);
    }

    /// Sends a response back through the relay that owns its branch. False when none does.
    pub(super) fn relay_response(&self, msg: &Message, transport: &Transport) -> bool {
        let Some(branch) = msg.top_via().ok().and_then(|v| v.branch) else {
            return false;
        };
        let Some(reply) = self.map.get(branch).map(|r| r.reply) else {
            return false;
        };
        let mut e = Editor::new(msg);
        e.pop_via();
        if reply.proto == Proto::Tcp {
            e.ensure_content_length();
        }
        transport.send(reply, e.finish());
        true
    }

    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    pub(super) fn sweep(&self, now: Instant) {
        self.map.retain(|_, r| r.until > now);
    }
}
