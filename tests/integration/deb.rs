//! The Debian package (`cargo deb`, Cargo.toml's `[package.metadata.deb]`, tools/debian/): built
//! from the binaries this test run already has, then read back with dpkg-deb (files, modes,
//! control fields, conffiles, maintainer scripts), extracted and run, and unpacked into a
//! throwaway dpkg database. Where cargo-deb or dpkg-deb is missing the test says SKIPPED on stderr
//! (uncaptured) and passes, except under `CI=true`, where it fails (`util::skip`); .ci/run
//! installs cargo-deb so CI runs it.
//!
//! Never on the machine running it: no user is created, no unit enabled, no maintainer script
//! run (see `unpacks_into_a_throwaway_dpkg_root` for why the package is unpacked, not configured).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

fn skip(reason: &str) {
    crate::util::skip("Debian package test", reason);
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `command`'s output; panics with its stderr unless it succeeded.
fn run(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("{command:?}: {error}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn stdout(command: &mut Command) -> String {
    String::from_utf8(run(command).stdout).expect("UTF-8 output")
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Whether `program --version` runs; `Err` is the reason to skip.
fn have(program: &str, mut command: Command) -> Result<String, String> {
    match command.arg("--version").output() {
        Ok(output) if output.status.success() => Ok(String::from_utf8_lossy(&output.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()),
        Ok(output) => Err(format!(
            "{program} is not available ({})",
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .next()
                .unwrap_or_default()
        )),
        Err(error) => Err(format!("{program} is not available ({error})")),
    }
}

/// Builds the package into `dir` with cargo-deb and returns its path.
///
/// Not `cargo deb --profile dev` on target/debug, though that works: cargo-deb warns that the dev
/// profile will become an error, deletes any `target/debian/dreamframe_*.deb` (a release someone
/// built) and strips into target/dreamframe/. Instead a target folder of its own, whose
/// `release/` holds links to the debug binaries cargo test built: `target/release/` in the assets
/// is cargo-deb's name for whatever CARGO_TARGET_DIR says. `--no-build`: they are built;
/// `--strip`: the release profile keeps line tables (cargo-deb would then ship them), and 700 MB
/// of debug binaries would take a minute to compress; `--fast`: lighter compression.
pub(crate) fn build(dir: &Path) -> PathBuf {
    let release = dir.join("target/release");
    std::fs::create_dir_all(&release).unwrap();
    for (name, binary) in [
        (
            "dreamframe",
            PathBuf::from(env!("CARGO_BIN_EXE_dreamframe")),
        ),
        ("dreamframe-analyze", crate::util::analyzer_binary()),
    ] {
        std::os::unix::fs::symlink(binary, release.join(name)).unwrap();
    }
    let deb = dir.join("dreamframe.deb");
    let start = Instant::now();
    // Strip and compress use both cores for a few seconds: not while pacing is being measured.
    let _alone = crate::util::cpu_hog();
    run(cargo()
        .current_dir(root())
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .args([
            "deb",
            "--no-build",
            "--strip",
            "--fast",
            "--offline",
            "--quiet",
        ])
        .arg("--manifest-path")
        .arg(root().join("Cargo.toml"))
        .arg("--output")
        .arg(&deb));
    eprintln!("cargo deb: {:.1} s", start.elapsed().as_secs_f64());
    deb
}

/// The man pages and completions tools/debian holds (src/commands/cli.rs and the analyzer make
/// them), where the package puts them: path to mode.
fn generated_docs() -> Vec<(String, String)> {
    let mut docs = Vec::new();
    for (folder, target, suffix) in [
        ("man", "/usr/share/man/man1", ".gz"),
        (
            "completions/bash",
            "/usr/share/bash-completion/completions",
            "",
        ),
        ("completions/zsh", "/usr/share/zsh/vendor-completions", ""),
        (
            "completions/fish",
            "/usr/share/fish/vendor_completions.d",
            "",
        ),
    ] {
        for entry in std::fs::read_dir(root().join("tools/debian").join(folder)).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            docs.push((format!("{target}/{name}{suffix}"), "-rw-r--r--".to_string()));
        }
    }
    assert!(
        docs.len() >= 8,
        "man pages and completions for both binaries: {docs:?}"
    );
    docs
}

/// Every dependency dpkg-shlibdeps finds for the two binaries together is declared once, at
/// that version or later, and no package is named twice (cargo-deb's `$auto` did both wrong).
fn depends_cover_what_the_binaries_link(deb: &Path, depends: &str, dir: &Path) {
    let mut names: Vec<&str> = depends
        .split(", ")
        .map(|d| d.split(' ').next().unwrap())
        .collect();
    names.sort();
    let count = names.len();
    names.dedup();
    assert_eq!(
        names.len(),
        count,
        "a package named twice in Depends: {depends}"
    );
    let work = dir.join("shlibs");
    std::fs::create_dir_all(work.join("debian")).unwrap();
    std::fs::write(
        work.join("debian/control"),
        "Source: x\n\nPackage: x\nArchitecture: any\n",
    )
    .unwrap();
    run(Command::new("dpkg-deb")
        .arg("-x")
        .arg(deb)
        .arg(work.join("root")));
    let found = stdout(
        Command::new("dpkg-shlibdeps")
            .args([
                "-O",
                "root/usr/bin/dreamframe",
                "root/usr/bin/dreamframe-analyze",
            ])
            .current_dir(&work),
    );
    let found = found
        .trim()
        .strip_prefix("shlibs:Depends=")
        .unwrap_or_else(|| panic!("{found}"));
    for needed in found.split(", ") {
        let (package, version) = needed.split_once(" (>= ").expect("a versioned dependency");
        let version = version.trim_end_matches(')');
        let declared = depends
            .split(", ")
            .find_map(|d| d.strip_prefix(&format!("{package} (>= ")))
            .unwrap_or_else(|| {
                panic!("Depends lacks {needed} (dpkg-shlibdeps: {found}): {depends}")
            })
            .trim_end_matches(')');
        let covers = Command::new("dpkg")
            .args(["--compare-versions", declared, "ge", version])
            .status()
            .unwrap();
        assert!(
            covers.success(),
            "Depends has {package} (>= {declared}), the binaries need {needed}"
        );
    }
}

/// The copyright file names holders and licences (cargo-deb's own said "Copyright information
/// missing"); the changelog's first entry is this version. Reads the package as
/// `depends_cover_what_the_binaries_link` unpacked it.
fn copyright_and_changelog_are_complete(dir: &Path) {
    let root = dir.join("shlibs/root");
    let copyright =
        std::fs::read_to_string(root.join("usr/share/doc/dreamframe/copyright")).unwrap();
    assert!(copyright.starts_with(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
    ));
    assert!(!copyright.contains("missing"), "{copyright}");
    for wanted in [
        "\nFiles: *\nCopyright: ",
        "\nLicense: Apache-2.0\n",
        "\nLicense: MIT\n",
    ] {
        assert!(copyright.contains(wanted), "{wanted:?} in {copyright}");
    }
    let changelog = stdout(
        Command::new("gzip")
            .arg("-dc")
            .arg(root.join("usr/share/doc/dreamframe/changelog.Debian.gz")),
    );
    let version = format!("{}-1", env!("CARGO_PKG_VERSION"));
    assert!(
        changelog.starts_with(&format!("dreamframe ({version}) ")),
        "tools/debian/changelog has no entry for {version} first:\n{changelog}"
    );
}

/// `dpkg-deb -c`: path (without the leading `.`) to (mode string, owner/group), files only.
fn contents(deb: &Path) -> BTreeMap<String, (String, String)> {
    let listing = stdout(Command::new("dpkg-deb").arg("-c").arg(deb));
    eprintln!("dpkg-deb -c:\n{listing}");
    let mut files = BTreeMap::new();
    for line in listing.lines() {
        // -rwxr-xr-x 0/0  15492160 2026-11-28 00:00 ./usr/bin/dreamframe
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert!(fields.len() >= 6, "unexpected dpkg-deb -c line: {line}");
        let (mode, owner, path) = (fields[0], fields[1], fields[5]);
        assert_eq!(owner, "0/0", "not owned by root: {line}");
        if mode.starts_with('d') {
            assert_eq!(mode, "drwxr-xr-x", "{line}");
            continue;
        }
        let path = path.strip_prefix('.').unwrap_or(path).to_string();
        files.insert(path, (mode.to_string(), owner.to_string()));
    }
    files
}

#[test]
fn the_package_holds_the_appliance_and_its_maintainer_scripts() {
    let cargo_deb = match have("cargo-deb", {
        let mut command = cargo();
        command.arg("deb");
        command
    }) {
        Ok(version) => version,
        Err(reason) => {
            return skip(&format!(
                "{reason}; install it with `cargo install cargo-deb --locked`"
            ))
        }
    };
    if let Err(reason) = have("dpkg-deb", Command::new("dpkg-deb")) {
        return skip(&reason);
    }
    eprintln!("{cargo_deb}");
    let dir = tempfile::tempdir().unwrap();
    let deb = build(dir.path());

    // Every file at its path with its mode, and nothing else: no /usr/local, nothing in /var
    // (systemd makes the state and log folders), no drop-in under /etc/systemd (postinst links
    // it on CUDA boxes only).
    let files = contents(&deb);
    let expected: BTreeMap<String, (String, String)> = [
        ("/usr/bin/dreamframe", "-rwxr-xr-x"),
        ("/usr/bin/dreamframe-analyze", "-rwxr-xr-x"),
        ("/etc/dreamframe/dreamframe.toml", "-rw-r--r--"),
        ("/usr/lib/systemd/system/dreamframe.service", "-rw-r--r--"),
        ("/usr/share/dreamframe/cuda.conf", "-rw-r--r--"),
        ("/usr/share/doc/dreamframe/README", "-rw-r--r--"),
        ("/usr/share/doc/dreamframe/copyright", "-rw-r--r--"),
        (
            "/usr/share/doc/dreamframe/changelog.Debian.gz",
            "-rw-r--r--",
        ),
    ]
    .into_iter()
    .map(|(path, mode)| (path.to_string(), mode.to_string()))
    .chain(generated_docs())
    .map(|(path, mode)| (path, (mode, "0/0".to_string())))
    .collect();
    assert_eq!(files, expected);

    // Control fields: the name, Cargo.toml's version (revision 1), the dependencies.
    let field = |name: &str| {
        stdout(Command::new("dpkg-deb").arg("-f").arg(&deb).arg(name))
            .trim()
            .to_string()
    };
    assert_eq!(field("Package"), "dreamframe");
    assert_eq!(field("Version"), format!("{}-1", env!("CARGO_PKG_VERSION")));
    assert_eq!(field("Section"), "graphics");
    assert!(!field("Maintainer").is_empty());
    assert!(!field("Architecture").is_empty());
    // Stripped binaries (the line tables go to the dbgsym package): the build here is a debug
    // one, with full debug info, so unstripped it would install several hundred MB.
    let installed_kib: u64 = field("Installed-Size").parse().expect("Installed-Size");
    assert!(
        installed_kib < 100 * 1024,
        "the package installs {installed_kib} KiB: are the binaries stripped?"
    );
    let depends = field("Depends");
    for package in ["libc6", "passwd", "init-system-helpers"] {
        assert!(
            depends
                .split(", ")
                .any(|d| d.split(' ').next() == Some(package)),
            "Depends lacks {package}: {depends}"
        );
    }
    depends_cover_what_the_binaries_link(&deb, &depends, dir.path());
    copyright_and_changelog_are_complete(dir.path());
    // The control archive: conffiles and the three scripts, no preinst (so unpacking, below,
    // runs nothing).
    let info = stdout(Command::new("dpkg-deb").arg("-I").arg(&deb));
    eprintln!("dpkg-deb -I:\n{info}");
    let control = dir.path().join("control");
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));
    let mut members: Vec<String> = std::fs::read_dir(&control)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|member| member != "md5sums")
        .collect();
    members.sort();
    assert_eq!(
        members,
        ["conffiles", "control", "postinst", "postrm", "prerm"]
    );
    // The reference config is a conffile: an edited copy survives upgrades.
    assert_eq!(
        std::fs::read_to_string(control.join("conffiles")).unwrap(),
        "/etc/dreamframe/dreamframe.toml\n"
    );

    // The maintainer scripts: POSIX sh, cargo-deb's systemd snippets put in at the marker.
    let script = |name: &str| std::fs::read_to_string(control.join(name)).unwrap();
    for name in ["postinst", "prerm", "postrm"] {
        let text = script(name);
        assert!(text.starts_with("#!/bin/sh\n"), "{name}: {text}");
        assert!(text.contains("\nset -e\n"), "{name} lacks set -e");
        assert!(!text.contains("#DEBHELPER#"), "{name}: marker left in");
        run(Command::new("sh").arg("-n").arg(control.join(name)));
        if Command::new("bash").arg("--version").output().is_ok() {
            run(Command::new("bash")
                .args(["--posix", "-n"])
                .arg(control.join(name)));
        }
    }
    let postinst = script("postinst");
    for needle in [
        // The system user, then its groups.
        "getent passwd dreamframe",
        "useradd --system --user-group",
        "usermod -a -G \"$groups\" dreamframe",
        // The CUDA drop-in where the NVIDIA driver is loaded, as tools/install.sh does.
        "[ -e /proc/driver/nvidia/version ]",
        "ln -s /usr/share/dreamframe/cuda.conf \"$dropin\"",
        // Enabled on install (cargo-deb's postinst-systemd-enable) ...
        "deb-systemd-helper enable dreamframe.service",
        // ... restarted on upgrade only if running, not started on a first install.
        "deb-systemd-invoke try-restart dreamframe.service",
    ] {
        assert!(
            postinst.contains(needle),
            "postinst lacks {needle}:\n{postinst}"
        );
    }
    assert!(
        !postinst.contains("deb-systemd-invoke start") && !postinst.contains("_dh_action=start"),
        "postinst starts the unit on install:\n{postinst}"
    );
    // The project's part before the snippets: the drop-in link is there for their daemon-reload.
    assert!(
        postinst
            .find("ln -s /usr/share/dreamframe/cuda.conf")
            .unwrap()
            < postinst.find("daemon-reload").unwrap()
    );
    assert!(script("prerm").contains("deb-systemd-invoke stop dreamframe.service"));
    let postrm = script("postrm");
    for needle in [
        "deb-systemd-helper purge dreamframe.service",
        "rm -rf /var/lib/dreamframe /var/log/dreamframe",
        "rm -f \"$dropin\"",
    ] {
        assert!(postrm.contains(needle), "postrm lacks {needle}:\n{postrm}");
    }

    // Extracted: the files are the project's, the unit starts what the package ships, and the
    // shipped binary accepts the shipped config.
    let tree = dir.path().join("tree");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree));
    for (source, installed) in [
        ("config/dreamframe.toml", "etc/dreamframe/dreamframe.toml"),
        (
            "systemd/dreamframe.service",
            "usr/lib/systemd/system/dreamframe.service",
        ),
        ("systemd/cuda.conf", "usr/share/dreamframe/cuda.conf"),
        ("README.md", "usr/share/doc/dreamframe/README"),
    ] {
        assert_eq!(
            std::fs::read(root().join(source)).unwrap(),
            std::fs::read(tree.join(installed)).unwrap(),
            "{installed} is not {source}"
        );
    }
    let unit =
        std::fs::read_to_string(tree.join("usr/lib/systemd/system/dreamframe.service")).unwrap();
    let exec = exec_start(&unit);
    assert_eq!(exec, "/usr/bin/dreamframe");
    assert!(tree.join(exec.trim_start_matches('/')).is_file());
    let check = stdout(
        Command::new(tree.join("usr/bin/dreamframe"))
            .arg("--check-config")
            .arg(tree.join("etc/dreamframe/dreamframe.toml")),
    );
    assert!(check.trim_end().ends_with(": ok"), "{check}");
    run(Command::new(tree.join("usr/bin/dreamframe-analyze")).arg("--help"));

    unpacks_into_a_throwaway_dpkg_root(&deb, dir.path());
}

/// The program the unit's `ExecStart=` runs.
fn exec_start(unit: &str) -> &str {
    unit.lines()
        .find_map(|line| line.strip_prefix("ExecStart="))
        .and_then(|command| command.split_whitespace().next())
        .expect("the unit has ExecStart=")
}

/// `dpkg --root --unpack` into an empty dpkg database: dpkg itself accepts the package, records
/// its files and its conffile, and puts the files in place (the conffile as `.dpkg-new`, which
/// dpkg renames when it configures).
///
/// Not `dpkg --install`/`--configure`: configuring runs postinst, and dpkg runs maintainer
/// scripts chrooted into the root, which needs root privileges and a Debian system inside it (sh,
/// getent, useradd, deb-systemd-helper; debootstrap, with a network), or with
/// `--force-script-chrootless` on this machine itself, where postinst would create the user and
/// enable the unit. Unpacking runs only a preinst, and the package has none (checked above).
fn unpacks_into_a_throwaway_dpkg_root(deb: &Path, dir: &Path) {
    if let Err(reason) = have("dpkg", Command::new("dpkg")) {
        return skip(&format!("no install into a throwaway root: {reason}"));
    }
    let target = dir.join("root");
    let admin = target.join("var/lib/dpkg");
    for folder in ["info", "updates", "triggers"] {
        std::fs::create_dir_all(admin.join(folder)).unwrap();
    }
    std::fs::write(admin.join("status"), "").unwrap();
    let dpkg = || {
        let mut command = Command::new("dpkg");
        command
            .arg(format!("--root={}", target.display()))
            // Its log, else dpkg appends to this machine's /var/log/dpkg.log.
            .arg(format!("--log={}", dir.join("dpkg.log").display()))
            .args(["--force-not-root", "--no-triggers"]);
        command
    };
    run(dpkg().arg("--unpack").arg(deb));
    let query = |format: &str| {
        stdout(
            Command::new("dpkg-query")
                .arg(format!("--root={}", target.display()))
                .args(["-W", "-f", format, "dreamframe"]),
        )
    };
    assert_eq!(query("${Status}"), "install ok unpacked");
    assert_eq!(
        query("${Conffiles}").split_whitespace().next(),
        Some("/etc/dreamframe/dreamframe.toml")
    );
    let listed = stdout(
        Command::new("dpkg-query")
            .arg(format!("--root={}", target.display()))
            .args(["-L", "dreamframe"]),
    );
    for path in [
        "/usr/bin/dreamframe",
        "/usr/bin/dreamframe-analyze",
        "/etc/dreamframe/dreamframe.toml",
        "/usr/lib/systemd/system/dreamframe.service",
    ] {
        assert!(
            listed.lines().any(|line| line == path),
            "dpkg -L lacks {path}"
        );
        let on_disk = if path.starts_with("/etc/") {
            format!("{path}.dpkg-new")
        } else {
            path.to_string()
        };
        assert!(
            target.join(on_disk.trim_start_matches('/')).is_file(),
            "{on_disk} not unpacked"
        );
    }
    // No maintainer script ran: nothing outside the package's own files (and dpkg's database).
    assert!(!target.join("etc/systemd").exists());
    assert!(!target.join("etc/passwd").exists());
}

/// The unit names the package's binary (/usr/bin); tools/install.sh installs to /usr/local/bin and
/// must point the unit there.
#[test]
fn the_unit_runs_the_binary_each_install_puts_in_place() {
    let unit = std::fs::read_to_string(root().join("systemd/dreamframe.service")).unwrap();
    assert_eq!(exec_start(&unit), "/usr/bin/dreamframe");
    let dest = tempfile::tempdir().unwrap();
    run(Command::new("bash")
        .arg(root().join("tools/install.sh"))
        .env("DESTDIR", dest.path())
        .env("BINARY", env!("CARGO_BIN_EXE_dreamframe")));
    let staged =
        std::fs::read_to_string(dest.path().join("etc/systemd/system/dreamframe.service")).unwrap();
    let exec = exec_start(&staged);
    assert_eq!(exec, "/usr/local/bin/dreamframe");
    assert!(dest.path().join(exec.trim_start_matches('/')).is_file());
    // Only that line differs.
    let differing: Vec<(&str, &str)> = unit
        .lines()
        .zip(staged.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(differing.len(), 1, "{differing:?}");
    assert_eq!(unit.lines().count(), staged.lines().count());
}
