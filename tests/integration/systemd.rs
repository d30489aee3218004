//! The systemd unit's hardening, as `systemd-analyze security --offline=true` scores it.

use std::path::Path;
use std::process::Command;

/// The exposure `systemd-analyze security --offline=true` gives `unit`, or `None` where there
/// is no systemd-analyze.
fn exposure(unit: &Path) -> Option<f64> {
    let output = match Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(unit)
        .output()
    {
        Ok(output) => output,
        Err(error) => {
            crate::util::skip(
                "systemd-analyze security",
                &format!("systemd-analyze is not available here ({error}); install systemd"),
            );
            return None;
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
    eprintln!("{}: exposure {exposure}", unit.display());
    Some(exposure)
}

#[test]
fn the_unit_is_hardened_to_an_exposure_of_at_most_2() {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/dreamframe.service");
    if let Some(exposure) = exposure(&unit) {
        assert!(exposure <= 2.0, "exposure {exposure} > 2.0");
    }
}

/// The CUDA drop-in only widens device access: the unit with it applied (its lines appended to
/// [Service], as systemd merges a drop-in) scores the same as without.
#[test]
fn the_cuda_drop_in_keeps_the_exposure_and_adds_only_nvidia_devices() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let base = std::fs::read_to_string(root.join("systemd/dreamframe.service")).unwrap();
    let drop_in = std::fs::read_to_string(root.join("systemd/cuda.conf")).unwrap();
    let settings: Vec<&str> = drop_in
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#') && *line != "[Service]")
        .collect();
    assert!(!settings.is_empty());
    for setting in &settings {
        assert!(
            setting.starts_with("DeviceAllow=char-nvidia-") && setting.ends_with(" rw"),
            "the drop-in should only allow NVIDIA devices: {setting}"
        );
    }
    let install = base.find("\n[Install]").expect("the unit has [Install]");
    let merged = format!(
        "{}\n{}\n{}",
        &base[..install],
        settings.join("\n"),
        &base[install..]
    );
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("dreamframe.service");
    std::fs::write(&unit, merged).unwrap();
    let Some(with_drop_in) = exposure(&unit) else {
        return;
    };
    let alone = exposure(&root.join("systemd/dreamframe.service")).unwrap();
    assert_eq!(with_drop_in, alone);
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
    let drop_in = dest
        .path()
        .join("etc/systemd/system/dreamframe.service.d/cuda.conf");
    assert_eq!(
        drop_in.is_file(),
        Path::new("/proc/driver/nvidia/version").exists(),
        "the CUDA drop-in goes where the NVIDIA driver is, and only there"
    );
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
    // CUDA=1 stages the drop-in wherever the driver is not loaded (a build box, an image).
    let output = Command::new("bash")
        .arg(&script)
        .env("DESTDIR", dest.path())
        .env("BINARY", env!("CARGO_BIN_EXE_dreamframe"))
        .env("CUDA", "1")
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(
        std::fs::read_to_string(drop_in).unwrap(),
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/cuda.conf"))
            .unwrap()
    );
}

/// Any framebuffer, console or DRM card the config may name is allowed, by class: a configured
/// /dev/fb1 or /dev/tty2 must not be blocked by a list of paths.
#[test]
fn the_unit_allows_devices_by_class_not_by_path() {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/dreamframe.service"),
    )
    .unwrap();
    let allowed: Vec<&str> = unit
        .lines()
        .filter_map(|line| line.strip_prefix("DeviceAllow="))
        .collect();
    for class in ["char-fb rw", "char-tty rw", "char-drm rw"] {
        assert!(allowed.contains(&class), "{class} in {allowed:?}");
    }
    assert!(
        !allowed
            .iter()
            .any(|a| a.starts_with("/dev/fb") || a.starts_with("/dev/tty")),
        "{allowed:?}"
    );
    assert!(unit.contains("Documentation=file:/usr/share/doc/dreamframe/README"));
}
