//! The process's allocator, and how memory freed on a proxy thread goes back to the
//! system.
//!
//! A proxy allocates and frees small buffers on every request; mimalloc's thread-local
//! free lists beat glibc malloc there (measured in docs/PERFORMANCE.md). Not under
//! cargo-fuzz (`--cfg fuzzing`): AddressSanitizer and libFuzzer's malloc limit only see
//! the system allocator.
//!
//! mimalloc hands pages whose blocks are all free back to the system (after its purge
//! delay, 1 s) only while the thread that owns them keeps allocating. A proxy thread
//! that served a burst of connections and then went quiet would keep that memory
//! resident for good. So each proxy thread runs `tidy_this_thread`'s task: every
//! `TIDY_EVERY` it collects its own heap (cheap: it visits the thread's pages), which
//! frees empty pages and purges those whose delay has passed.

use std::cell::Cell;
use std::time::Duration;

#[cfg(not(fuzzing))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Two collections return a page: the first frees it, the next one after the purge
/// delay gives it back. So memory freed by a burst is back within about twice this.
const TIDY_EVERY: Duration = Duration::from_secs(5);

thread_local! {
    static TIDYING: Cell<bool> = const { Cell::new(false) };
}

/// Starts, once per thread, a task on this thread's runtime that collects this thread's
/// heap every `TIDY_EVERY`. Called on each new connection: a no-op but the first time.
/// Only on a single-threaded runtime (Pingora's proxy threads without work stealing:
/// one each), where the task is sure to run on the thread whose heap it collects.
pub fn tidy_this_thread() {
    if TIDYING.get() {
        return;
    }
    // Only a runtime that runs its tasks on this thread collects this thread's heap.
    let here = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread);
    if !here {
        return;
    }
    TIDYING.set(true);
    tokio::spawn(async {
        let mut tick = tokio::time::interval(TIDY_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            collect();
        }
    });
}

#[allow(unsafe_code)]
fn collect() {
    #[cfg(not(fuzzing))]
    // SAFETY: `mi_collect` takes no pointer and may be called from any thread at any
    // time; it only walks the calling thread's own heap.
    unsafe {
        libmimalloc_sys::mi_collect(false)
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_task_per_thread_and_only_on_a_single_threaded_runtime() -> std::io::Result<()> {
        let shared = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_time()
            .build()?;
        shared.block_on(async { tidy_this_thread() });
        assert!(
            !TIDYING.get(),
            "a work-stealing runtime may run it elsewhere"
        );
        assert_eq!(shared.metrics().num_alive_tasks(), 0);

        let own = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()?;
        own.block_on(async {
            tidy_this_thread();
            tidy_this_thread();
        });
        assert!(TIDYING.get());
        assert_eq!(own.metrics().num_alive_tasks(), 1);
        Ok(())
    }
}
