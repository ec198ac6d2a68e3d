//! `GET`/`PUT /api/v1/upstreams/{name}/{section}`: an upstream's breaker, retries,
//! outlier detection or bulkhead, read from and written back to the config file
//! (`reload/write_back.rs` does the writing).

use serde_json::{Value, json};

use super::Reply;
use super::audit::{self, Token};
use crate::config;
use crate::reload::Reloader;
use crate::reload::write_back::{SECTIONS, SectionChange, WriteBackError};
use crate::runtime::Runtime;

/// The section as the running file has it (`null`: absent, defaults apply).
pub fn read(runtime: &Runtime, upstream: &str, section: &str) -> Reply {
    if !runtime.upstreams.contains_key(upstream) {
        return failed(&WriteBackError::UnknownUpstream(upstream.to_string()));
    }
    if !SECTIONS.contains(&section) {
        return failed(&WriteBackError::UnknownSection(section.to_string()));
    }
    let text = &runtime.config.text;
    match config::edit::section(text, &["upstreams", upstream, section]) {
        Ok(value) => Reply::Json(
            200,
            json!({
                "upstream": upstream,
                "section": section,
                "value": value,
                "file_hash": config::text_hash(text),
                "source": runtime.config.source.display().to_string(),
            }),
        ),
        Err(e) => failed(&e.into()),
    }
}

/// Who asked, for the audit line.
pub struct Caller<'a> {
    pub peer: &'a str,
    pub token: Token,
}

pub fn write(
    reloader: &Reloader,
    upstream: &str,
    section: &str,
    body: &[u8],
    if_match: Option<&str>,
    caller: &Caller<'_>,
) -> Reply {
    let change: Value = match serde_json::from_slice(body) {
        Ok(value) => value,
        Err(e) => {
            return Reply::Json(
                400,
                json!({ "code": "BAD_REQUEST", "message": format!("body is not JSON: {e}") }),
            );
        }
    };
    let scalar_section = section == "max_concurrent_requests";
    if !(scalar_section || change.is_object() || change.is_null()) {
        return Reply::Json(
            400,
            json!({
                "code": "BAD_REQUEST",
                "message": format!("`{section}` takes an object of the keys to change (null removes a key), or null to remove the section"),
            }),
        );
    }
    let asked = SectionChange {
        upstream,
        section,
        change: &change,
        if_match: if_match.map(|h| h.trim().trim_start_matches("W/").trim_matches('"')),
        trigger: "api_settings",
    };
    match reloader.write_section(&asked) {
        Ok(written) => {
            audit::settings_change(&audit::SettingsChange {
                peer: caller.peer,
                token: caller.token,
                upstream,
                section,
                old: &written.old,
                new: &written.new,
                old_hash: &written.old_hash,
                new_hash: &written.new_hash,
            });
            Reply::Json(
                200,
                json!({
                    "upstream": upstream,
                    "section": section,
                    "old": written.old,
                    "value": written.new,
                    "previous_file_hash": written.old_hash,
                    "file_hash": written.new_hash,
                    "generation": written.generation,
                    "fresh_upstreams": written.fresh_upstreams,
                }),
            )
        }
        Err(e) => failed(&e),
    }
}

fn failed(error: &WriteBackError) -> Reply {
    let message = error.to_string();
    let (status, body) = match error {
        WriteBackError::UnknownUpstream(_) => (
            404,
            json!({ "code": "UPSTREAM_NOT_FOUND", "message": message }),
        ),
        WriteBackError::UnknownSection(_) => {
            (404, json!({ "code": "NOT_FOUND", "message": message }))
        }
        WriteBackError::Conflict { file_hash } => (
            409,
            json!({ "code": "CONFLICT", "message": message, "file_hash": file_hash }),
        ),
        WriteBackError::Edit(_) => (422, json!({ "code": "CANNOT_EDIT", "message": message })),
        WriteBackError::Invalid(errors) => (
            422,
            json!({ "code": "INVALID", "message": message, "errors": errors }),
        ),
        WriteBackError::Read { .. } | WriteBackError::Write { .. } => {
            tracing::error!(target: "gateway::admin", error = %message, "settings change not written");
            (500, json!({ "code": "NOT_WRITTEN", "message": message }))
        }
    };
    Reply::Json(status, body)
}
