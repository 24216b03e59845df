//! Builds the TypeScript and Python example projects (`examples/js`, `examples/python`) from
//! source, with their SDKs (`sdks/js`, `sdks/python`) and each language's one-command build, once
//! per test process — as `support` builds the Rust guests.
//!
//! The sources are copied into a work directory (`$KILN_GUEST_TARGET_DIR/sdk-examples`, else the
//! ignored `examples/target/`) and built there, so the checkout is never written to and the
//! installed tools survive between runs: `npm ci` runs again only when the lock file or the SDK
//! changed, `pip install -r requirements.lock` only when the lock file did. The tools come from
//! the package registries only. A missing `npm`, `node` or `python3` fails the test with what to
//! install; it never skips.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

/// Folders that are build output or installed tools, never sources to copy.
const NOT_SOURCES: &[&str] = &[
    "node_modules",
    "dist",
    "target",
    "build",
    "__pycache__",
    ".venv",
];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Where the examples are copied, installed and built.
fn work_dir() -> PathBuf {
    std::env::var_os("KILN_GUEST_TARGET_DIR")
        .map(|d| PathBuf::from(d).join("sdk-examples"))
        .unwrap_or_else(|| repo().join("examples").join("target"))
}

/// The TypeScript example component (`examples/js`, built with `npm run build`).
pub fn js_component() -> Vec<u8> {
    read(&js_component_path())
}

/// Where the TypeScript example component is, once built.
pub fn js_component_path() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(build_js).clone()
}

/// The Python example component (`examples/python`, built with `python -m kiln_sdk build`).
pub fn python_component() -> Vec<u8> {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    read(BUILT.get_or_init(build_python))
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The SDKs ship a copy of `wit/task.wit` (they are installed away from this repository);
/// a copy that differs would build components against another interface than the host's.
pub fn assert_wit_copies_match() {
    let wit = read(&repo().join("wit/task.wit"));
    for copy in [
        "sdks/js/wit/deps/task.wit",
        "sdks/python/kiln_sdk/wit/deps/task.wit",
    ] {
        assert!(
            read(&repo().join(copy)) == wit,
            "{copy} differs from wit/task.wit: run `sdks/sync-wit` (it copies the WIT and regenerates the TypeScript types)"
        );
    }
}

/// Runs a build step; panics with its output and `hint` unless it succeeds.
fn run(step: &str, command: &mut Command, hint: &str) {
    let started = Instant::now();
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{step}: cannot start {:?}: {e}. {hint}", command));
    assert!(
        output.status.success(),
        "{step} failed ({}):\n{}\n{}\n{hint}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("{step}: {:.1} s", started.elapsed().as_secs_f64());
}

/// Checks that `program --version` runs, else panics saying what to install.
fn require(program: &str, what: &str) -> String {
    match Command::new(program).arg("--version").output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        _ => panic!(
            "`{program}` is needed to build the {what} examples and was not found on PATH: install it and run the tests again"
        ),
    }
}

/// Copies the source tree `from` into `to`, leaving out build output and installed tools.
fn copy_sources(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("work dir");
    for entry in std::fs::read_dir(from).expect("source dir") {
        let entry = entry.expect("dir entry");
        let name = entry.file_name();
        let name_str = name.to_string_lossy();
        if NOT_SOURCES.contains(&name_str.as_ref()) || name_str.ends_with(".egg-info") {
            continue;
        }
        let kind = entry.file_type().expect("file type");
        if kind.is_dir() {
            copy_sources(&entry.path(), &to.join(&name));
        } else if kind.is_file() {
            std::fs::copy(entry.path(), to.join(&name)).expect("copy a source file");
        }
    }
}

/// Empties `dir` except the entries named in `keep`.
fn clear_except(dir: &Path, keep: &[&str]) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if keep.contains(&entry.file_name().to_string_lossy().as_ref()) {
            continue;
        }
        let path = entry.path();
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.unwrap_or_else(|e| panic!("cannot clear {}: {e}", path.display()));
    }
}

/// A digest of every file under the given paths (a cache key, not a security measure).
fn digest(paths: &[PathBuf]) -> String {
    fn walk(path: &Path, h: &mut DefaultHasher) {
        if path.is_dir() {
            let mut entries: Vec<_> = std::fs::read_dir(path)
                .expect("dir")
                .flatten()
                .map(|e| e.path())
                .collect();
            entries.sort();
            for p in entries {
                walk(&p, h);
            }
        } else if let Ok(bytes) = std::fs::read(path) {
            path.file_name().hash(h);
            bytes.hash(h);
        }
    }
    let mut h = DefaultHasher::new();
    for p in paths {
        walk(p, &mut h);
    }
    format!("{:016x}", h.finish())
}

/// Runs `install` unless `stamp` holds `key`; then writes it.
fn once_per_key(stamp: &Path, key: &str, install: impl FnOnce()) {
    if std::fs::read_to_string(stamp).is_ok_and(|s| s == key) {
        return;
    }
    install();
    std::fs::write(stamp, key).expect("write the install stamp");
}

fn build_js() -> PathBuf {
    let npm_hint = "The TypeScript examples need Node.js 18+ with npm (and the npm registry)";
    let version = require("node", "TypeScript");
    let major: u32 = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    assert!(
        major >= 18,
        "Node.js 18 or newer is needed, found {version}"
    );
    require("npm", "TypeScript");

    let work = work_dir().join("src");
    let sdk = work.join("sdks/js");
    let project = work.join("examples/js");
    // The SDK is copied into node_modules by `npm ci` (install-links), so a change to it needs
    // a new install as much as a change of the lock file does.
    let _ = std::fs::remove_dir_all(&sdk);
    copy_sources(&repo().join("sdks/js"), &sdk);
    clear_except(&project, &["node_modules"]);
    copy_sources(&repo().join("examples/js"), &project);

    let key = digest(&[project.join("package-lock.json"), sdk.clone()]);
    std::fs::create_dir_all(project.join("node_modules")).expect("node_modules");
    once_per_key(&project.join("node_modules/.kiln-stamp"), &key, || {
        run(
            "npm ci (examples/js)",
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(&project),
            npm_hint,
        );
    });
    run(
        "tsc (examples/js and the SDK's types)",
        Command::new("npm")
            .args(["run", "--silent", "typecheck"])
            .current_dir(&project),
        "the example or the SDK does not type-check",
    );
    run(
        "kiln-build (examples/js)",
        Command::new("npm")
            .args(["run", "--silent", "build"])
            .current_dir(&project),
        npm_hint,
    );
    project.join("dist/tasks.wasm")
}

fn build_python() -> PathBuf {
    let python_hint = "The Python examples need python3 (3.10+) with its venv module (and PyPI)";
    require("python3", "Python");

    let root = work_dir();
    let work = root.join("src");
    let sdk = work.join("sdks/python");
    let project = work.join("examples/python");
    let _ = std::fs::remove_dir_all(&sdk);
    let _ = std::fs::remove_dir_all(&project);
    copy_sources(&repo().join("sdks/python"), &sdk);
    copy_sources(&repo().join("examples/python"), &project);

    let venv = root.join("python-venv");
    let python = venv.join("bin/python");
    if !python.exists() {
        run(
            "python3 -m venv",
            Command::new("python3").arg("-m").arg("venv").arg(&venv),
            python_hint,
        );
    }
    let pip = |args: &[&str]| {
        let mut c = Command::new(&python);
        c.args(["-m", "pip", "--disable-pip-version-check", "-q"])
            .args(args);
        c
    };
    let lock = sdk.join("requirements.lock");
    once_per_key(
        &venv.join(".kiln-stamp"),
        &digest(std::slice::from_ref(&lock)),
        || {
            run(
                "pip install -r requirements.lock",
                pip(&["install", "-r"]).arg(&lock),
                python_hint,
            );
        },
    );
    // The SDK as a user installs it (its WIT files are package data), fresh each time.
    run(
        "pip install sdks/python",
        pip(&["install", "--no-deps", "--force-reinstall"]).arg(&sdk),
        python_hint,
    );
    run(
        "python -m kiln_sdk build (examples/python)",
        Command::new(&python)
            .args(["-m", "kiln_sdk", "build", "app.py", "-o", "dist/app.wasm"])
            .current_dir(&project),
        python_hint,
    );
    project.join("dist/app.wasm")
}
