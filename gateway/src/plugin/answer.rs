//! A fallback plugin's synthetic response, checked before any of it reaches a client.
//! The plugin is untrusted code: what it answers is held to what a response the
//! gateway writes itself may be, and a refusal is one line safe to log. Apart from
//! `proxy::fallback` so that `fuzz/` can drive it.

use bytes::Bytes;

pub use crate::config::FRAMING_HEADERS;
use crate::config::{StaticResponse, is_framing_header};
use crate::plugin::types;

/// Checks a plugin's response: a real status, valid headers and trailers. Framing
/// headers are dropped, names lower-cased.
pub fn synthetic_response(response: types::SyntheticResponse) -> Result<StaticResponse, String> {
    if !(200..=599).contains(&response.status) {
        return Err(format!(
            "status {} is not between 200 and 599",
            response.status
        ));
    }
    Ok(StaticResponse {
        status: response.status,
        headers: checked(response.headers, "header")?,
        body: Bytes::from(response.body),
        trailers: checked(response.trailers, "trailer")?,
        // A plugin's answer is sent as it wrote it.
        grpc_status: None,
        grpc_message: None,
    })
}

/// Valid names and values, lower-cased names, framing fields dropped (the gateway
/// frames the body itself; a trailer may not frame anything either).
fn checked(fields: types::Headers, what: &str) -> Result<Vec<(String, String)>, String> {
    let mut kept = Vec::with_capacity(fields.len());
    for (name, value) in fields {
        let name = name.to_ascii_lowercase();
        if http::HeaderName::from_bytes(name.as_bytes()).is_err()
            || http::HeaderValue::from_str(&value).is_err()
        {
            // Escaped: the refusal is logged, and must not end the log line.
            return Err(format!(
                "`{}: {}` is not a valid {what}",
                name.escape_debug(),
                value.escape_debug()
            ));
        }
        if !is_framing_header(&name) {
            kept.push((name, value));
        }
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, headers: &[(&str, &str)]) -> types::SyntheticResponse {
        types::SyntheticResponse {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: b"{}".to_vec(),
            trailers: vec![
                ("grpc-status".into(), "0".into()),
                ("Content-Length".into(), "1".into()),
            ],
        }
    }

    #[test]
    fn plugin_responses_keep_their_headers_but_not_framing() {
        let response = synthetic_response(answer(
            200,
            &[
                ("X-Fallback", "degraded"),
                ("content-length", "999"),
                ("transfer-encoding", "chunked"),
                ("connection", "close"),
                ("Proxy-Connection", "keep-alive"),
                ("te", "trailers"),
                ("trailer", "x-checksum"),
            ],
        ))
        .expect("valid");
        assert_eq!(
            response.headers,
            vec![("x-fallback".to_string(), "degraded".to_string())]
        );
        assert_eq!(response.body.as_ref(), b"{}");
        assert_eq!(
            response.trailers,
            vec![("grpc-status".to_string(), "0".to_string())],
            "trailers kept, framing dropped"
        );
    }

    #[test]
    fn plugin_responses_with_bad_status_or_headers_are_refused() {
        assert!(synthetic_response(answer(99, &[])).is_err());
        assert!(synthetic_response(answer(600, &[])).is_err());
        assert!(synthetic_response(answer(200, &[("bad header", "x")])).is_err());
        assert!(synthetic_response(answer(200, &[("x-ok", "line\nbreak")])).is_err());
    }

    #[test]
    fn a_refusal_is_one_printable_line() {
        // Found by fuzz/ (target `plugin_answer`): the plugin's bytes went into the
        // log line as they were, so a plugin could write log lines of its own.
        let problem = synthetic_response(answer(
            200,
            &[(
                "x-ok",
                "a\n2026-01-01T00:00:00Z  INFO forged: admin logged in\u{1b}[2J",
            )],
        ))
        .expect_err("refused");
        assert!(!problem.chars().any(char::is_control), "{problem:?}");
        assert!(problem.contains("a\\n2026"), "{problem}");
        let problem = synthetic_response(answer(200, &[("\u{2}\u{2}", "")])).expect_err("refused");
        assert_eq!(problem, "`\\u{2}\\u{2}: ` is not a valid header");
    }
}
