//! What instances say to each other over the cluster's Redis channel: one JSON object
//! per message, stamped with the sender and the wall-clock time of the move.

use serde::{Deserialize, Serialize};

use crate::breaker::{Mode, State, WindowCounts};
use crate::events::FleetNote;

/// The format version; a message of another is dropped (counted), not guessed at.
pub const VERSION: u32 = 1;
/// A message larger than this is not one of ours.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub v: u32,
    /// The sending instance (`cluster.instance`).
    pub instance: String,
    /// When the move happened (for a transition) or the message was sent.
    pub at_unix_ms: u64,
    #[serde(flatten)]
    pub body: Body,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Body {
    /// A breaker moved on the sender's own evidence.
    Transition {
        upstream: String,
        to: State,
        /// For `open`: how long it stays open from `at_unix_ms`.
        open_remaining_ms: Option<u64>,
        reason: String,
        window: WindowCounts,
    },
    /// An operator's mode override (`automatic`: cleared), newest wins.
    Mode {
        upstream: String,
        mode: Mode,
        since_unix_ms: u64,
        by: String,
        /// The instance where the action was taken, when the sender relays another's.
        #[serde(default)]
        origin: Option<String>,
    },
    /// An operator's reset, newest wins.
    Reset {
        upstream: String,
        since_unix_ms: u64,
        by: String,
        #[serde(default)]
        origin: Option<String>,
    },
    /// A (re)connected instance asks every other to send what it holds.
    SyncRequest,
    /// Sent every second; its echo proves the subscription still delivers.
    Heartbeat,
}

impl Message {
    pub fn new(instance: &str, at_unix_ms: u64, body: Body) -> Self {
        Self {
            v: VERSION,
            instance: instance.to_string(),
            at_unix_ms,
            body,
        }
    }

    /// This instance's note, as the fleet reads it: a transition stamped with the time
    /// it happened, an operator action with `now`.
    pub fn from_note(instance: &str, now_unix_ms: u64, note: FleetNote) -> Self {
        let mut at = now_unix_ms;
        let body = match note {
            FleetNote::Transition {
                upstream,
                to,
                open_remaining,
                reason,
                window,
                at: moved,
            } => {
                at = crate::events::unix_ms(moved);
                Body::Transition {
                    upstream,
                    to,
                    open_remaining_ms: open_remaining.map(|d| d.as_millis() as u64),
                    reason: reason.to_string(),
                    window,
                }
            }
            FleetNote::Mode {
                upstream,
                mode,
                since_unix_ms,
                by,
            } => Body::Mode {
                upstream,
                mode,
                since_unix_ms,
                by,
                origin: None,
            },
            FleetNote::Reset {
                upstream,
                since_unix_ms,
                by,
            } => Body::Reset {
                upstream,
                since_unix_ms,
                by,
                origin: None,
            },
        };
        Self::new(instance, at, body)
    }

    /// Parses a message from the channel: bounded, versioned.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(format!("{} bytes", bytes.len()));
        }
        let message: Message = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if message.v != VERSION {
            return Err(format!("format version {}", message.v));
        }
        Ok(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_round_trips_and_a_foreign_one_is_refused() {
        let message = Message::new(
            "gw-a",
            1_700_000_000_000,
            Body::Transition {
                upstream: "api".into(),
                to: State::Open,
                open_remaining_ms: Some(9000),
                reason: "consecutive_failures".into(),
                window: WindowCounts {
                    calls: 3,
                    failures: 3,
                    slow: 0,
                },
            },
        );
        let text = serde_json::to_vec(&message).expect("serialize");
        assert!(String::from_utf8_lossy(&text).contains("\"kind\":\"transition\""));
        assert_eq!(Message::parse(&text), Ok(message));
        let other = String::from_utf8_lossy(&text).replace("\"v\":1", "\"v\":2");
        assert!(Message::parse(other.as_bytes()).is_err_and(|e| e.contains("version 2")));
        assert!(Message::parse(&vec![b' '; MAX_MESSAGE_BYTES + 1]).is_err());
        assert!(
            Message::parse(b"{\"v\":1,\"instance\":\"x\",\"at_unix_ms\":1,\"kind\":\"nuke\"}")
                .is_err()
        );
    }
}
