//! The real binary: a run into the null sink checked through status.json, snapshots and the
//! log; the terminal restored on SIGTERM and SIGINT; a clear error without a framebuffer.

use std::io::Read;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::util::binary;

fn wait_with_timeout(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait on child") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("dreamframe did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

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
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = crate::util::status_json(path).filter(|s| check(s)) {
            return status;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
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
    // However slow this machine is: bounded, so a snapshot that never comes fails.
    let started = Instant::now();
    let snapshot = out.join("snapshot.png");
    while !snapshot.exists() && started.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
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
            "--duration",
            "7",
            "--seed",
            "3",
            "--output-dir",
        ])
        .arg(&out)
        .stderr(Stdio::null())
        .spawn()
        .expect("binary starts");
    std::thread::sleep(Duration::from_millis(3000));
    let first_snapshot = std::fs::read(out.join("snapshot.png")).expect("a snapshot after 3 s");
    std::thread::sleep(Duration::from_millis(2500));
    let second_snapshot = std::fs::read(out.join("snapshot.png")).expect("snapshot still there");
    let running = read_status(&out.join("status.json"));
    let exit = wait_with_timeout(&mut child, Duration::from_secs(20));
    assert!(exit.success(), "{exit:?}");

    assert_ne!(
        first_snapshot, second_snapshot,
        "the picture must change between snapshots"
    );
    for field in STATUS_FIELDS {
        assert!(
            running.get(field).is_some(),
            "status.json lacks {field}: {running}"
        );
    }
    // Playing (or, on a machine too busy to keep up, playing through an underrun): never
    // still buffering after 5 s.
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

fn stop_terminal_run_with(signal: libc::c_int) {
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
    // SAFETY: plain kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, signal) }, 0);
    let exit = wait_with_timeout(&mut child, Duration::from_secs(10));
    assert!(exit.success(), "signal {signal}: {exit:?}");
    let output = String::from_utf8(reader.join().expect("reader")).expect("utf-8 output");
    assert!(
        output.starts_with(dreamframe::sink::terminal::ENTER),
        "terminal not taken over"
    );
    assert!(output.contains('▀'), "no frame was drawn");
    assert!(
        output.ends_with(dreamframe::sink::terminal::RESTORE),
        "terminal not restored after signal {signal}"
    );
}

#[test]
fn sigterm_restores_the_terminal() {
    stop_terminal_run_with(libc::SIGTERM);
}

#[test]
fn sigint_restores_the_terminal() {
    stop_terminal_run_with(libc::SIGINT);
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
            // SAFETY: plain kill(2) on our own child.
            assert_eq!(
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) },
                0
            );
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
        "4",
        "[display]\nfps = 100.0\nrealtime = false\n[buffer]\nstart-seconds = 0.1\n[interpolation]\nframes-per-transition = 1\n[log]\nmax-kilobytes = 4\nfiles = 2\n",
    );
    let status = run.stderr(Stdio::null()).status().expect("binary runs");
    assert!(status.success());
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
    let run = || {
        let status = null_run_with_config(dir.path(), "3", config)
            .0
            .stderr(Stdio::null())
            .status()
            .expect("binary runs");
        assert!(status.success());
        read_status(&dir.path().join("status.json"))
    };
    let first = run();
    let saved: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("resume.json")).expect("resume.json saved"),
    )
    .unwrap();
    let next_index = saved["next_index"].as_u64().unwrap();
    assert!(next_index >= 4, "{saved}");
    assert_eq!(saved["seed"], first["seed"], "the saved walk is this run's");

    let second = run();
    assert_eq!(second["seed"], first["seed"], "the seed carries over");
    let log = std::fs::read_to_string(dir.path().join("dreamframe.log")).unwrap();
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
    let (mut run, config) = null_run_with_config(dir.path(), "12", first);
    let mut child = run.spawn().expect("binary starts");
    let status_path = dir.path().join("status.json");
    let wait_for = |what: &str, check: &dyn Fn(&serde_json::Value) -> bool| {
        wait_for_status(&status_path, Duration::from_secs(8), what, check)
    };
    wait_for("frames", &|s| s["frames_shown"].as_u64().unwrap_or(0) > 0);
    let hangup = || {
        // SAFETY: signalling our own child by pid.
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGHUP) }, 0);
    };

    // A bad file: every problem logged with file and line; the display runs on at 20 fps.
    std::fs::write(&config, "[display]\nfps = 500.0\nfit = \"zoom\"\n").expect("config");
    hangup();
    std::thread::sleep(Duration::from_millis(800));
    let status = wait_for("still running", &|s| s["target_fps"] == 20.0);
    assert!(status["frames_shown"].as_u64().unwrap_or(0) > 0);

    // A good one: fps and schedule apply at once.
    std::fs::write(
        &config,
        format!("{first}[[schedule.periods]]\nfrom = \"00:00\"\nto = \"23:59\"\naction = \"dim\"\nbrightness = 0.5\n")
            .replace("fps = 20.0", "fps = 10.0"),
    )
    .expect("config");
    hangup();
    let status = wait_for("the reload", &|s| s["target_fps"] == 10.0);
    let exit = wait_with_timeout(&mut child, Duration::from_secs(20));
    assert!(exit.success(), "{exit:?}");
    let log = std::fs::read_to_string(dir.path().join("dreamframe.log")).expect("log");
    let rejected = log
        .lines()
        .find(|l| l.contains("reload_rejected"))
        .unwrap_or_else(|| panic!("no reload_rejected line:\n{log}"));
    // The problems, read back as the analyzer reads the line (quotes inside are escaped).
    let error = dreamframe::analyze::parse_line(rejected)
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
    // Long enough for the first transition even while the other tests load both cores.
    let output = null_run_with_config(
        dir.path(),
        "8",
        "[display]\nfps = 20.0\nrealtime = false\n[buffer]\nstart-seconds = 0.3\n[output]\nstatus-seconds = 0.25\n",
    )
    .0
    .output()
        .expect("binary runs");
    assert!(output.status.success(), "{output:?}");
    let status = read_status(&dir.path().join("status.json"));
    assert!(
        status["frames_shown_playing"].as_u64().unwrap_or(0) >= 20,
        "the display kept going: {status}"
    );
    // The log still reaches stderr (journald under systemd).
    assert!(String::from_utf8_lossy(&output.stderr).contains("stopped frames_shown="));
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
    while !out.join("snapshot.png").exists() {
        std::thread::sleep(Duration::from_millis(50));
    }
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
    // Redraws every 0.2 s: two in 4 s even on a loaded machine.
    std::thread::sleep(Duration::from_secs(4));
    watch.kill().expect("stop --watch");
    let mut watched = String::new();
    watch
        .stdout
        .take()
        .expect("piped stdout")
        .read_to_string(&mut watched)
        .expect("read --watch output");
    let _ = watch.wait();
    assert!(
        watched.matches("dreamframe: running").count() >= 2,
        "{watched}"
    );

    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    assert!(wait_with_timeout(&mut child, Duration::from_secs(30)).success());
    let (code, text) = status(&[]);
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("NOT RUNNING: no process holds"), "{text}");
    let (code, _) = status(&["--watch", "--interval", "0"]);
    assert_eq!(code, Some(2), "--interval out of range is refused");
}
