//! Breaker states, and how state and epoch share one atomic word.

use std::fmt;

/// Where a breaker is. The last three are set by an operator, never by traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Closed,
    Open,
    HalfOpen,
    /// Rejects everything until an operator returns it to automatic.
    ForcedOpen,
    /// Admits everything and records nothing.
    Disabled,
    /// Admits everything and records outcomes, but never trips.
    MetricsOnly,
}

impl State {
    pub const ALL: [State; 6] = [
        State::Closed,
        State::Open,
        State::HalfOpen,
        State::ForcedOpen,
        State::Disabled,
        State::MetricsOnly,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
            State::ForcedOpen => "forced_open",
            State::Disabled => "disabled",
            State::MetricsOnly => "metrics_only",
        }
    }

    fn code(self) -> u64 {
        match self {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
            State::ForcedOpen => 3,
            State::Disabled => 4,
            State::MetricsOnly => 5,
        }
    }

    fn from_code(code: u64) -> State {
        match code {
            1 => State::Open,
            2 => State::HalfOpen,
            3 => State::ForcedOpen,
            4 => State::Disabled,
            5 => State::MetricsOnly,
            _ => State::Closed,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an operator asks for: automatic operation or one of the operator states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Automatic,
    ForcedOpen,
    Disabled,
    MetricsOnly,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Automatic => "automatic",
            Mode::ForcedOpen => "forced_open",
            Mode::Disabled => "disabled",
            Mode::MetricsOnly => "metrics_only",
        }
    }
}

/// State and epoch in one word: the epoch counts transitions, so a permit can tell
/// whether the episode it was admitted in is still the current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Word {
    pub state: State,
    pub epoch: u64,
}

impl Word {
    pub fn pack(self) -> u64 {
        (self.epoch << 3) | self.state.code()
    }

    pub fn unpack(bits: u64) -> Word {
        Word {
            state: State::from_code(bits & 0b111),
            epoch: bits >> 3,
        }
    }

    pub fn next(self, state: State) -> Word {
        Word {
            state,
            epoch: self.epoch + 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip() {
        for state in State::ALL {
            let word = Word {
                state,
                epoch: 12345,
            };
            assert_eq!(Word::unpack(word.pack()), word);
        }
    }
}
