//! The vendored candle-core (tools/candle-core) is upstream's 0.11.1 plus only the files its
//! PATCH.md names: every other file must hash (`git hash-object`, no history needed) to the blob
//! id UPSTREAM.blobs records for it, and no file may be there that neither names. Where the
//! history is there (not a shallow clone) the diff from the pristine vendor commit is checked
//! against the list too, and every `unsafe` the patch adds must have a SAFETY comment.

use std::path::Path;
use std::process::Command;

/// The commit with candle-core 0.11.1 vendored unchanged.
const PRISTINE: &str = "5cb52bf";
const VENDOR: &str = "tools/candle-core";

fn git(args: &[&str]) -> Result<String, String> {
    let output = Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .map_err(|error| format!("git can't run: {error}"))?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).trim().to_string());
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The files PATCH.md's list names (paths in the vendor folder).
fn named_in_patch_md() -> Vec<String> {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(VENDOR)
            .join("PATCH.md"),
    )
    .expect("PATCH.md");
    let section = text
        .split("## Upstream and the files changed")
        .nth(1)
        .expect("PATCH.md lists the files changed")
        .split("\n## ")
        .next()
        .unwrap();
    section
        .lines()
        .filter_map(|line| line.strip_prefix("- `")?.split('`').next())
        .map(str::to_string)
        .collect()
}

fn vendor_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(VENDOR)
}

/// Every file under `dir`, as paths relative to `root`.
fn files_under(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).expect("vendor folder") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files_under(root, &path, out);
        } else {
            out.push(
                path.strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
}

#[test]
fn every_vendored_file_is_upstreams_byte_for_byte_but_those_patch_md_names() {
    let named = named_in_patch_md();
    assert!(named.len() >= 3, "PATCH.md names too few files: {named:?}");
    let manifest =
        std::fs::read_to_string(vendor_dir().join("UPSTREAM.blobs")).expect("UPSTREAM.blobs");
    let mut upstream = Vec::new();
    for line in manifest.lines() {
        let (meta, path) = line.split_once('\t').expect("MODE blob ID\tPATH");
        let id = meta.split_whitespace().nth(2).expect("a blob id");
        upstream.push(path.to_string());
        if named.iter().any(|n| n == path) {
            continue;
        }
        let file = vendor_dir().join(path);
        let hashed = match git(&["hash-object", &file.to_string_lossy()]) {
            Ok(hashed) => hashed,
            Err(reason) => return crate::util::skip("vendored candle-core check", &reason),
        };
        assert_eq!(
            hashed.trim(),
            id,
            "{path} differs from upstream's, and PATCH.md does not name it"
        );
    }
    assert!(
        upstream.len() > 50,
        "UPSTREAM.blobs lists {} files",
        upstream.len()
    );
    let mut present = Vec::new();
    files_under(&vendor_dir(), &vendor_dir(), &mut present);
    for path in present {
        assert!(
            upstream.contains(&path) || named.contains(&path),
            "{path} is in {VENDOR} but neither upstream's nor named in PATCH.md"
        );
    }
    let patch_md = std::fs::read_to_string(vendor_dir().join("PATCH.md")).unwrap();
    for needle in ["../", "shared/", "issue "] {
        assert!(
            !patch_md.contains(needle),
            "PATCH.md points outside the repository: {needle:?}"
        );
    }
}

#[test]
fn the_patch_in_git_history_is_the_files_named_and_its_unsafe_is_explained() {
    if let Err(reason) = git(&["cat-file", "-e", &format!("{PRISTINE}^{{commit}}")]) {
        // A shallow clone: the byte-for-byte check above stands in.
        eprintln!("no history to diff against ({reason})");
        return;
    }
    let changed = git(&["diff", "--name-only", PRISTINE, "--", VENDOR]).expect("git diff");
    let mut changed: Vec<String> = changed
        .lines()
        .map(|path| {
            path.strip_prefix(&format!("{VENDOR}/"))
                .unwrap_or(path)
                .to_string()
        })
        .collect();
    let mut named = named_in_patch_md();
    changed.sort();
    named.sort();
    assert!(!named.is_empty(), "PATCH.md names no file");
    assert_eq!(
        changed, named,
        "the files changed since the pristine vendor commit {PRISTINE} must be exactly those PATCH.md names"
    );
    // Every unsafe the patch adds comes with its reason.
    let diff = git(&["diff", "-U0", PRISTINE, "--", &format!("{VENDOR}/src")]).expect("git diff");
    let added: Vec<&str> = diff
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
                "an unsafe block the patch adds has no SAFETY comment above it: {line}"
            );
        }
    }
    let outside = ["../", "shared/", "issue "];
    let patch_md = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(VENDOR)
            .join("PATCH.md"),
    )
    .unwrap();
    for needle in outside {
        assert!(
            !patch_md.contains(needle),
            "PATCH.md points outside the repository: {needle:?}"
        );
    }
}
