//! Builds the plugin workspace (`plugins/`: the example plugins and the hostile test
//! fixtures) for wasm32-wasip2, so that the tests and benches load real components
//! built from source. The components land in `target/plugins/wasm32-wasip2/release/`,
//! exported to the crate as `GATEWAY_PLUGIN_DIR`. `GATEWAY_POLYGLOT_DIR` says where
//! `scripts/build-polyglot-plugins.sh` puts the Python and JavaScript plugins.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let root = manifest_dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let plugins = root.join("plugins");
    let target_dir = root.join("target").join("plugins");

    watch(&root.join("wit"));
    watch(&plugins);

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .arg("build")
        .arg("--release")
        .arg("--locked")
        .arg("--workspace")
        .args(["--target", "wasm32-wasip2"])
        .arg("--manifest-path")
        .arg(plugins.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    // This build script's own settings must not leak into the nested, wasm build.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        build.env_remove(var);
    }
    let status = build.status();
    match status {
        Ok(status) if status.success() => {}
        Ok(status) => panic!(
            "building the plugins in {} failed ({status}); is the wasm32-wasip2 target \
             installed? `make setup` (or `rustup target add wasm32-wasip2`) adds it",
            plugins.display()
        ),
        Err(e) => panic!("cannot run cargo to build the plugins: {e}"),
    }
    let out = target_dir.join("wasm32-wasip2").join("release");
    println!("cargo:rustc-env=GATEWAY_PLUGIN_DIR={}", out.display());
    // The Python and JavaScript plugins: built before `cargo test` by
    // scripts/build-polyglot-plugins.sh (`make plugins`, `make test`), which needs pip
    // and npm; only their place is told here, and their tests fail when they are missing.
    let polyglot = root.join("target").join("polyglot");
    println!(
        "cargo:rustc-env=GATEWAY_POLYGLOT_DIR={}",
        polyglot.display()
    );
}

/// Re-run when any source under `dir` changes (build output, `node_modules` and
/// Python's `__pycache__` skipped).
fn watch(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        // Build output, and what a developer may install next to a JavaScript plugin.
        if path
            .file_name()
            .is_some_and(|n| n == "target" || n == "node_modules" || n == "__pycache__")
        {
            continue;
        }
        if path.is_dir() {
            watch(&path);
        } else {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}
