//! SIGHUP reloads the config and reopens the outcome recording (for log rotation).
//! Without a handler SIGHUP would terminate the process.

use std::sync::Arc;

use tokio::signal::unix::{SignalKind, signal};

use super::Reloader;

pub fn spawn(reloader: Arc<Reloader>) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Register now, so a SIGHUP right after start is a reload, not a termination.
    let mut hangups = runtime.block_on(async { signal(SignalKind::hangup()) })?;
    std::thread::Builder::new()
        .name("sighup".into())
        .spawn(move || {
            runtime.block_on(async move {
                while hangups.recv().await.is_some() {
                    if let Some(recorder) = &reloader.runtime().recorder {
                        recorder.reopen();
                    }
                    reloader.reload("sighup");
                }
            });
        })?;
    Ok(())
}
