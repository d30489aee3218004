//! The systemd unit's hardening, as `systemd-analyze security --offline=true` scores it.

use std::path::Path;
use std::process::Command;

#[test]
fn the_unit_is_hardened_to_an_exposure_of_at_most_2() {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/dreamframe.service");
    let output = match Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(&unit)
        .output()
    {
        Ok(output) => output,
        Err(error) => {
            eprintln!("SKIPPED: systemd-analyze is not available here ({error}); install systemd to run this check");
            return;
        }
    };
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    let exposure: f64 = text
        .lines()
        .find_map(|line| {
            line.split("Overall exposure level for dreamframe.service:")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    assert!(exposure <= 2.0, "exposure {exposure} > 2.0:\n{text}");
}

#[test]
fn the_install_script_stages_binary_config_and_unit() {
    let dest = tempfile::tempdir().expect("temp dir");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/install.sh");
    let output = Command::new("bash")
        .arg(&script)
        .env("DESTDIR", dest.path())
        .env("BINARY", env!("CARGO_BIN_EXE_dreamframe"))
        .output()
        .expect("bash runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for file in [
        "usr/local/bin/dreamframe",
        "etc/dreamframe/dreamframe.toml",
        "etc/systemd/system/dreamframe.service",
    ] {
        assert!(dest.path().join(file).is_file(), "{file} not installed");
    }
    // A second run keeps the config someone may have edited.
    std::fs::write(
        dest.path().join("etc/dreamframe/dreamframe.toml"),
        "seed = 5\n",
    )
    .unwrap();
    let output = Command::new("bash")
        .arg(&script)
        .env("DESTDIR", dest.path())
        .env("BINARY", env!("CARGO_BIN_EXE_dreamframe"))
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(
        std::fs::read_to_string(dest.path().join("etc/dreamframe/dreamframe.toml")).unwrap(),
        "seed = 5\n"
    );
}
