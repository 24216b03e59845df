//! The web dashboard's files, built into the binary: hand-written ES modules, one stylesheet and
//! the page they run in (`src/dashboard/assets/`), served by the API under `/dashboard/`.
//!
//! The files are static and the same for every visitor: they hold no data and no key. The page
//! signs in with a key the person types (kept in the browser's session storage) and reads
//! everything through the JSON API with it, so what it shows is always that key's environment.
//! Nothing here knows HTTP; `api::dashboard` serves these bytes. There is no build step: a file
//! added to `assets/` must be listed in [`ASSETS`] (a test checks the two agree).

use std::sync::LazyLock;

use sha2::{Digest, Sha256};

/// One file of the dashboard.
#[derive(Debug)]
pub struct Asset {
    /// The path under `assets/`, as the browser asks for it under `/dashboard/assets/`.
    pub path: &'static str,
    pub bytes: &'static [u8],
}

macro_rules! assets {
    ($($path:literal),* $(,)?) => {
        &[$(Asset { path: $path, bytes: include_bytes!(concat!("assets/", $path)) }),*]
    };
}

/// Every file of the dashboard.
pub const ASSETS: &[Asset] = assets![
    "index.html",
    "style.css",
    "app.js",
    "api.js",
    "ui.js",
    "json.js",
    "charts.js",
    "pages/signin.js",
    "pages/overview.js",
    "pages/runs.js",
    "pages/run.js",
    "pages/run_parts.js",
    "pages/tasks.js",
    "pages/queues.js",
    "pages/schedules.js",
    "pages/tokens.js",
    "pages/env_vars.js",
    "pages/admin.js",
    "icon.svg",
];

impl Asset {
    /// The media type browsers need (ES modules must be served as JavaScript).
    pub fn content_type(&self) -> &'static str {
        match self.path.rsplit('.').next() {
            Some("html") => "text/html; charset=utf-8",
            Some("css") => "text/css; charset=utf-8",
            Some("js") => "text/javascript; charset=utf-8",
            Some("svg") => "image/svg+xml",
            _ => "application/octet-stream",
        }
    }

    /// A strong validator of the bytes, so a browser revalidates cheaply after an upgrade.
    pub fn etag(&self) -> &'static str {
        static TAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
            ASSETS
                .iter()
                .map(|a| {
                    let digest = Sha256::digest(a.bytes);
                    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
                    format!("\"{hex}\"")
                })
                .collect()
        });
        ASSETS
            .iter()
            .position(|a| std::ptr::eq(a, self))
            .and_then(|i| TAGS.get(i))
            .map_or("\"\"", String::as_str)
    }
}

/// The file at `path` under `assets/`, if the dashboard has one.
pub fn asset(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

/// The page every dashboard URL loads; the modules route inside it.
pub fn index() -> &'static Asset {
    &ASSETS[0]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn files(dir: &Path, root: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("assets/ is readable") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                files(&path, root, out);
            } else {
                let rel = path.strip_prefix(root).expect("under assets/");
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }

    #[test]
    fn every_file_in_assets_is_served_and_every_served_file_exists() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/dashboard/assets");
        let mut on_disk = Vec::new();
        files(&root, &root, &mut on_disk);
        on_disk.sort();
        let mut listed: Vec<String> = ASSETS.iter().map(|a| a.path.to_owned()).collect();
        listed.sort();
        assert_eq!(on_disk, listed, "list every file of assets/ in ASSETS");
    }

    #[test]
    fn the_index_is_the_page_and_modules_are_javascript() {
        assert_eq!(index().path, "index.html");
        assert!(index().content_type().starts_with("text/html"));
        assert!(
            asset("app.js")
                .unwrap()
                .content_type()
                .starts_with("text/javascript")
        );
        assert!(asset("../Cargo.toml").is_none());
        assert_ne!(
            asset("app.js").unwrap().etag(),
            asset("ui.js").unwrap().etag()
        );
    }
}
