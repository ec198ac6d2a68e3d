//! The circuit-breaker engine: no I/O, no Pingora, time only through an injected clock.
//!
//! `Breaker::try_acquire` admits a call (or rejects it with a retry hint); the returned
//! `Permit` records the call's outcome exactly once. Transitions are reported to a
//! `TransitionListener` with the reason and the window as it was at that moment.

mod clock;
mod events;
mod machine;
mod policy;
mod state;
mod window;

pub use clock::{Clock, CoarseClock, ManualClock, MonotonicClock, Nanos};
pub use events::{
    Broadcast, NoListener, Reason, Remote, RemoteMove, Transition, TransitionListener,
};
pub use machine::{
    Breaker, BreakerExport, BreakerSnapshot, Outcome, Permit, Rejected, Verdict, WindowCarried,
};
pub use policy::{
    BackoffPolicy, BreakerPolicy, HalfOpenPolicy, SlowCallPolicy, TripCause, WindowPolicy,
};
pub use state::{Mode, State};
pub use window::{Call, Slice, Window, WindowContents, WindowCounts};

#[cfg(test)]
mod tests;
