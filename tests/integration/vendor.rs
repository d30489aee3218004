//! The vendored candle-core (tools/vendor/candle-core) is upstream's 0.11.1 plus exactly the two
//! patch files beside it, checked without the history: every file the patches don't touch must
//! hash (`git hash-object`) to the blob id the upstream list records for it, no other file may be
//! there, and undoing the patches (`git apply -R`, on a copy) must give back upstream's blobs for
//! the files they touch. Every `unsafe` the patches add must come with a SAFETY comment.

use std::path::{Path, PathBuf};
use std::process::Command;

const VENDOR: &str = "tools/vendor";
const CRATE: &str = "candle-core";
const PATCHES: [&str; 2] = [
    "candle-core-0.11.1-cudnn.patch",
    "candle-core-0.11.1-marker.patch",
];
const UPSTREAM_BLOBS: &str = "candle-core-0.11.1.upstream-blobs";

fn vendor_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(VENDOR)
}

fn git(args: &[&str], dir: &Path) -> Result<String, String> {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|error| format!("git can't run: {error}"))?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).trim().to_string());
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Upstream's files: (path in the crate, blob id).
fn upstream_blobs() -> Vec<(String, String)> {
    let manifest = std::fs::read_to_string(vendor_dir().join(UPSTREAM_BLOBS)).expect("blob list");
    manifest
        .lines()
        .map(|line| {
            let (meta, path) = line.split_once('\t').expect("MODE blob ID\tPATH");
            let id = meta.split_whitespace().nth(2).expect("a blob id");
            (path.to_string(), id.to_string())
        })
        .collect()
}

/// The files a patch touches, as paths in the crate (its paths start with `candle-core/`).
fn touched_by(patch: &str) -> Vec<String> {
    patch
        .lines()
        .filter_map(|line| line.strip_prefix("diff --git a/"))
        .map(|rest| {
            let path = rest.split(" b/").next().unwrap();
            path.strip_prefix(&format!("{CRATE}/"))
                .unwrap_or_else(|| panic!("{path}: a patch path outside {CRATE}/"))
                .to_string()
        })
        .collect()
}

/// Every file under `dir`, as paths relative to `root`.
fn files_under(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).expect("vendor folder") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files_under(root, &path, out);
        } else {
            out.push(path.strip_prefix(root).unwrap().to_string_lossy().into());
        }
    }
}

fn hash(file: &Path) -> Result<String, String> {
    git(&["hash-object", &file.to_string_lossy()], &vendor_dir()).map(|h| h.trim().to_string())
}

#[test]
fn the_vendored_crate_is_upstreams_plus_exactly_the_patches() {
    let crate_dir = vendor_dir().join(CRATE);
    let patches: Vec<String> = PATCHES
        .iter()
        .map(|name| std::fs::read_to_string(vendor_dir().join(name)).expect("patch file"))
        .collect();
    let touched: Vec<String> = patches.iter().flat_map(|p| touched_by(p)).collect();
    assert!(
        touched.len() >= 3,
        "the patches touch too few files: {touched:?}"
    );
    let upstream = upstream_blobs();
    assert!(upstream.len() > 50, "{} upstream files", upstream.len());

    // Untouched files: upstream's, byte for byte.
    for (path, id) in &upstream {
        if touched.contains(path) {
            continue;
        }
        let hashed = match hash(&crate_dir.join(path)) {
            Ok(hashed) => hashed,
            Err(reason) => return crate::util::skip("vendored candle-core check", &reason),
        };
        assert_eq!(
            &hashed, id,
            "{path} differs from upstream's, and no patch touches it"
        );
    }
    let mut present = Vec::new();
    files_under(&crate_dir, &crate_dir, &mut present);
    for path in &present {
        assert!(
            upstream.iter().any(|(p, _)| p == path) || touched.contains(path),
            "{path} is in {VENDOR}/{CRATE} but neither upstream's nor made by a patch"
        );
    }

    // Touched files: undoing the patches on a copy gives upstream's blobs back (and removes the
    // files the patches add).
    let scratch = tempfile::tempdir().unwrap();
    for path in &touched {
        let to = scratch.path().join(CRATE).join(path);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(crate_dir.join(path), &to).expect("a touched file is there");
    }
    let mut args = vec!["apply".to_string(), "-R".to_string()];
    args.extend(
        PATCHES
            .iter()
            .map(|name| vendor_dir().join(name).to_string_lossy().into_owned()),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    git(&args, scratch.path()).expect("the patches undo cleanly on the vendored files");
    for path in &touched {
        let undone = scratch.path().join(CRATE).join(path);
        match upstream.iter().find(|(p, _)| p == path) {
            Some((_, id)) => assert_eq!(&hash(&undone).unwrap(), id, "{path} once undone"),
            None => assert!(!undone.exists(), "{path} is new, yet remains once undone"),
        }
    }
}

#[test]
fn every_unsafe_the_patches_add_is_explained_and_the_docs_stay_inside() {
    for name in PATCHES {
        let patch = std::fs::read_to_string(vendor_dir().join(name)).unwrap();
        let added: Vec<&str> = patch
            .lines()
            .filter(|l| l.starts_with('+') && !l.starts_with("+++"))
            .map(|l| &l[1..])
            .collect();
        for (i, line) in added.iter().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if code.contains("unsafe ") || code.contains("unsafe{") {
                let above = added[i.saturating_sub(12)..i].join("\n");
                assert!(
                    above.contains("SAFETY:"),
                    "{name}: an unsafe block without a SAFETY comment above it: {line}"
                );
            }
        }
    }
    let readme = std::fs::read_to_string(vendor_dir().join("README.md")).unwrap();
    for needle in ["../", "shared/", "issue "] {
        assert!(
            !readme.contains(needle),
            "tools/vendor/README.md points outside the repository: {needle:?}"
        );
    }
}
