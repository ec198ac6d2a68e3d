//! A predicate plugin's judgement of one exchange, with the upstream's
//! `on_plugin_error` policy standing in when the call fails. Shared by the request
//! path (`proxy/judge.rs`) and `gateway replay`, so both judge alike. An exchange
//! outside what the predicate declared at `init` (its interest) is judged by
//! `failure_when` without a call.

use super::{Exchange, Plugin, convert, types};
use crate::config::{OnPluginError, UpstreamSpec};
use crate::upstream::classify::{CallResult, Judgement};

pub fn judge(
    plugin: &Plugin,
    spec: &UpstreamSpec,
    outcome: &types::Outcome,
    exchange: Exchange<'_>,
    result: CallResult,
) -> Judgement {
    if !plugin.interest().wants_outcome(outcome, exchange.response) {
        return spec.failure_when.judge(result);
    }
    match plugin.classify(outcome, exchange) {
        Ok(verdict) => convert::judgement(verdict),
        Err(_) => match spec.on_plugin_error {
            OnPluginError::FailureWhen => spec.failure_when.judge(result),
            OnPluginError::CountAsFailure => Judgement {
                failed: Some(true),
                slow: None,
            },
            OnPluginError::CountAsSuccess => Judgement {
                failed: Some(false),
                slow: None,
            },
            OnPluginError::Ignore => Judgement::default(),
        },
    }
}
