//! The official Trigger.dev SDK, unmodified, against a real host: runs the Node suite in
//! `tests/compat` (pinned `@trigger.dev/sdk`, one named check per call, and a headless Chromium
//! page using the SDK's realtime with a public token) and fails with the suite's own report.
//!
//! The suite's packages are installed once per test process with `npm ci`, into the checkout's
//! ignored `tests/compat/node_modules`; it needs `node`, `npm` and Debian's `chromium`
//! (`/usr/bin/chromium`, or `KILN_CHROMIUM`; `.ci/run` installs it) and never downloads a
//! browser. Without Chromium the test fails saying so: it is never skipped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::support::{TestHost, guests};

fn suite_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("compat")
}

/// `npm ci` in the suite's directory, once per test process.
fn installed_suite() -> &'static Path {
    static INSTALLED: OnceLock<PathBuf> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let dir = suite_dir();
        let output = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .output()
            .expect("npm must be on PATH to install the compatibility suite");
        assert!(
            output.status.success(),
            "npm ci in {} failed:\n{}{}",
            dir.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        dir
    })
}

/// The browser the suite's page runs in.
fn chromium() -> PathBuf {
    let path = std::env::var_os("KILN_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.exists(),
        "the compatibility suite's browser check needs headless Chromium at {}: install Debian's package (`apt-get install -y chromium`, as .ci/run does) or point KILN_CHROMIUM at one",
        path.display()
    );
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_sdk_drives_every_call_against_a_host() {
    let chromium = chromium();
    let host = TestHost::start().await;
    host.deploy(guests::HELLO).await;
    let dir = installed_suite();

    let (url, key) = (host.url.clone(), host.key.clone());
    let output = tokio::task::spawn_blocking(move || {
        Command::new("npm")
            .args(["test", "--silent"])
            .current_dir(dir)
            .env("KILN_API_URL", url)
            .env("KILN_SECRET_KEY", key)
            .env("KILN_PROJECT_REF", "default")
            .env("KILN_ENVIRONMENT", "dev")
            .env("KILN_CHROMIUM", chromium)
            .output()
            .expect("node runs the compatibility suite")
    })
    .await
    .expect("the suite's runner thread");

    assert!(
        output.status.success(),
        "the compatibility suite failed against the host:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
