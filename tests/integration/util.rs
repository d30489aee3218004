use std::path::PathBuf;

/// Says a check could not run here (a tool is missing) and passes, except under CI (`CI` set
/// and not "false" or "0"), where a skipped check fails: a green CI has run every check.
pub fn skip(what: &str, reason: &str) {
    use std::io::Write;
    assert!(
        !under_ci(std::env::var("CI").ok().as_deref()),
        "SKIPPED under CI=true fails: {what}: {reason} (install what it needs; see the README)"
    );
    // Straight to the file descriptor: the test harness captures eprintln! of passing tests.
    let _ = writeln!(std::io::stderr(), "SKIPPED: {what}: {reason}");
}

/// Whether `CI`'s value means a CI run.
fn under_ci(value: Option<&str>) -> bool {
    value.is_some_and(|v| !v.is_empty() && v != "false" && v != "0")
}

#[test]
fn ci_is_told_by_its_variable() {
    assert!(under_ci(Some("true")) && under_ci(Some("1")));
    assert!(!under_ci(None) && !under_ci(Some("")) && !under_ci(Some("false")));
}

pub fn data(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(path)
}

pub use dreamframe::testing::{poll, poll_until, poll_until_async, run_until, status_json};

/// The analyzer's binary: another package's (tools/dreamframe-analyze), so cargo gives no
/// CARGO_BIN_EXE for it; `cargo test` at the top builds both default members into one folder.
pub fn analyzer_binary() -> PathBuf {
    let path =
        std::path::Path::new(env!("CARGO_BIN_EXE_dreamframe")).with_file_name("dreamframe-analyze");
    assert!(
        path.is_file(),
        "{} is not built: run `cargo test` at the top of the workspace, which builds both binaries",
        path.display()
    );
    path
}

pub fn binary() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_dreamframe"))
}

/// Tests that judge pacing by the wall clock hold this shared; the QEMU machines (TCG keeps a core
/// flat out for ~20 s each) hold it alone. So our own suite never starves the pacer it measures;
/// other load on the machine is what the pacer itself must cope with.
static CPU_HOGS: std::sync::RwLock<()> = std::sync::RwLock::new(());

pub fn pacing_test() -> std::sync::RwLockReadGuard<'static, ()> {
    CPU_HOGS
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub fn cpu_hog() -> std::sync::RwLockWriteGuard<'static, ()> {
    CPU_HOGS
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Sends `signal` to the process `pid` (our own child), failing the test if it can't.
pub fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("a pid"));
    nix::sys::signal::kill(pid, signal)
        .unwrap_or_else(|error| panic!("kill {pid} {signal}: {error}"));
}

/// Makes a FIFO at `path` (mode 0600).
pub fn mkfifo(path: &std::path::Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .unwrap_or_else(|error| panic!("mkfifo {}: {error}", path.display()));
}

/// What a child does between fork and exec, before the display starts.
#[derive(Debug, Clone, Copy)]
pub enum BeforeExec {
    /// Starts with SIGTERM blocked (the mask is inherited across exec), so a SIGTERM sent at
    /// once waits until the display has its handlers and unblocks it.
    BlockSigterm,
    /// As on a full disk: no write into a file may grow it (RLIMIT_FSIZE 0, SIGXFSZ ignored so
    /// the write fails with EFBIG instead of killing).
    NoRoomForFiles,
}

/// Has `command`'s child do `what` before exec. The suite's only `unsafe`: `pre_exec` runs its
/// closure between fork and exec, where only async-signal-safe calls may be made.
#[allow(unsafe_code)]
pub fn before_exec(command: &mut std::process::Command, what: BeforeExec) {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal};
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure makes only async-signal-safe calls (sigprocmask, setrlimit, signal),
    // allocates nothing and touches no lock.
    unsafe {
        command.pre_exec(move || {
            match what {
                BeforeExec::BlockSigterm => {
                    let mut set = SigSet::empty();
                    set.add(Signal::SIGTERM);
                    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None)?;
                }
                BeforeExec::NoRoomForFiles => {
                    libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                    nix::sys::resource::setrlimit(
                        nix::sys::resource::Resource::RLIMIT_FSIZE,
                        0,
                        libc::RLIM_INFINITY,
                    )?;
                }
            }
            Ok(())
        });
    }
}
