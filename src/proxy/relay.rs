//! In-dialog requests (BYE, re-INVITE, UPDATE, INFO, ... and ACK for 2xx) that follow our
//! Record-Route: forwarded with our Via, and their responses sent back where the request came from.
//! The branch is derived from the incoming one, so a retransmission is forwarded identically.

use super::forward::{Inbound, Local};
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

/// Branch → where the response goes. Entries live 64*T1 (timer F), then the proxy's expiry wheel
/// removes them (one wheel item per insertion: see `Proxy::expire`).
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
    ) -> Option<(Bytes, Instant)> {
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
        if dst.proto.is_stream() {
            e.ensure_content_length();
        }
        let out = e.finish();
        let kept = (!is_ack).then(|| {
            let until = tokio::time::Instant::now().into_std() + TIMEOUT_64T1;
            let reply = inb.reply_to();
            let key = Bytes::from(branch.into_bytes());
            self.map.insert(key.clone(), Relay { reply, until });
            (key, until)
        });
        tracing::trace!(to = %dst.addr, "in-dialog request relayed");
        transport.send(dst, out);
        kept
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
        if reply.proto.is_stream() {
            e.ensure_content_length();
        }
        transport.send(reply, e.finish());
        true
    }

    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    /// Removes the relay of `branch` if it has expired. Some(until): it was refreshed since (a
    /// retransmission), check again then.
    pub(super) fn expire(&self, branch: &Bytes, now: Instant) -> Option<Instant> {
        if self.map.remove_if(branch, |_, r| r.until <= now).is_some() {
            return None;
        }
        self.map.get(branch).map(|r| r.until)
    }
}
