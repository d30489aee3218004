//! The real binary tried as a hostile user would: absurd arguments, special files where files
//! are expected, signals at the worst moment, a second display on the same folder, a terminal
//! that can't be written, frames that don't fit. No panic, no hang, bounded memory, a clear
//! message. Every wait is bounded, so a regression fails instead of hanging the suite.

use std::io::Read;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::util::{before_exec, binary, mkfifo, poll, poll_until, BeforeExec};

/// Waits for `child` at most `timeout` (then kills it and fails).
fn finish(mut child: Child, timeout: Duration, what: &str) -> Output {
    let exited = poll(timeout, || child.try_wait().expect("wait on child")).is_some();
    if !exited {
        let _ = child.kill();
    }
    let output = child.wait_with_output().expect("collect output");
    assert!(
        exited,
        "{what}: no exit within {timeout:?}; stderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn run(command: &mut Command, timeout: Duration, what: &str) -> Output {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    finish(child, timeout, what)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn signal(child: &Child, signal: Signal) {
    crate::util::signal(child.id(), signal);
}

/// A null-sink run writing into `dir`, with `config` (if any) as dir/dreamframe.toml.
fn display(dir: &Path, seconds: &str, config: Option<&str>) -> Command {
    let mut command = binary();
    command
        .args(["--sink", "null", "--duration", seconds, "--output-dir"])
        .arg(dir)
        .env_remove("LOGS_DIRECTORY");
    if let Some(text) = config {
        let path = dir.join("dreamframe.toml");
        std::fs::write(&path, text).expect("write the config");
        command.arg("--config").arg(path);
    }
    command
}

fn log_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("dreamframe.log")).unwrap_or_default()
}

/// Polls `dir`'s log until it contains `needle`; fails after `timeout`.
fn wait_for_log(dir: &Path, needle: &str, timeout: Duration) -> String {
    poll(timeout, || {
        Some(log_of(dir)).filter(|log| log.contains(needle))
    })
    .unwrap_or_else(|| panic!("no {needle:?} in the log:\n{}", log_of(dir)))
}

fn status_of(dir: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("status.json")).ok()?;
    serde_json::from_str(&text).ok()
}

const QUICK: Duration = Duration::from_secs(30);
/// For the runs whose first frame must come before anything is checked: a starved machine may
/// take minutes; a regression (no exit at all) still fails.
const SLOW: Duration = Duration::from_secs(240);

#[test]
fn absurd_numbers_on_the_command_line_are_refused_before_anything_runs() {
    let cases: &[(&[&str], &str)] = &[
        (&["--sink", "null", "--duration", "1e309"], "--duration"),
        (&["--sink", "null", "--duration", "nan"], "--duration"),
        (&["--sink", "null", "--duration", "inf"], "--duration"),
        (
            &["--sink", "null", "--duration", "18446744073709551616"],
            "--duration",
        ),
        (&["--sink", "null", "--duration=-1"], "--duration"),
        (&["--seed", "18446744073709551616"], "--seed"),
        (&["bench", "--seconds", "nan"], "--seconds"),
        (&["bench", "--seconds", "1e309"], "--seconds"),
        (&["bench", "--seconds=-1"], "--seconds"),
        (&["bench", "--fps", "0"], "--fps"),
        (&["bench", "--fps", "nan"], "--fps"),
        (&["bench", "--width", "0", "--height", "0"], "--width"),
        (&["bench-sd", "--runs", "0"], "--runs"),
        (&["bench-sd", "--pipeline", "nan"], "--pipeline"),
        (&["bench-sd", "--pipeline", "1e309"], "--pipeline"),
        (&["bench-sd", "--only", "everything"], "--only"),
        (&["bench-sd", "--conv", "fastest"], "--conv"),
        (&["bench-sd", "--preset", "sd-9000"], "--preset"),
        (&["bench-sd", "--device", "gpu"], "--device"),
        (&["bench-sd", "--device", "cuda:x"], "--device"),
    ];
    for (args, flag) in cases {
        let output = run(binary().args(*args), QUICK, &format!("{args:?}"));
        let text = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {text}");
        assert!(text.contains(flag), "{args:?} must name {flag}: {text}");
        assert!(!text.contains("panicked"), "{args:?}: {text}");
        assert!(output.stdout.is_empty(), "{args:?} ran something");
    }
}

/// Asking a build without cuDNN to switch the conv setup fails at once, before the gigabytes of
/// a random-weight model are made.
#[test]
fn bench_sd_refuses_conv_setups_a_build_does_not_have() {
    if cfg!(feature = "cudnn") {
        return;
    }
    let args = ["bench-sd", "--device", "cpu", "--conv", "per-call"];
    let output = run(binary().args(args), QUICK, "bench-sd --conv");
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains("conv setup \"per-call\" needs a build with cuDNN"),
        "{text}"
    );
    assert!(output.stdout.is_empty());
}

#[test]
fn check_config_refuses_special_files_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let fifo = dir.path().join("fifo.toml");
    mkfifo(&fifo);
    for (path, what) in [
        (PathBuf::from("/dev/zero"), "a character device"),
        (PathBuf::from("/dev/urandom"), "a character device"),
        (PathBuf::from("/dev/full"), "a character device"),
        (fifo, "a FIFO"),
        (dir.path().to_path_buf(), "a folder"),
    ] {
        let output = run(
            binary().arg("--check-config").arg(&path),
            QUICK,
            &path.display().to_string(),
        );
        let text = stderr(&output);
        assert_eq!(output.status.code(), Some(78), "{}: {text}", path.display());
        assert!(
            text.contains(&format!(
                "cannot read config file {}: is {what}, expected a regular file",
                path.display()
            )),
            "{text}"
        );
        // The cause is printed once, not repeated.
        assert_eq!(text.matches(what).count(), 1, "{text}");
    }
    let big = dir.path().join("big.toml");
    std::fs::write(&big, vec![b'#'; 2 * 1024 * 1024]).unwrap();
    let output = run(binary().arg("--check-config").arg(&big), QUICK, "big");
    assert_eq!(output.status.code(), Some(78));
    assert!(
        stderr(&output).contains("larger than the 1 MiB allowed"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_reload_from_a_fifo_or_dev_zero_is_refused_and_later_files_still_apply() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = "[display]\nfps = 20.0\nrealtime = false\n[buffer]\nstart-seconds = 0.2\n[output]\nstatus-seconds = 0.2\n";
    let child = display(dir.path(), "60", Some(config))
        .stderr(Stdio::null())
        .spawn()
        .expect("binary starts");
    let path = dir.path().join("dreamframe.toml");
    wait_for_log(dir.path(), "start version=", QUICK);

    std::fs::remove_file(&path).unwrap();
    mkfifo(&path);
    signal(&child, Signal::SIGHUP);
    wait_for_log(dir.path(), "is a FIFO, expected a regular file", QUICK);

    std::fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
    signal(&child, Signal::SIGHUP);
    wait_for_log(dir.path(), "is a character device", QUICK);

    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, config.replace("fps = 20.0", "fps = 10.0")).unwrap();
    signal(&child, Signal::SIGHUP);
    wait_for_log(dir.path(), "reload applied=true fps=10", QUICK);

    signal(&child, Signal::SIGTERM);
    let output = finish(child, QUICK, "SIGTERM after the reloads");
    assert!(output.status.success(), "{:?}", output.status);
    assert_eq!(
        log_of(dir.path()).matches("reload_rejected").count(),
        2,
        "{}",
        log_of(dir.path())
    );
}

#[test]
fn a_resume_file_that_is_a_fifo_or_dev_zero_means_a_fresh_start() {
    for special in ["fifo", "zero"] {
        let dir = tempfile::tempdir().expect("temp dir");
        let resume = dir.path().join("resume.json");
        match special {
            "fifo" => mkfifo(&resume),
            _ => std::os::unix::fs::symlink("/dev/zero", &resume).unwrap(),
        }
        let output = run(
            &mut display(dir.path(), "1", Some("[display]\nrealtime = false\n")),
            QUICK,
            special,
        );
        assert!(output.status.success(), "{special}: {}", stderr(&output));
        let log = log_of(dir.path());
        assert!(
            log.contains("resume_unreadable") && log.contains("expected a regular file"),
            "{special}: {log}"
        );
        assert!(log.contains("keyframe index=0 "), "{special}: {log}");
    }
}

#[test]
fn a_second_display_on_the_same_folder_is_refused_naming_the_first() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = display(dir.path(), "60", Some("[display]\nrealtime = false\n"))
        .stderr(Stdio::null())
        .spawn()
        .expect("binary starts");
    poll_until("the first display's status.json", QUICK, || {
        status_of(dir.path()).is_some()
    });
    let output = run(&mut display(dir.path(), "5", None), QUICK, "second");
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!("another dreamframe (PID {})", first.id())),
        "{text}"
    );
    let seed_before = status_of(dir.path()).map(|s| s["seed"].clone());
    signal(&first, Signal::SIGTERM);
    assert!(finish(first, QUICK, "first display").status.success());
    assert_eq!(
        status_of(dir.path()).map(|s| s["seed"].clone()),
        seed_before,
        "the refused display wrote nothing"
    );
}

#[test]
fn sigterm_the_moment_the_display_starts_is_a_clean_logged_stop() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut command = display(dir.path(), "60", Some("[display]\nrealtime = false\n"));
    // The child starts with SIGTERM blocked (inherited across exec), so the signal sent below
    // waits until the display has installed its handlers and unblocked it: the earliest moment
    // it can act on, however fast or slow this machine is.
    before_exec(&mut command, BeforeExec::BlockSigterm);
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    signal(&child, Signal::SIGTERM);
    let output = finish(child, QUICK, "SIGTERM at start");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("shutdown reason=SIGTERM"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_terminal_that_cannot_be_written_ends_the_display_with_the_reason() {
    let dir = tempfile::tempdir().expect("temp dir");
    let terminal = |dir: &Path| {
        let mut command = binary();
        command
            // Long enough that the first frame's write (what fails) comes first on any machine.
            .args(["--sink", "terminal", "--duration", "600", "--output-dir"])
            .arg(dir)
            .env_remove("LOGS_DIRECTORY");
        command
    };
    // A full disk behind a redirect.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    let child = terminal(dir.path())
        .stdout(full)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = finish(child, SLOW, "terminal > /dev/full");
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("cannot write to the terminal"),
        "{}",
        stderr(&output)
    );

    // A closed pipe: the reader went away.
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = terminal(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first_bytes = [0u8; 16];
    child
        .stdout
        .take()
        .expect("piped stdout")
        .read_exact(&mut first_bytes)
        .expect("the terminal is taken over");
    let output = finish(child, QUICK, "terminal | closed pipe");
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("cannot write to the terminal"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn help_and_version_say_when_stdout_cannot_take_them() {
    for flag in ["--help", "--version"] {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full");
        let spawn = |stdout: Stdio| {
            let child = binary()
                .arg(flag)
                .stdin(Stdio::null())
                .stdout(stdout)
                .stderr(Stdio::piped())
                .spawn()
                .expect("binary starts");
            finish(child, QUICK, flag)
        };
        let output = spawn(full.into());
        assert_eq!(output.status.code(), Some(1), "{flag}: {}", stderr(&output));
        assert!(
            stderr(&output).contains("cannot write to stdout"),
            "{flag}: {}",
            stderr(&output)
        );
        // A pipe whose reader has left.
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let output = spawn(writer.into());
        assert_eq!(output.status.code(), Some(1), "{flag}: {}", stderr(&output));
        // And where they can be written, they are, with status 0.
        let output = run(binary().arg(flag), QUICK, flag);
        assert_eq!(output.status.code(), Some(0), "{flag}: {}", stderr(&output));
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.contains("dreamframe"), "{flag}: {text}");
    }
    // A usage error still goes to stderr with clap's status.
    let output = run(binary().arg("--no-such-flag"), QUICK, "unknown flag");
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("--no-such-flag"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn with_backtraces_on_every_log_record_is_one_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A saved walk whose latent doesn't fit the generator: candle's shape error, with a
    // backtrace when RUST_BACKTRACE is set.
    std::fs::write(
        dir.path().join("resume.json"),
        r#"{"version":1,"generator":"cppn","seed":5,"next_index":4,"shape":[3],"latent":[0.1,0.2,0.3]}"#,
    )
    .unwrap();
    let output = run(
        display(dir.path(), "1", Some("[display]\nrealtime = false\n"))
            .args(["--seed", "5"])
            .env("RUST_BACKTRACE", "1"),
        QUICK,
        "backtrace run",
    );
    assert!(output.status.success(), "{}", stderr(&output));
    // Whoever started it by hand is told where its files go.
    let said = format!("output dir={}", dir.path().display());
    assert!(stderr(&output).contains(&said), "{}", stderr(&output));
    let log = log_of(dir.path());
    assert!(log.contains("resume_unusable"), "{log}");
    assert!(
        log.contains(
            "does not fit cppn: cppn.latent-size changed since it was saved, or another version of dreamframe saved it; starting a fresh walk"
        ),
        "{log}"
    );
    for line in log.lines() {
        assert!(
            line.starts_with("20") && line.contains(" ["),
            "a log record spans lines: {line:?}"
        );
    }
}

/// Peak resident memory of `child` in KiB, sampled until it exits.
fn peak_rss_kib(child: &mut Child, timeout: Duration) -> u64 {
    let mut peak = 0;
    poll_until("its exit", timeout, || {
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{}/status", child.id())) {
            if let Some(kib) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            {
                peak = kib;
            }
        }
        child.try_wait().expect("wait").is_some()
    });
    peak
}

#[test]
fn huge_frames_stay_within_the_buffer_budget_and_show_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    // 4096x4096 frames are 48 MiB each: a whole 90-frame transition held outside the buffer
    // would be 4.3 GiB.
    let config = "[display]\nrealtime = false\n[model]\nkind = \"test-pattern\"\nwidth = 4096\nheight = 4096\n[output]\nstatus-seconds = 0.2\n";
    let mut child = display(dir.path(), "6", Some(config))
        .stderr(Stdio::null())
        .spawn()
        .expect("binary starts");
    let peak = peak_rss_kib(&mut child, Duration::from_secs(60));
    assert!(child.wait().unwrap().success());
    let status = status_of(dir.path()).expect("status.json");
    assert!(status["frames_shown"].as_u64().unwrap_or(0) > 0, "{status}");
    // 512 MiB of frames, three 1080p screen buffers, the program: well under 1 GiB.
    assert!(peak < 1024 * 1024, "peak RSS {peak} KiB");
    let log = log_of(dir.path());
    assert!(log.contains("decode_batch=1 "), "{log}");
}

#[test]
fn a_very_long_transition_shows_its_first_keyframe_at_once_in_bounded_memory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = "[display]\nrealtime = false\n[model]\nwidth = 64\nheight = 64\n[interpolation]\nframes-per-transition = 10000\n[buffer]\nmax-megabytes = 1\n[output]\nstatus-seconds = 0.2\n";
    let mut child = display(dir.path(), "5", Some(config))
        .stderr(Stdio::null())
        .spawn()
        .expect("binary starts");
    let peak = peak_rss_kib(&mut child, Duration::from_secs(60));
    assert!(child.wait().unwrap().success());
    let status = status_of(dir.path()).expect("status.json");
    assert!(status["frames_shown"].as_u64().unwrap_or(0) > 0, "{status}");
    assert!(status["first_picture_s"].as_f64().is_some(), "{status}");
    let log = log_of(dir.path());
    let first_picture = log
        .find("first_picture after_s=")
        .expect("first_picture logged");
    if let Some(transition) = log.find("[TIMING] transition") {
        assert!(first_picture < transition, "{log}");
    }
    // The start line and status.json agree on the buffer's capacity from the start, while the
    // frames keep their size; a ladder that lowered the resolution (a loaded machine) fits more
    // of the smaller frames into the same megabytes, once they arrive.
    let start = log.lines().find(|l| l.contains("start version=")).unwrap();
    let capacity = dreamframe::events::parse::parse_fields(start)["buffer_capacity_frames"].clone();
    let now = status["buffer_capacity_frames"].to_string();
    let adapt = &status["adapt"];
    if adapt.is_null() || (adapt["width"] == 64 && adapt["height"] == 64) {
        assert_eq!(capacity, now, "{start}\n{status}");
    } else {
        assert!(
            now.parse::<u64>().unwrap() >= capacity.parse::<u64>().unwrap(),
            "{start}\n{status}"
        );
    }
    assert!(peak < 200 * 1024, "peak RSS {peak} KiB");
}

/// Where stdout may go on a box: a full device (every write fails with ENOSPC), or a pipe whose
/// reader has left (`| head -1`: EPIPE).
fn unwritable_stdouts() -> [(&'static str, Stdio); 2] {
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    let (reader, writer) = nix::unistd::pipe().expect("pipe");
    drop(reader);
    [
        ("> /dev/full", full.into()),
        ("| closed pipe", writer.into()),
    ]
}

#[test]
fn output_to_a_full_device_or_a_closed_pipe_is_one_error_line_never_a_panic() {
    let dir = tempfile::tempdir().expect("temp dir");
    let chart = dir.path().join("chart.svg");
    let shipped = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/dreamframe.toml");
    let commands = || -> Vec<(&str, Command)> {
        let mut check = binary();
        check.arg("--check-config").arg(&shipped);
        let mut probe = binary();
        probe.args(["probe", "--framebuffer", "/nonexistent/fb0"]);
        let mut bench = binary();
        bench.args(["bench", "--seconds", "1", "--width", "64", "--height", "36"]);
        let mut analyze = Command::new(crate::util::analyzer_binary());
        analyze
            .arg("--chart")
            .arg(&chart)
            .arg(crate::util::data("logs/adapting-cppn-1024x576.log"));
        vec![
            ("--check-config", check),
            ("probe", probe),
            ("bench", bench),
            ("dreamframe-analyze", analyze),
        ]
    };
    for which in 0..commands().len() {
        for (how, stdout) in unwritable_stdouts() {
            let (name, mut command) = commands().swap_remove(which);
            let _ = std::fs::remove_file(&chart);
            let child = command
                .stdin(Stdio::null())
                .stdout(stdout)
                .stderr(Stdio::piped())
                .spawn()
                .expect("binary starts");
            let what = format!("{name} {how}");
            let output = finish(child, SLOW, &what);
            let message = stderr(&output);
            assert_eq!(output.status.code(), Some(1), "{what}: {message}");
            assert!(
                message.contains("cannot write to stdout") && !message.contains("panicked"),
                "{what}: {message}"
            );
            assert_eq!(message.trim_end().lines().count(), 1, "{what}: {message}");
            if name == "dreamframe-analyze" {
                // The chart is written before the report, which is what failed.
                assert!(chart.exists(), "{what}: no chart");
            }
        }
    }
}

#[test]
fn a_fifo_as_log_file_or_console_is_refused_at_once_and_the_display_runs_on() {
    let dir = tempfile::tempdir().expect("temp dir");
    let fifo = dir.path().join("fifo");
    mkfifo(&fifo);
    let config = format!(
        "[display]\nrealtime = false\n[log]\nfile = {:?}\n",
        fifo.display().to_string()
    );
    let output = run(
        &mut display(dir.path(), "2", Some(&config)),
        SLOW,
        "a FIFO as log.file",
    );
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(
        text.contains("log_file_unavailable")
            && text.contains("is a FIFO, expected a regular file"),
        "{text}"
    );
    // The log went to stderr, and the FIFO is still there (not rotated away).
    assert!(text.contains("shutdown reason="), "{text}");
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    let checked = run(
        binary()
            .arg("--check-config")
            .arg(dir.path().join("dreamframe.toml")),
        QUICK,
        "--check-config with a FIFO as log.file",
    );
    let said = String::from_utf8_lossy(&checked.stdout);
    assert_eq!(checked.status.code(), Some(0), "{said}");
    assert!(
        said.contains("log.file = ") && said.contains("is a FIFO, not a regular file"),
        "{said}"
    );

    // A FIFO as the output folder: named at run time and by --check-config.
    let output = run(
        &mut display(&fifo, "1", None),
        SLOW,
        "a FIFO as the output folder",
    );
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{text}");
    let named = format!("{} is a FIFO, expected a folder", fifo.display());
    assert!(
        text.contains("output_dir_unavailable") && text.contains(&named),
        "{text}"
    );
    let path = dir.path().join("output.toml");
    std::fs::write(
        &path,
        format!("[output]\ndir = {:?}\n", fifo.display().to_string()),
    )
    .unwrap();
    let checked = run(
        binary().arg("--check-config").arg(&path),
        QUICK,
        "--check-config with a FIFO as output.dir",
    );
    let said = String::from_utf8_lossy(&checked.stdout);
    assert_eq!(checked.status.code(), Some(0), "{said}");
    assert!(
        said.contains("output.dir = ") && said.contains(&named),
        "{said}"
    );

    let output = run(
        binary()
            .args(["probe", "--framebuffer", "/nonexistent/fb0", "--console"])
            .arg(&fifo),
        QUICK,
        "probe --console FIFO",
    );
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(
        said.contains("is a FIFO, expected a terminal"),
        "{said}{}",
        stderr(&output)
    );
    let config = format!(
        "[display]\nsink = \"fbdev\"\nframebuffer = \"/dev/null\"\nconsole = {:?}\n",
        fifo.display().to_string()
    );
    let path = dir.path().join("console.toml");
    std::fs::write(&path, config).unwrap();
    let checked = run(
        binary().arg("--check-config").arg(&path),
        QUICK,
        "--check-config with a FIFO as display.console",
    );
    let said = String::from_utf8_lossy(&checked.stdout);
    assert_eq!(checked.status.code(), Some(0), "{said}");
    assert!(
        said.contains("display.console = ") && said.contains("is a FIFO, not a terminal"),
        "{said}"
    );
}

#[test]
fn a_display_that_cannot_write_its_pid_keeps_the_lock_and_a_second_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    // As on a full disk: every write into a file fails (EFBIG past 0 bytes), the PID's, the
    // log's and status.json's alike; flock needs no space.
    let config = "[display]\nrealtime = false\n[output]\nstatus-seconds = 0.2\n";
    let mut command = display(dir.path(), "120", Some(config));
    before_exec(&mut command, BeforeExec::NoRoomForFiles);
    let mut first = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    poll_until("the first display's lock", SLOW, || {
        assert!(
            first.try_wait().unwrap().is_none(),
            "the first display ended"
        );
        dreamframe::testing::OutputLock::holder(dir.path())
            .ok()
            .flatten()
            .is_some()
    });
    assert_eq!(
        dreamframe::testing::OutputLock::holder(dir.path()).unwrap(),
        Some("unknown".to_string()),
        "the PID could not have been written"
    );
    let second = run(
        &mut display(dir.path(), "5", None),
        QUICK,
        "a second display on the folder",
    );
    let text = stderr(&second);
    assert_eq!(second.status.code(), Some(1), "{text}");
    assert!(
        text.contains("another dreamframe (PID unknown) is already showing into"),
        "{text}"
    );
    // `status` never calls it NOT RUNNING (exit 3) while it holds the folder.
    let status = run(
        binary().arg("status").arg("--output-dir").arg(dir.path()),
        QUICK,
        "status",
    );
    assert_ne!(
        status.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&status.stdout)
    );
    signal(&first, Signal::SIGTERM);
    let output = finish(first, QUICK, "the first display");
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(
        text.contains("cannot write the PID into") && text.contains("the lock holds all the same"),
        "{text}"
    );
    // status.json failed at every 0.2 s tick: said once, not at each.
    assert_eq!(text.matches("status_write_failed").count(), 1, "{text}");
    assert!(text.matches("snapshot_write_failed").count() <= 1, "{text}");
}

#[test]
fn status_exits_78_for_a_bad_config_and_4_when_it_cannot_report_never_1() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[display]\nfps = -1\n").unwrap();
    let output = run(
        binary().arg("status").arg("--config").arg(&bad),
        QUICK,
        "status --config bad",
    );
    assert_eq!(output.status.code(), Some(78), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("display.fps"),
        "{}",
        stderr(&output)
    );
    for (how, stdout) in unwritable_stdouts() {
        let child = binary()
            .arg("status")
            .arg("--output-dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .expect("binary starts");
        let output = finish(child, QUICK, &format!("status {how}"));
        let text = stderr(&output);
        assert_eq!(output.status.code(), Some(4), "status {how}: {text}");
        assert!(text.contains("cannot write to stdout"), "{text}");
    }
}

/// `command` run as a user who can't read what root wrote in a 0700 folder: `nobody` when these
/// tests run as root, else the same user after the folder is made unreadable.
fn as_an_outsider(command: &mut Command, dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the effective user.
    if std::fs::metadata("/proc/self").unwrap().uid() == 0 {
        command.uid(65534).gid(65534);
    } else {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o000)).unwrap();
    }
}

#[test]
fn status_of_a_folder_it_may_not_read_says_it_cant_tell_with_exit_4_not_not_running() {
    let dir = tempfile::tempdir().expect("temp dir");
    let service = dir.path().join("service");
    std::fs::create_dir(&service).unwrap();
    let _lock = dreamframe::testing::OutputLock::acquire(&service).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let fresh = serde_json::json!({"updated_unix_s": now, "status_interval_s": 2.0,
        "state": "playing", "generator": "cppn"});
    std::fs::write(service.join("status.json"), fresh.to_string()).unwrap();
    for json in [false, true] {
        let mut command = binary();
        command.arg("status").arg("--output-dir").arg(&service);
        if json {
            command.arg("--json");
        }
        as_an_outsider(&mut command, &service);
        let output = run(&mut command, QUICK, "status as an outsider");
        let text = String::from_utf8_lossy(&output.stdout).into_owned() + &stderr(&output);
        assert_eq!(output.status.code(), Some(4), "json={json}: {text}");
        assert!(
            text.contains("can't tell: permission denied reading")
                && text.contains("use sudo or join the dreamframe group")
                && !text.contains("NOT RUNNING"),
            "json={json}: {text}"
        );
    }
}

#[test]
fn status_never_prints_escapes_absurd_numbers_or_negative_ages_from_its_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Held, with contents as a hostile writer left them (same file, so the lock stays).
    let _lock = dreamframe::testing::OutputLock::acquire(dir.path()).unwrap();
    std::fs::write(dir.path().join("dreamframe.lock"), "\x1b[2J\x1b[31mowned").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let status = serde_json::json!({"updated_unix_s": now + 100_000, "status_interval_s": 1e308,
        "state": "playing\u{1b}[5m", "generator": "cppn", "achieved_fps": 1e200,
        "last_keyframe_age_s": -5.0, "generator_note": "evil\u{1b}[31m"});
    std::fs::write(dir.path().join("status.json"), status.to_string()).unwrap();
    let output = run(
        binary().arg("status").arg("--output-dir").arg(dir.path()),
        QUICK,
        "status of hostile files",
    );
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(!text.contains('\x1b'), "{text:?}");
    assert!(text.contains("PID unknown"), "{text}");
    assert!(text.contains("in the future"), "{text}");
    assert_eq!(
        output.status.code(),
        Some(1),
        "a future date is not running: {text}"
    );
    assert!(text.contains("fps        ? of"), "{text}");
    assert!(!text.contains("-5"), "a negative age: {text}");
    assert!(!text.contains("0000000000"), "a 200-digit number: {text}");
}

#[test]
fn a_terminal_that_fails_its_first_write_is_said_at_once_not_after_the_buffer_fills() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Without adaptation the first frame waits for start-seconds: 60 s here.
    let mut command = binary();
    command
        .args(["--sink", "terminal", "--duration", "120", "--output-dir"])
        .arg(dir.path())
        .arg("--config")
        .arg(dir.path().join("dreamframe.toml"));
    std::fs::write(
        dir.path().join("dreamframe.toml"),
        "[adapt]\nenabled = false\n[buffer]\nstart-seconds = 60\nseconds = 60\n",
    )
    .unwrap();
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let child = command
        .stdin(Stdio::null())
        .stdout(full)
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    let output = finish(child, QUICK, "terminal sink on /dev/full");
    let text = stderr(&output);
    assert_ne!(output.status.code(), Some(0), "{text}");
    assert!(
        text.contains("cannot write to the terminal (stdout): No space left on device"),
        "{text}"
    );
}
