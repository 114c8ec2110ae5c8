//! Pairing the two halves of a call: the caller's CLIENT (or PRODUCER) span and the callee's SERVER (or
//! CONSUMER) span whose parent it is. Spans arrive from different processes in any order, so each half
//! waits in a bounded table until its partner comes or the pairing window ends.

use std::collections::{HashMap, VecDeque};

/// What the graph needs of one span.
#[derive(Debug, Clone)]
pub(crate) struct Half {
    /// `service.name` of the span's resource.
    pub(crate) service: String,
    /// Whether the span failed (status error, or HTTP 5xx).
    pub(crate) failed: bool,
    /// Duration in milliseconds.
    pub(crate) latency_ms: f64,
    /// End time, Unix seconds: which window the call counts in.
    pub(crate) second: i64,
    /// For a caller half: the peer it names (`peer.service`, `db.system`, `server.address`), used as a
    /// virtual node when no callee half ever arrives.
    pub(crate) peer: Option<Peer>,
    /// Messaging (PRODUCER/CONSUMER) rather than a request.
    pub(crate) messaging: bool,
    /// A span without `span.kind`, filed as both halves: it makes an edge only when paired with a
    /// span of another service, and never a virtual node.
    pub(crate) fallback: bool,
}

/// An uninstrumented peer a caller names.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    /// Node name.
    pub(crate) name: String,
    /// `database` when named by `db.system`, else `virtual`.
    pub(crate) kind: &'static str,
}

/// Key of a call: trace id and the caller span's id.
pub(crate) type CallKey = ([u8; 16], [u8; 8]);

/// Both halves seen, or one expired.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Caller and callee of one call.
    Paired { client: Half, server: Half },
    /// A caller whose callee never reported.
    LoneClient(Half),
    /// A callee whose caller never reported.
    LoneServer(Half),
}

#[derive(Default)]
struct Slot {
    client: Option<Half>,
    server: Option<Half>,
}

/// Halves waiting for their partner, oldest first, at most `capacity`.
pub(crate) struct Pending {
    slots: HashMap<CallKey, Slot>,
    arrivals: VecDeque<(u64, CallKey)>,
    capacity: usize,
}

impl Pending {
    /// An empty table holding at most `capacity` calls.
    pub(crate) fn new(capacity: usize) -> Pending {
        Pending {
            slots: HashMap::new(),
            arrivals: VecDeque::new(),
            capacity,
        }
    }

    /// Calls waiting.
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Files a caller (`is_client`) or callee half that arrived at `arrived` (any monotonic clock in
    /// ms). Returns the pair when its partner was waiting, `Err` when the table is full.
    pub(crate) fn insert(
        &mut self,
        key: CallKey,
        is_client: bool,
        half: Half,
        arrived: u64,
    ) -> Result<Option<Outcome>, Half> {
        if let Some(slot) = self.slots.get_mut(&key) {
            let partner = if is_client {
                slot.server.take()
            } else {
                slot.client.take()
            };
            return Ok(match partner {
                Some(partner) => {
                    self.slots.remove(&key);
                    Some(if is_client {
                        Outcome::Paired {
                            client: half,
                            server: partner,
                        }
                    } else {
                        Outcome::Paired {
                            client: partner,
                            server: half,
                        }
                    })
                }
                // A second half of the same side (a duplicate export): keep the newest.
                None => {
                    if is_client {
                        slot.client = Some(half);
                    } else {
                        slot.server = Some(half);
                    }
                    None
                }
            });
        }
        if self.slots.len() >= self.capacity {
            return Err(half);
        }
        let mut slot = Slot::default();
        if is_client {
            slot.client = Some(half);
        } else {
            slot.server = Some(half);
        }
        self.slots.insert(key, slot);
        self.arrivals.push_back((arrived, key));
        Ok(None)
    }

    /// Removes the halves that arrived before `deadline` and are still unpaired.
    pub(crate) fn expire(&mut self, deadline: u64) -> Vec<Outcome> {
        let mut expired = Vec::new();
        while let Some(&(arrived, key)) = self.arrivals.front() {
            if arrived >= deadline {
                break;
            }
            self.arrivals.pop_front();
            if let Some(slot) = self.slots.remove(&key) {
                if let Some(client) = slot.client {
                    expired.push(Outcome::LoneClient(client));
                }
                if let Some(server) = slot.server {
                    expired.push(Outcome::LoneServer(server));
                }
            }
        }
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn half(service: &str) -> Half {
        Half {
            service: service.into(),
            failed: false,
            latency_ms: 1.0,
            second: 0,
            peer: None,
            messaging: false,
            fallback: false,
        }
    }

    #[test]
    fn halves_pair_in_either_order_and_lone_ones_expire() {
        let mut pending = Pending::new(10);
        let a = ([1; 16], [1; 8]);
        let b = ([2; 16], [2; 8]);
        assert!(matches!(pending.insert(a, false, half("api"), 0), Ok(None)));
        let pair = pending.insert(a, true, half("web"), 5).ok().flatten();
        assert!(
            matches!(&pair, Some(Outcome::Paired { client, server }) if client.service == "web" && server.service == "api"),
            "{pair:?}"
        );
        assert!(matches!(pending.insert(b, true, half("web"), 10), Ok(None)));
        assert!(pending.expire(10).is_empty(), "not yet due");
        let expired = pending.expire(11);
        assert!(matches!(expired.as_slice(), [Outcome::LoneClient(h)] if h.service == "web"));
        assert_eq!(pending.len(), 0);
    }

    #[test]
    fn a_full_table_refuses_new_calls() {
        let mut pending = Pending::new(1);
        assert!(
            pending
                .insert(([1; 16], [1; 8]), true, half("a"), 0)
                .is_ok()
        );
        assert!(
            pending
                .insert(([2; 16], [2; 8]), true, half("a"), 0)
                .is_err()
        );
    }
}
