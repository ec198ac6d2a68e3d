//! Config reload: read -> parse -> validate -> build a new runtime snapshot -> one
//! atomic swap. Any failing step changes nothing: the running config keeps serving,
//! the error is logged with line:column and counted. Triggers: the file changing
//! (`watch.rs`), SIGHUP (`signal.rs`), `POST /admin/reload`.

mod signal;
mod watch;
pub mod write_back;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde_json::{Value, json};

use crate::config::{self, Config, LoadError};
use crate::events::unix_ms;
use crate::runtime::{Runtime, RuntimeHandle};
use crate::upstream::Fresh;

pub use signal::spawn as spawn_sighup;
pub use watch::spawn as spawn_watcher;

/// What a reload did.
#[derive(Debug, Clone)]
pub enum ReloadResult {
    Applied {
        generation: u64,
        hash: String,
        /// What starts fresh (a new upstream or endpoint, a window rebuilt into another
        /// shape), and why; everything else kept its state.
        fresh_upstreams: Vec<Fresh>,
        /// Sections that changed but only take effect on restart or graceful upgrade.
        needs_restart: Vec<&'static str>,
    },
    Unchanged {
        hash: String,
    },
    Failed {
        errors: Vec<String>,
    },
}

impl ReloadResult {
    pub fn to_json(&self) -> Value {
        match self {
            ReloadResult::Applied {
                generation,
                hash,
                fresh_upstreams,
                needs_restart,
            } => json!({
                "result": "applied",
                "generation": generation,
                "hash": hash,
                "fresh_upstreams": fresh_upstreams,
                "needs_restart": needs_restart,
            }),
            ReloadResult::Unchanged { hash } => json!({ "result": "unchanged", "hash": hash }),
            ReloadResult::Failed { errors } => json!({ "result": "error", "errors": errors }),
        }
    }
}

/// A swapped-in runtime, what in it starts fresh, what needs a restart, its hash.
type Applied = (Arc<Runtime>, Vec<Fresh>, Vec<&'static str>, String);

pub struct Reloader {
    path: PathBuf,
    runtime: Arc<RuntimeHandle>,
    /// One reload at a time: concurrent triggers queue instead of interleaving.
    serial: Mutex<()>,
    last: Mutex<Option<Value>>,
}

/// Sections a running process cannot change: they need a restart or graceful upgrade.
/// `upstream part: why; ...` for the log line.
fn fresh_summary(fresh: &[Fresh]) -> String {
    let parts: Vec<String> = fresh
        .iter()
        .map(|f| format!("{} {}: {}", f.upstream, f.part, f.why))
        .collect();
    parts.join("; ")
}

fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut sections = Vec::new();
    // Certificates and limits reload in place; sockets and protocols do not.
    let shapes = |c: &Config| c.listeners.iter().map(|l| l.shape()).collect::<Vec<_>>();
    if shapes(old) != shapes(new) {
        sections.push("listeners");
    }
    if old.admin != new.admin {
        sections.push("admin");
    }
    // `server.dns` is read by the endpoint refresher at each lookup: it reloads.
    let server = |c: &Config| crate::config::ServerSpec {
        dns: crate::dns::ResolverSpec::default(),
        ..c.server.clone()
    };
    if server(old) != server(new) {
        sections.push("server");
    }
    if old.cluster != new.cluster {
        sections.push("cluster");
    }
    sections
}

impl Reloader {
    pub fn new(path: PathBuf, runtime: Arc<RuntimeHandle>) -> Self {
        Self {
            path,
            runtime,
            serial: Mutex::new(()),
            last: Mutex::new(None),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn runtime(&self) -> &Arc<RuntimeHandle> {
        &self.runtime
    }

    /// The last reload's result, with when and why it ran.
    pub fn last(&self) -> Option<Value> {
        self.last.lock().ok().and_then(|l| l.clone())
    }

    /// Reloads the file now. `trigger` names what asked (file, sighup, api) in logs.
    pub fn reload(&self, trigger: &str) -> ReloadResult {
        let _serial = self.serial.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.runtime.snapshot();
        let known = config::KnownHosts::of(&current.config);
        let applied = config::load_knowing(&self.path, &known).and_then(|config| {
            if config.hash == current.config.hash {
                return Ok(None);
            }
            Ok(Some(self.apply(&current.config, config)?))
        });
        let result = match applied {
            Err(e) => {
                let errors: Vec<String> = match &e {
                    LoadError::Invalid(list) => list.0.iter().map(ToString::to_string).collect(),
                    other => vec![other.to_string()],
                };
                self.refused(trigger, errors)
            }
            Ok(None) => ReloadResult::Unchanged {
                hash: current.config.hash.clone(),
            },
            Ok(Some(applied)) => self.applied(trigger, applied),
        };
        self.remember(&result, trigger);
        result
    }

    /// Writes a change to one section of an upstream into the file and applies it
    /// through the same path as a reload; see `write_back.rs`.
    pub fn write_section(
        &self,
        change: &write_back::SectionChange<'_>,
    ) -> Result<write_back::Written, write_back::WriteBackError> {
        let _serial = self.serial.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.runtime.snapshot();
        let prepared = write_back::prepare(&self.path, &current.config, change)?;
        let new_hash = config::text_hash(&prepared.text);
        if prepared.text == *current.config.text {
            // Nothing to change: nothing written, nothing applied.
            return Ok(write_back::Written {
                old: prepared.old,
                new: prepared.new,
                old_hash: prepared.old_hash,
                new_hash,
                generation: current.generation,
                fresh_upstreams: Vec::new(),
            });
        }
        write_back::write_if_unchanged(&self.path, &prepared.on_disk, &prepared.text)?;
        let applied = match self.apply(&current.config, prepared.config) {
            Ok(applied) => applied,
            Err(errors) => {
                // Not applied: the file goes back to what is running, unless it was
                // edited again meanwhile.
                let restored =
                    write_back::write_if_unchanged(&self.path, &new_hash, &current.config.text);
                if let Err(e) = restored {
                    tracing::error!(target: "gateway::reload", error = %e, "could not restore the config file after a refused change");
                }
                let errors: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
                let result = self.refused(change.trigger, errors.clone());
                self.remember(&result, change.trigger);
                return Err(write_back::WriteBackError::Invalid(errors));
            }
        };
        let generation = applied.0.generation;
        let result = self.applied(change.trigger, applied);
        self.remember(&result, change.trigger);
        let fresh_upstreams = match result {
            ReloadResult::Applied {
                fresh_upstreams, ..
            } => fresh_upstreams,
            _ => Vec::new(),
        };
        Ok(write_back::Written {
            old: prepared.old,
            new: prepared.new,
            old_hash: prepared.old_hash,
            new_hash,
            generation,
            fresh_upstreams,
        })
    }

    /// Builds and swaps in the runtime for `config`.
    fn apply(&self, current: &Config, config: Config) -> Result<Applied, config::ConfigErrors> {
        let needs_restart = needs_restart(current, &config);
        let hash = config.hash.clone();
        let (runtime, fresh) = self.runtime.apply(config)?;
        Ok((runtime, fresh, needs_restart, hash))
    }

    fn refused(&self, trigger: &str, errors: Vec<String>) -> ReloadResult {
        self.runtime
            .metrics
            .config_reloads
            .with_label_values(&["error"])
            .inc();
        for error in &errors {
            tracing::error!(target: "gateway::reload", trigger, %error, "config reload refused; the running config keeps serving");
        }
        ReloadResult::Failed { errors }
    }

    fn applied(&self, trigger: &str, applied: Applied) -> ReloadResult {
        let (runtime, fresh_upstreams, needs_restart, hash) = applied;
        self.runtime
            .metrics
            .config_reloads
            .with_label_values(&["success"])
            .inc();
        tracing::info!(
            target: "gateway::reload",
            trigger,
            generation = runtime.generation,
            %hash,
            fresh_upstreams = %fresh_summary(&fresh_upstreams),
            "config reloaded"
        );
        if !needs_restart.is_empty() {
            tracing::warn!(target: "gateway::reload", sections = ?needs_restart, "changed sections take effect only on restart or graceful upgrade");
        }
        ReloadResult::Applied {
            generation: runtime.generation,
            hash,
            fresh_upstreams,
            needs_restart,
        }
    }

    /// Keeps the result for `GET /admin/config` and tells the event stream.
    fn remember(&self, result: &ReloadResult, trigger: &str) {
        // The watcher sees every write, the settings API's included: a file event that
        // changed nothing is not worth replacing what the last reload said.
        if trigger == "file" && matches!(result, ReloadResult::Unchanged { .. }) {
            return;
        }
        let mut record = result.to_json();
        record["trigger"] = json!(trigger);
        record["at_unix_ms"] = json!(unix_ms(SystemTime::now()));
        if !matches!(result, ReloadResult::Unchanged { .. }) {
            let mut event = record.clone();
            event["type"] = json!("config_reload");
            self.runtime.events.publish(event);
        }
        if let Ok(mut last) = self.last.lock() {
            *last = Some(record);
        }
    }
}
