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
