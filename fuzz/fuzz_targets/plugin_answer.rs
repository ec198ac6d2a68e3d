//! The check of a fallback plugin's synthetic response
//! (`gateway::plugin::answer::synthetic_response`): a plugin is untrusted code, and
//! what it answers goes to a client.
//!
//! Properties: an answer is accepted exactly when its status is 200-599 and every
//! header is valid; what is accepted can be written as an HTTP response (valid status,
//! names and values), keeps the plugin's headers in order except the framing ones the
//! gateway writes itself, and the body as given; a refusal is one line of printable
//! text, since it is logged.
#![no_main]

use arbitrary::Arbitrary;
use gateway::plugin::answer::{FRAMING_HEADERS, synthetic_response};
use gateway::plugin::types::SyntheticResponse;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fuzz_target!(|answer: Answer| {
    let valid = (200..=599).contains(&answer.status)
        && answer.headers.iter().all(|(name, value)| {
            http::HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()).is_ok()
                && http::HeaderValue::from_str(value).is_ok()
        });
    let kept: Vec<(String, String)> = answer
        .headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
        .filter(|(n, _)| !FRAMING_HEADERS.contains(&n.as_str()))
        .collect();
    let body = answer.body.clone();
    let status = answer.status;
    let result = synthetic_response(SyntheticResponse {
        status: answer.status,
        headers: answer.headers.clone(),
        body: answer.body,
        trailers: answer.headers,
    });
    match result {
        Ok(response) => {
            assert!(valid, "accepted an invalid answer");
            assert_eq!(response.status, status);
            assert!(http::StatusCode::from_u16(response.status).is_ok());
            assert_eq!(response.headers, kept);
            for (name, value) in &response.headers {
                let parsed = http::HeaderName::from_bytes(name.as_bytes()).expect("name");
                assert_eq!(parsed.as_str(), name, "names are lower case");
                assert!(http::HeaderValue::from_str(value).is_ok());
            }
            assert_eq!(response.body.as_ref(), body.as_slice());
        }
        Err(problem) => {
            assert!(!valid, "refused a valid answer: {problem}");
            assert!(
                !problem.is_empty() && !problem.chars().any(char::is_control),
                "the refusal is not one printable line: {problem:?}"
            );
        }
    }
});
