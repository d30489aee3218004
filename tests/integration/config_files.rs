//! Good and bad config files under tests/data/config, each bad one with the messages it must
//! produce (`NAME.expected`: every line must appear in the error text).

use dreamframe::config::{Config, ConfigError};

use crate::util::{binary, data};

fn files(folder: &str, extension: &str) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(data(folder))
        .expect("config test folder exists")
        .map(|entry| entry.expect("readable entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == extension))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .{extension} files in {folder}");
    files
}

#[test]
fn good_files_load() {
    for path in files("config/good", "toml") {
        Config::load(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    }
}

#[test]
fn bad_files_report_every_expected_problem() {
    for path in files("config/bad", "toml") {
        let error = Config::load(&path)
            .err()
            .unwrap_or_else(|| panic!("{} should be invalid", path.display()));
        let ConfigError::Invalid { ref problems, .. } = error else {
            panic!("{}: unexpected error {error}", path.display());
        };
        let text = error.to_string();
        let expected = std::fs::read_to_string(path.with_extension("expected"))
            .expect("an .expected file beside each bad config");
        let mut lines: Vec<&str> = expected.lines().filter(|l| !l.trim().is_empty()).collect();
        let header = lines.remove(0);
        assert!(
            text.starts_with(header),
            "{}: header {header:?} not in\n{text}",
            path.display()
        );
        for line in lines {
            assert!(
                text.contains(line),
                "{}: expected {line:?} in\n{text}",
                path.display()
            );
        }
        // Every problem names a position inside the file.
        for problem in problems {
            assert!(problem.line >= 1 && problem.column >= 1, "{problem:?}");
        }
    }
}

#[test]
fn check_config_exits_78_with_all_messages_and_0_when_valid() {
    let bad = data("config/bad/out-of-range.toml");
    let output = binary()
        .arg("--check-config")
        .arg(&bad)
        .output()
        .expect("binary runs");
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("9 errors in config"), "{stderr}");
    assert!(
        stderr.contains("out-of-range.toml:2:7: display.fps = 0.5"),
        "{stderr}"
    );

    let good = data("config/good/everything.toml");
    let output = binary()
        .arg("--check-config")
        .arg(&good)
        .output()
        .expect("binary runs");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/dreamframe.toml");
    let output = binary()
        .arg("--check-config")
        .arg(&shipped)
        .output()
        .expect("binary runs");
    assert_eq!(output.status.code(), Some(0));
}

#[test]
fn running_with_a_bad_or_missing_config_exits_78() {
    let output = binary()
        .arg("--config")
        .arg(data("config/bad/syntax.toml"))
        .output()
        .expect("binary runs");
    assert_eq!(output.status.code(), Some(78));
    let output = binary()
        .arg("--config")
        .arg("/nonexistent/dreamframe.toml")
        .output()
        .expect("binary runs");
    assert_eq!(output.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&output.stderr)
        .contains("cannot read config file /nonexistent/dreamframe.toml"));
}

/// `dreamframe --check-config path`: its exit status and standard output.
fn check(path: &std::path::Path) -> (Option<i32>, String) {
    let output = binary()
        .arg("--check-config")
        .arg(path)
        .output()
        .expect("binary runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).to_string(),
    )
}

#[test]
fn check_config_warns_of_what_will_fall_back_at_run_time_and_still_exits_0() {
    let dir = tempfile::tempdir().expect("temp dir");
    let weights = dir.path().join("weights");
    std::fs::create_dir_all(weights.join("unet")).expect("weights folder");
    let not_a_device = dir.path().join("fb0");
    std::fs::write(&not_a_device, b"").expect("plain file");
    let path = dir.path().join("dreamframe.toml");
    let config = format!(
        "[display]\nsink = \"fbdev\"\nframebuffer = {:?}\n\n[model]\nkind = \"stable-diffusion\"\npreset = \"sd-turbo\"\nweights-dir = {:?}\ndevice = \"cuda:0\"\n",
        not_a_device.display().to_string(),
        weights.display().to_string()
    );
    std::fs::write(&path, config).expect("config written");
    let (code, stdout) = check(&path);
    assert_eq!(code, Some(0), "{stdout}");
    let origin = path.display().to_string();
    let fb = format!(
        "warning: {origin}:3:15: display.framebuffer = {:?}: is not a character device",
        not_a_device.display().to_string()
    );
    assert!(stdout.contains(&fb), "{stdout}");
    assert!(
        stdout.contains("the display will not start (display.sink = \"fbdev\")"),
        "{stdout}"
    );
    let cuda = format!(
        "warning: {origin}:9:10: model.device = \"cuda:0\": this build has no CUDA support"
    );
    assert!(stdout.contains(&cuda), "{stdout}");
    let missing = format!("warning: {origin}:8:15: model.weights-dir = ");
    assert!(stdout.contains(&missing), "{stdout}");
    assert!(
        stdout.contains("missing sd-turbo tokenizer: expected vocab.json"),
        "{stdout}"
    );
    assert!(
        stdout.contains("the display will show the built-in generator instead"),
        "{stdout}"
    );
    assert!(
        stdout.trim_end().ends_with(&format!("{origin}: ok")),
        "{stdout}"
    );

    // A character device, a CPU device and no model: nothing to warn about.
    let quiet = "[display]\nsink = \"fbdev\"\nframebuffer = \"/dev/null\"\n";
    std::fs::write(&path, quiet).expect("config written");
    let (code, stdout) = check(&path);
    assert_eq!(code, Some(0));
    assert!(!stdout.contains("warning:"), "{stdout}");
}

#[test]
fn check_config_says_a_weights_dir_that_is_a_file_is_a_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("weights.txt");
    std::fs::write(&file, b"not a folder").unwrap();
    let path = dir.path().join("dreamframe.toml");
    std::fs::write(
        &path,
        format!(
            "[display]\nsink = \"null\"\n[model]\nkind = \"stable-diffusion\"\nweights-dir = {:?}\n",
            file.display().to_string()
        ),
    )
    .unwrap();
    let (code, stdout) = check(&path);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "weights folder {} is a regular file, not a folder",
            file.display()
        )),
        "{stdout}"
    );
    assert!(!stdout.contains("weights.txt does not exist"), "{stdout}");
}

#[test]
fn check_config_warns_of_a_card_that_is_a_device_but_not_drm() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("dreamframe.toml");
    std::fs::write(&path, "[display]\nsink = \"drm\"\ncard = \"/dev/zero\"\n").unwrap();
    let (code, stdout) = check(&path);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.contains("display.card = \"/dev/zero\": is a character device but not a DRM card"),
        "{stdout}"
    );
}

#[test]
fn check_config_warns_of_keys_the_chosen_generator_never_reads() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("dreamframe.toml");
    let config = "[model]\nkind = \"warp\"\n\n[cppn]\nzoom = 2.0\n\n[[prompts.themes]]\npositive = \"a storm at sea\"\nnegative = \"\"\nstyle = \"cppn\"\npalette = \"ocean\"\n";
    std::fs::write(&path, config).expect("config written");
    let (code, stdout) = check(&path);
    assert_eq!(code, Some(0), "{stdout}");
    let origin = path.display().to_string();
    assert!(
        stdout.contains(&format!("warning: {origin}:4:"))
            && stdout.contains("cppn = [cppn]: has no effect with model.kind = \"warp\""),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("warning: {origin}:10:"))
            && stdout.contains("prompts.themes[0].style = \"cppn\": has no effect with model.kind = \"warp\": themes pick styles with model.kind = \"mix\""),
        "{stdout}"
    );
    // The palette and the themes themselves do colour the warp style.
    assert!(!stdout.contains("palette"), "{stdout}");
    assert!(!stdout.contains("warp = [warp]"), "{stdout}");

    // The cppn section matters to Stable Diffusion too: the built-in generator stands in for it.
    let config = "[model]\nkind = \"stable-diffusion\"\nweights-dir = \"/nonexistent\"\n\n[cppn]\nzoom = 2.0\n\n[warp]\nscale = 3.0\n";
    std::fs::write(&path, config).expect("config written");
    let (code, stdout) = check(&path);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(!stdout.contains("cppn = [cppn]"), "{stdout}");
    assert!(
        stdout.contains("warp = [warp]: has no effect with model.kind = \"stable-diffusion\""),
        "{stdout}"
    );

    // The flame reads its own section; another style's is flagged.
    let config = "[model]\nkind = \"flame\"\n\n[flame]\ndensity = 6.0\n\n[warp]\nscale = 3.0\n";
    std::fs::write(&path, config).expect("config written");
    let (code, stdout) = check(&path);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(!stdout.contains("flame = [flame]"), "{stdout}");
    assert!(
        stdout.contains("warp = [warp]: has no effect with model.kind = \"flame\""),
        "{stdout}"
    );

    // With the mix, every style's section and the themes' styles count.
    let config = "[model]\nkind = \"mix\"\n\n[cppn]\nzoom = 2.0\n\n[warp]\nscale = 3.0\n\n[flame]\nbrightness = 2.0\n\n[[prompts.themes]]\npositive = \"x\"\nnegative = \"\"\nstyle = \"flame\"\n";
    std::fs::write(&path, config).expect("config written");
    let (code, stdout) = check(&path);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(!stdout.contains("no effect"), "{stdout}");
}
