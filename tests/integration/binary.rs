//! The real binary: a run into the null sink checked through status.json, snapshots and the
//! log; the terminal restored on SIGTERM and SIGINT; a clear error without a framebuffer.

use std::io::Read;
use std::process::{Child, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::util::{binary, poll};

fn wait_with_timeout(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    poll(timeout, || child.try_wait().expect("wait on child")).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("dreamframe did not exit within {timeout:?}");
    })
}

/// However slow this machine is, waits end on a condition; this only bounds them.
const LONG: Duration = Duration::from_secs(120);

const STATUS_FIELDS: &[&str] = &[
    "target_fps",
    "achieved_fps",
    "buffer_seconds",
    "buffer_percentage",
    "frames_shown",
    "late_frames",
    "underruns",
    "jitter_p99_ms",
    "model_lock_avg_wait_ms",
    "model_lock_max_wait_ms",
    "keyframes_per_minute",
    "decode_fps",
    "uptime_s",
    "seed",
    "state",
    "playing_since_s",
    "frames_shown_playing",
    "jitter_p50_ms",
    "decode_ms_per_frame",
    "upscale_ms_per_frame",
    "model_lock_contended",
    "decoder_lock",
    "decode_lock_wait_p99_ms",
    "decode_lock_wait_max_ms",
    "held_deadlines",
    "skipped_deadlines",
    "screen",
    "framebuffer",
    "presented_p99_ms",
];

/// The binary showing into the null sink for `seconds`, writing its files (and log) to `dir`.
fn null_run(dir: &std::path::Path, seconds: &str) -> std::process::Command {
    let mut command = binary();
    command
        .args(["--sink", "null", "--duration", seconds, "--output-dir"])
        .arg(dir)
        .env_remove("LOGS_DIRECTORY");
    command
}

/// `null_run` with `config` written to `dir`/dreamframe.toml; returns the file's path too.
fn null_run_with_config(
    dir: &std::path::Path,
    seconds: &str,
    config: &str,
) -> (std::process::Command, std::path::PathBuf) {
    let path = dir.join("dreamframe.toml");
    std::fs::write(&path, config).expect("write the config");
    let mut command = null_run(dir, seconds);
    command.arg("--config").arg(&path);
    (command, path)
}

/// Polls status.json until `check` holds; fails after `timeout`, naming `what`.
fn wait_for_status(
    path: &std::path::Path,
    timeout: Duration,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    poll(timeout, || {
        crate::util::status_json(path).filter(|s| check(s))
    })
    .unwrap_or_else(|| panic!("timed out waiting for {what}"))
}

/// Starts `command` (a display whose `--duration` is a bound only), waits until `done` holds,
/// then stops it with SIGTERM as systemd would; it must exit 0.
fn run_until(mut command: std::process::Command, what: &str, mut done: impl FnMut() -> bool) {
    let mut child = command.spawn().expect("binary starts");
    let reached = poll(LONG, || done().then_some(())).is_some();
    crate::util::signal(child.id(), Signal::SIGTERM);
    let exit = wait_with_timeout(&mut child, Duration::from_secs(30));
    assert!(reached, "timed out waiting for {what}");
    assert!(exit.success(), "{exit:?}");
}

fn read_status(path: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).expect("status.json exists");
    serde_json::from_str(&text).expect("status.json is whole, valid JSON")
}

/// A display of 32x18 frames into the null sink for up to 300 s, status.json every 0.25 s, the
/// periodic snapshot an hour apart; its files go to `dir`/out.
fn small_display(dir: &std::path::Path) -> (Child, std::path::PathBuf) {
    let config = dir.join("dreamframe.toml");
    std::fs::write(
        &config,
        "[model]\nwidth = 32\nheight = 18\n[output]\nstatus-seconds = 0.25\nsnapshot-seconds = 3600.0\n",
    )
    .expect("write the config");
    let out = dir.join("out");
    let child = binary()
        .arg("--config")
        .arg(&config)
        .args(["--sink", "null", "--duration", "300", "--output-dir"])
        .arg(&out)
        .stderr(Stdio::null())
        .spawn()
        .expect("binary starts");
    (child, out)
}

/// snapshot.png comes with the first frame, not `snapshot-seconds` (an hour here) later.
#[test]
fn the_first_snapshot_is_written_with_the_first_frame() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut child, out) = small_display(dir.path());
    // However slow this machine is: bounded, so a snapshot that never comes fails (below, once
    // the display is stopped).
    let snapshot = out.join("snapshot.png");
    let _ = poll(LONG, || snapshot.exists().then_some(()));
    crate::util::signal(child.id(), Signal::SIGTERM);
    let exit = wait_with_timeout(&mut child, Duration::from_secs(30));
    assert!(exit.success(), "{exit:?}");
    let png = std::fs::read(&snapshot).expect("snapshot.png with the first frame");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    assert!(read_status(&out.join("status.json"))["frames_shown"].as_u64() > Some(0));
}

#[test]
fn runs_into_the_null_sink_paced_with_status_snapshots_and_logs() {
    let _pacing = crate::util::pacing_test();
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("dreamframe.toml");
    std::fs::write(
        &config,
        // A small internal size: the built-in generator keeps far ahead of 20 fps even on a
        // loaded machine, so what is checked is pacing and plumbing, not this machine's speed.
        "[display]\nfps = 20.0\nrealtime = false\n[model]\nwidth = 64\nheight = 36\n[buffer]\nstart-seconds = 0.5\n[interpolation]\nframes-per-transition = 20\n[output]\nstatus-seconds = 0.25\nsnapshot-seconds = 1.0\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let mut child = binary()
        .arg("--config")
        .arg(&config)
        .args([
            "--sink",
            "null",
            // A bound only: stopped below once everything checked has happened.
            "--duration",
            "300",
            "--seed",
            "3",
            "--output-dir",
        ])
        .arg(&out)
        .stderr(Stdio::null())
        .spawn()
        .expect("binary starts");
    // A snapshot, then (snapshot-seconds = 1) one of another picture; status.json after three
    // seconds of playback, enough to judge the pacing by.
    let snapshot = out.join("snapshot.png");
    let first_snapshot = poll(LONG, || std::fs::read(&snapshot).ok()).expect("a snapshot");
    poll(LONG, || {
        std::fs::read(&snapshot)
            .ok()
            .filter(|later| *later != first_snapshot)
    })
    .expect("the picture must change between snapshots");
    let running = wait_for_status(&out.join("status.json"), LONG, "3 s of playback", |s| {
        let playing_since = s["playing_since_s"].as_f64();
        s["uptime_s"]
            .as_f64()
            .zip(playing_since)
            .is_some_and(|(up, since)| up - since >= 3.0)
    });
    crate::util::signal(child.id(), Signal::SIGTERM);
    let exit = wait_with_timeout(&mut child, Duration::from_secs(30));
    assert!(exit.success(), "{exit:?}");
    for field in STATUS_FIELDS {
        assert!(
            running.get(field).is_some(),
            "status.json lacks {field}: {running}"
        );
    }
    // Playing (or, on a machine too busy to keep up, playing through an underrun).
    assert!(
        running["state"] == "playing" || running["state"] == "underrun",
        "{running}"
    );
    assert_eq!(running["seed"], 3);
    // Paced on the configured grid: since playback began, every deadline (20 a second) either
    // presented a frame, held the last one, or was skipped after a stall. This holds at any
    // speed; a pacer on the wrong grid would be off by far more than 10%.
    let playing_for =
        running["uptime_s"].as_f64().unwrap() - running["playing_since_s"].as_f64().unwrap();
    let deadlines = [
        "frames_shown_playing",
        "held_deadlines",
        "skipped_deadlines",
    ]
    .iter()
    .map(|k| running[k].as_f64().unwrap())
    .sum::<f64>();
    let rate = deadlines / playing_for;
    assert!(
        (18.0..=22.0).contains(&rate),
        "{rate:.2} deadlines a second over {playing_for:.1} s, wanted 20: {running}"
    );

    let log = std::fs::read_to_string(out.join("dreamframe.log")).expect("log file");
    for needle in [
        "start version=",
        "keyframe index=0 seed=",
        // The count is the ladder's: fewer on a machine too busy for 20.
        "[TIMING] transition from=0 to=1 frames=",
        "stats state=",
        "stopped frames_shown=",
    ] {
        assert!(log.contains(needle), "log lacks {needle:?}:\n{log}");
    }
}

fn stop_terminal_run_with(signal: Signal) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = binary()
        .args(["--sink", "terminal", "--duration", "60", "--output-dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("binary starts");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        stdout.read_to_end(&mut bytes).expect("read stdout");
        bytes
    });
    // Wait for the first frames (the first transition is decoded before anything shows).
    wait_for_status(
        &dir.path().join("status.json"),
        Duration::from_secs(30),
        "3 frames shown",
        |s| s["frames_shown"].as_u64().unwrap_or(0) >= 3,
    );
    crate::util::signal(child.id(), signal);
    let exit = wait_with_timeout(&mut child, Duration::from_secs(10));
    assert!(exit.success(), "signal {signal}: {exit:?}");
    let output = String::from_utf8(reader.join().expect("reader")).expect("utf-8 output");
    assert!(
        output.starts_with(dreamframe::testing::TERMINAL_ENTER),
        "terminal not taken over"
    );
    assert!(output.contains('▀'), "no frame was drawn");
    assert!(
        output.ends_with(dreamframe::testing::TERMINAL_RESTORE),
        "terminal not restored after signal {signal}"
    );
}

#[test]
fn sigterm_restores_the_terminal() {
    stop_terminal_run_with(Signal::SIGTERM);
}

#[test]
fn sigint_restores_the_terminal() {
    stop_terminal_run_with(Signal::SIGINT);
}

#[test]
fn a_missing_framebuffer_says_how_to_fix_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("fb.toml");
    std::fs::write(&config, "[display]\nframebuffer = \"/nonexistent/fb0\"\n").unwrap();
    let output = binary()
        .arg("--config")
        .arg(&config)
        .arg("--output-dir")
        .arg(dir.path())
        .output()
        .expect("binary runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot open framebuffer /nonexistent/fb0"),
        "{stderr}"
    );
    assert!(stderr.contains("--sink terminal"), "{stderr}");
}

#[test]
fn tells_systemd_ready_after_the_first_frame_then_pings_the_watchdog_and_stops() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket_path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).expect("bind notify socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut child = null_run(dir.path(), "60")
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "1000000")
        .stderr(Stdio::null())
        .spawn()
        .expect("binary starts");
    let mut messages = Vec::new();
    let mut buffer = [0u8; 256];
    let mut stop_sent = false;
    while let Ok(n) = socket.recv(&mut buffer) {
        let message = String::from_utf8_lossy(&buffer[..n]).to_string();
        let done = message == "STOPPING=1";
        messages.push(message);
        if done {
            break;
        }
        // Once ready and pinged since, stop it as systemd would.
        let ready = messages.iter().position(|m| m == "READY=1");
        if !stop_sent && ready.is_some_and(|r| messages[r..].iter().any(|m| m == "WATCHDOG=1")) {
            crate::util::signal(child.id(), Signal::SIGTERM);
            stop_sent = true;
        }
    }
    assert!(wait_with_timeout(&mut child, Duration::from_secs(40)).success());
    let ready = messages
        .iter()
        .position(|m| m == "READY=1")
        .expect("READY=1 sent");
    let status = read_status(&dir.path().join("status.json"));
    assert!(status["frames_shown"].as_u64().unwrap() > 0);
    assert!(
        messages[ready..].iter().any(|m| m == "WATCHDOG=1"),
        "{messages:?}"
    );
    assert_eq!(
        messages.last().map(String::as_str),
        Some("STOPPING=1"),
        "{messages:?}"
    );
}

#[test]
fn the_log_rotates_by_size_and_an_unwritable_log_folder_does_not_stop_the_display() {
    let dir = tempfile::tempdir().expect("temp dir");
    // One keyframe and one [TIMING] line per frame at 100 fps: plenty of log.
    let (mut run, config) = null_run_with_config(
        dir.path(),
        "300",
        "[display]\nfps = 100.0\nrealtime = false\n[buffer]\nstart-seconds = 0.1\n[interpolation]\nframes-per-transition = 1\n[log]\nmax-kilobytes = 4\nfiles = 2\n",
    );
    run.stderr(Stdio::null());
    // Until a rotation after the one that made dreamframe.log.2: the oldest must go then.
    let old = |n: u32| std::fs::read(dir.path().join(format!("dreamframe.log.{n}"))).ok();
    let mut second = None;
    run_until(run, "three rotations", || match &second {
        None => {
            second = old(2);
            false
        }
        Some(before) => old(2).as_ref() != Some(before),
    });
    let logs: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|name| name.starts_with("dreamframe.log"))
        .collect();
    assert!(
        logs.contains(&"dreamframe.log.1".to_string()),
        "no rotation: {logs:?}"
    );
    assert!(logs.len() <= 3, "only 2 old files kept: {logs:?}");
    for name in &logs {
        let size = std::fs::metadata(dir.path().join(name)).unwrap().len();
        assert!(size < 6 * 1024, "{name} is {size} bytes");
    }

    // A log "folder" that is a file: the display runs anyway and says why there is no log.
    let output = null_run(dir.path(), "1")
        .env("LOGS_DIRECTORY", &config)
        .output()
        .expect("binary runs");
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("log_file_unavailable"));
}

#[test]
fn a_restart_continues_the_walk_where_it_was() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = "[display]\nrealtime = false\n[buffer]\nstart-seconds = 0.2\n[interpolation]\nframes-per-transition = 5\n";
    let run = |what: &str, done: &dyn Fn() -> bool| {
        let mut command = null_run_with_config(dir.path(), "300", config).0;
        command.stderr(Stdio::null());
        run_until(command, what, done);
        read_status(&dir.path().join("status.json"))
    };
    let resume = dir.path().join("resume.json");
    let first = run("resume.json saved", &|| resume.exists());
    let saved: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("resume.json")).expect("resume.json saved"),
    )
    .unwrap();
    let next_index = saved["next_index"].as_u64().unwrap();
    assert!(next_index >= 4, "{saved}");
    assert_eq!(saved["seed"], first["seed"], "the saved walk is this run's");

    // Until the second run's log has the keyframe the saved walk goes on with.
    let log_path = dir.path().join("dreamframe.log");
    let resumed = format!("keyframe index={next_index} ");
    let second = run("the resumed keyframe", &|| {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        log.matches("start version=").count() >= 2
            && log
                .rsplit("start version=")
                .next()
                .is_some_and(|run| run.contains(&resumed))
    });
    assert_eq!(second["seed"], first["seed"], "the seed carries over");
    let log = std::fs::read_to_string(&log_path).unwrap();
    let second_run = &log[log.rfind("start version=").unwrap()..];
    assert!(
        second_run.contains(&format!("resume next_index={next_index} ")),
        "{second_run}"
    );
    assert!(
        second_run.contains(&format!("keyframe index={next_index} ")),
        "{second_run}"
    );
    assert!(
        !second_run.contains("keyframe index=0 "),
        "must not start over: {second_run}"
    );
}

#[test]
fn sighup_reloads_a_valid_file_and_keeps_the_running_config_on_a_bad_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = "[display]\nfps = 20.0\nrealtime = false\n[buffer]\nstart-seconds = 0.3\n[output]\nstatus-seconds = 0.25\n";
    // A bound only: stopped below once the second reload has applied.
    let (mut run, config) = null_run_with_config(dir.path(), "300", first);
    let mut child = run.spawn().expect("binary starts");
    let status_path = dir.path().join("status.json");
    let wait_for = |what: &str, check: &dyn Fn(&serde_json::Value) -> bool| {
        wait_for_status(&status_path, LONG, what, check)
    };
    let shown = |s: &serde_json::Value| s["frames_shown"].as_u64().unwrap_or(0);
    wait_for("frames", &|s| shown(s) > 0);
    let hangup = || {
        crate::util::signal(child.id(), Signal::SIGHUP);
    };

    // A bad file: every problem logged with file and line; the display runs on at 20 fps.
    std::fs::write(&config, "[display]\nfps = 500.0\nfit = \"zoom\"\n").expect("config");
    hangup();
    let log = dir.path().join("dreamframe.log");
    crate::util::poll_until("reload_rejected in the log", LONG, || {
        std::fs::read_to_string(&log).is_ok_and(|text| text.contains("reload_rejected"))
    });
    // Frames shown since the rejection, still at 20 fps.
    let rejected_at = shown(&read_status(&status_path));
    let status = wait_for("frames after the rejection", &|s| shown(s) > rejected_at);
    assert_eq!(status["target_fps"], 20.0, "{status}");

    // A good one: fps and schedule apply at once.
    std::fs::write(
        &config,
        format!("{first}[[schedule.periods]]\nfrom = \"00:00\"\nto = \"23:59\"\naction = \"dim\"\nbrightness = 0.5\n")
            .replace("fps = 20.0", "fps = 10.0"),
    )
    .expect("config");
    hangup();
    let status = wait_for("the reload", &|s| s["target_fps"] == 10.0);
    crate::util::signal(child.id(), Signal::SIGTERM);
    let exit = wait_with_timeout(&mut child, Duration::from_secs(30));
    assert!(exit.success(), "{exit:?}");
    let log = std::fs::read_to_string(dir.path().join("dreamframe.log")).expect("log");
    let rejected = log
        .lines()
        .find(|l| l.contains("reload_rejected"))
        .unwrap_or_else(|| panic!("no reload_rejected line:\n{log}"));
    // The problems, read back as the analyzer reads the line (quotes inside are escaped).
    let error = dreamframe::events::parse::parse_line(rejected)
        .and_then(|line| dreamframe::events::ReloadRejected::read(&line.fields))
        .unwrap_or_else(|| panic!("not a reload_rejected event: {rejected}"))
        .error;
    assert!(
        error.contains("dreamframe.toml:2:7: display.fps = 500.0: out of range, allowed 1 to 240")
            && error.contains("dreamframe.toml:3:7: display.fit = \"zoom\"")
            && rejected.contains("the running config stays"),
        "{rejected}"
    );
    assert!(log.contains("reload applied=true fps=10"), "{log}");
    // 23:59 to 00:00 is the one minute the period leaves out.
    if status["schedule"].is_string() {
        assert!(
            log.contains("schedule action=\"dim 0.50 00:00-23:59\""),
            "{log}"
        );
    }
}

#[test]
fn a_full_disk_under_the_log_does_not_stop_the_display() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Every write to /dev/full fails with ENOSPC, as on a full disk.
    std::os::unix::fs::symlink("/dev/full", dir.path().join("dreamframe.log")).expect("symlink");
    let (mut command, _) = null_run_with_config(
        dir.path(),
        "300",
        "[display]\nfps = 20.0\nrealtime = false\n[buffer]\nstart-seconds = 0.3\n[output]\nstatus-seconds = 0.25\n",
    );
    let stderr_path = dir.path().join("stderr");
    command
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"));
    // Until 20 frames have been shown while playing, however long the first transition takes.
    let status_path = dir.path().join("status.json");
    run_until(command, "20 frames shown while playing", || {
        crate::util::status_json(&status_path)
            .is_some_and(|s| s["frames_shown_playing"].as_u64() >= Some(20))
    });
    let status = read_status(&status_path);
    assert!(
        status["frames_shown_playing"].as_u64().unwrap_or(0) >= 20,
        "the display kept going: {status}"
    );
    // The log still reaches stderr (journald under systemd).
    let stderr = std::fs::read_to_string(&stderr_path).expect("stderr");
    assert!(stderr.contains("stopped frames_shown="), "{stderr}");
}

/// `dreamframe status` on a real run: the summary, --json, --picture and --watch while it runs,
/// "not running" (exit 3) once it has stopped.
#[test]
fn status_reports_a_running_display_and_says_when_it_is_not() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut child, out) = small_display(dir.path());
    wait_for_status(
        &out.join("status.json"),
        Duration::from_secs(120),
        "a frame on screen",
        |s| s["frames_shown"].as_u64() > Some(0),
    );
    crate::util::poll_until("snapshot.png", LONG, || out.join("snapshot.png").exists());
    let status = |args: &[&str]| {
        let output = binary()
            .arg("status")
            .args(["--output-dir"])
            .arg(&out)
            .args(args)
            .env("COLUMNS", "40")
            .env("LINES", "12")
            .output()
            .expect("status runs");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).to_string(),
        )
    };
    let (code, text) = status(&[]);
    assert_eq!(code, Some(0), "{text}");
    let pid = child.id();
    assert!(
        text.starts_with(&format!("dreamframe: running (PID {pid}); ")),
        "{text}"
    );
    for expected in [
        "  fps        ",
        " of 30 target",
        "  buffer     [",
        "  generator  cppn",
        "  keyframes  ",
        "  frames     ",
        "  errors     generator 0; re-anchors ",
        "  uptime     ",
        "  screen     null 1920x1080 from 32x18",
        &format!("  log        {}", out.join("dreamframe.log").display()),
        &format!("  snapshot   {}", out.join("snapshot.png").display()),
    ] {
        assert!(text.contains(expected), "{expected:?} in\n{text}");
    }
    let (code, json) = status(&["--json"]);
    assert_eq!(code, Some(0));
    let parsed: serde_json::Value = serde_json::from_str(&json).expect("--json prints JSON");
    assert_eq!(parsed["pid"].as_u64(), Some(pid as u64));
    let (code, picture) = status(&["--picture"]);
    assert_eq!(code, Some(0));
    // 12 lines: 11 rows of half blocks, 40 cells each, then the summary.
    let rows: Vec<&str> = picture.lines().take_while(|l| l.contains('▀')).collect();
    assert_eq!(rows.len(), 11, "{picture}");
    assert!(rows.iter().all(|row| row.matches('▀').count() == 40));
    assert!(picture.contains("dreamframe: running"));

    let mut watch = binary()
        .args(["status", "--watch", "--interval", "0.2", "--output-dir"])
        .arg(&out)
        .stdout(Stdio::piped())
        .spawn()
        .expect("status --watch starts");
    // Redraws every 0.2 s: read until two have come, however loaded the machine.
    let mut stdout = watch.stdout.take().expect("piped stdout");
    let output = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let reader = {
        let output = std::sync::Arc::clone(&output);
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = stdout.read(&mut chunk) {
                output
                    .lock()
                    .expect("output")
                    .extend_from_slice(&chunk[..n]);
            }
        })
    };
    let redraws = || {
        let output = output.lock().expect("output");
        String::from_utf8_lossy(&output)
            .matches("dreamframe: running")
            .count()
    };
    let _ = poll(LONG, || (redraws() >= 2).then_some(()));
    watch.kill().expect("stop --watch");
    let _ = watch.wait();
    reader.join().expect("reader");
    let watched = String::from_utf8_lossy(&output.lock().expect("output")).into_owned();
    assert!(
        watched.matches("dreamframe: running").count() >= 2,
        "{watched}"
    );

    crate::util::signal(pid, Signal::SIGTERM);
    assert!(wait_with_timeout(&mut child, Duration::from_secs(30)).success());
    let (code, text) = status(&[]);
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("NOT RUNNING: no process holds"), "{text}");
    let (code, _) = status(&["--watch", "--interval", "0"]);
    assert_eq!(code, Some(2), "--interval out of range is refused");
}

#[test]
fn the_gallery_writes_each_keyframe_and_a_contact_sheet_replacing_a_fifo() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("gallery");
    std::fs::create_dir(&out).unwrap();
    // A FIFO where a picture goes would block a writer that opened it: it is replaced instead.
    crate::util::mkfifo(&out.join("warp-5-2.png"));
    let output = binary()
        .args(["gallery", "--out"])
        .arg(&out)
        .args([
            "--seed",
            "5",
            "--seeds",
            "2",
            "--keyframes",
            "2",
            "--every",
            "2",
        ])
        .output()
        .expect("run the gallery");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("wrote 12 keyframes"), "{stdout}");
    // Each style at its own size.
    for (style, size) in [
        ("cppn", (256, 144)),
        ("warp", (384, 216)),
        ("flame", (384, 216)),
    ] {
        for seed in [5, 6] {
            for index in [0, 2] {
                let path = out.join(format!("{style}-{seed}-{index}.png"));
                let picture = image::open(&path)
                    .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
                assert_eq!((picture.width(), picture.height()), size);
            }
        }
    }
    // Six rows (three styles, two seeds) of two pictures in cells of the largest, 4 pixels
    // apart.
    let sheet = image::open(out.join("contact-sheet.png")).unwrap();
    assert_eq!(
        (sheet.width(), sheet.height()),
        (4 + 2 * (384 + 4), 4 + 6 * (216 + 4))
    );

    // A file where the folder should be is named.
    let blocked = dir.path().join("file");
    std::fs::write(&blocked, "").unwrap();
    let output = binary()
        .args(["gallery", "--out"])
        .arg(&blocked)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("gallery folder") && stderr.contains(&*blocked.to_string_lossy()),
        "{stderr}"
    );
}
