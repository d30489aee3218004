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

/// status.json as it is now, if it is there and whole.
pub fn status_json(path: &std::path::Path) -> Option<serde_json::Value> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
}

/// The real `run` on a fresh single-threaded runtime until `script` ends.
pub fn run_until<F: std::future::Future<Output = ()>>(
    config: dreamframe::config::Config,
    sink: Box<dyn dreamframe::sink::Sink>,
    generator: Box<dyn dreamframe::generator::Generator>,
    script: F,
) -> anyhow::Result<dreamframe::service::status::Status> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(dreamframe::run(config, sink, generator, 9, script))
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
