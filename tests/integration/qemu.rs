//! End to end on real framebuffers: Debian's kernel boots under qemu-system-x86_64 (TCG) with this
//! build's dreamframe, busybox and a shell loop in an initramfs, once on bochs DRM (fbdev
//! emulation, 32 bpp XRGB, shadow buffer) and once on vesafb (direct video memory, 16 bpp
//! RGB565, picture turned 90 degrees). The host drives the guest over the serial line and takes
//! screendumps over the QEMU monitor, checking that:
//! - the probe reports the device (driver, bpp, channel layout, flush method) and the console is
//!   in text mode before and after;
//! - the test pattern is on screen pixel for pixel as the renderer makes it for that format (so
//!   colours, rotation and placement are right), while console text and kernel messages are
//!   written to the VT and the cursor would blink: any console damage is a mismatch;
//! - a second player is refused while the first holds the screen;
//! - the built-in generator's art is on screen (not black) and changes between dumps;
//! - after SIGTERM the exit is clean, the VT is back in text mode and the console shows again.
//!
//! A third machine has QEMU's bochs-display for the drm sink (KMS page flips): the probe lists
//! the card, its connected connector's modes and a primary plane taking XR24; the test pattern is
//! on screen pixel for pixel; every frame shown is one flip; a second player is refused and the
//! probe sees master held; the art moves and keeps going across the cable forced off and back
//! (sysfs connector status); the schedule's blank, by a reload, powers the connector down (its
//! sysfs DPMS state reads Off) and up again; SIGTERM gives the console back. `bench_display` (ignored) runs
//! `dreamframe bench-display` there for the figures.
//!
//! QEMU, the kernel and busybox come from Debian with `apt-get download` into a cache
//! ($DREAMFRAME_QEMU_CACHE, default ~/.cache/dreamframe-qemu), unpacked with `dpkg-deb -x`:
//! installing qemu-system-x86 with apt would remove this machine's qemu-utils. Where QEMU can't be
//! fetched or run at all the test says SKIPPED on stderr (uncaptured) and passes, except under
//! `CI=true`, where it fails (`util::skip`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use dreamframe::config::{Fit, Rotation, UpscaleFilter};
use dreamframe::events::parse::parse_fields;
use dreamframe::testing::bars;
use dreamframe::testing::Renderer;
use dreamframe::Frame;
use dreamframe::Geometry;
use dreamframe::{testing::Channel, PixelFormat};

/// Debian bookworm's QEMU 7.2 and what its binary links that this machine lacks.
const PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "qemu-system-common",
    "qemu-system-data",
    "seabios",
    "busybox-static",
    "libcapstone4",
    "libfdt1",
    "libpmem1",
    "librdmacm1",
    "libibverbs1",
    "libslirp0",
    "libvdeplug2",
    "libndctl6",
    "libdaxctl1",
    "libnl-3-200",
    "libnl-route-3-200",
];
/// The bochs DRM driver and what it needs, in load order.
pub(crate) const BOCHS_MODULES: &[&str] = &[
    "drm",
    "ttm",
    "drm_ttm_helper",
    "drm_kms_helper",
    "drm_vram_helper",
    "bochs",
];
pub(crate) const PATTERN_SIZE: (u32, u32) = (64, 36);
/// QEMU's bochs-display: the bochs KMS driver without the legacy VGA device.
pub(crate) const BOCHS_DISPLAY: &[&str] = &["-vga", "none", "-device", "bochs-display"];

fn skip(reason: &str) {
    crate::util::skip("framebuffer end-to-end test under QEMU", reason);
}

pub(crate) struct Toolchain {
    qemu: PathBuf,
    pub(crate) root: PathBuf,
    kernel: PathBuf,
    library_path: String,
}

pub(crate) fn run_quiet(command: &mut Command) -> Result<String, String> {
    let output = command.output().map_err(|e| format!("{command:?}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() && !path.is_symlink() {
            if let Some(found) = find_file(&path, name) {
                return Some(found);
            }
        } else if entry.file_name() == name {
            return Some(path);
        }
    }
    None
}

fn library_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut has_library = false;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() && !path.is_symlink() {
            library_dirs(&path, out);
        } else if entry.file_name().to_string_lossy().contains(".so") {
            has_library = true;
        }
    }
    if has_library {
        out.push(dir.to_path_buf());
    }
}

/// Downloads and unpacks the packages once; `Err` is the reason to skip.
fn fetch(cache: &Path) -> Result<PathBuf, String> {
    let root = cache.join("root");
    if root.join(".complete").exists() {
        return Ok(root);
    }
    let debs = cache.join("debs");
    std::fs::create_dir_all(&debs).map_err(|e| format!("cannot create {}: {e}", debs.display()))?;
    let depends = run_quiet(Command::new("apt-cache").args(["depends", "linux-image-amd64"]))?;
    let kernel_package = depends
        .lines()
        .find_map(|line| line.trim().strip_prefix("Depends: linux-image-"))
        .map(|rest| format!("linux-image-{rest}"))
        .ok_or("apt-cache names no kernel package for linux-image-amd64")?;
    run_quiet(
        Command::new("apt-get")
            .arg("download")
            .args(PACKAGES)
            .arg(&kernel_package)
            .current_dir(&debs),
    )?;
    let staging = cache.join("root.partial");
    let _ = std::fs::remove_dir_all(&staging);
    for deb in std::fs::read_dir(&debs)
        .map_err(|e| e.to_string())?
        .flatten()
    {
        run_quiet(
            Command::new("dpkg-deb")
                .arg("-x")
                .arg(deb.path())
                .arg(&staging),
        )?;
    }
    std::fs::write(staging.join(".complete"), b"").map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&root);
    std::fs::rename(&staging, &root).map_err(|e| e.to_string())?;
    Ok(root)
}

pub(crate) fn toolchain() -> &'static Result<Toolchain, String> {
    static TOOLCHAIN: OnceLock<Result<Toolchain, String>> = OnceLock::new();
    TOOLCHAIN.get_or_init(|| {
        let cache = std::env::var_os("DREAMFRAME_QEMU_CACHE")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/dreamframe-qemu"))
            })
            .ok_or("neither DREAMFRAME_QEMU_CACHE nor HOME is set")?;
        let root = fetch(&cache)?;
        let qemu = root.join("usr/bin/qemu-system-x86_64");
        let kernel = std::fs::read_dir(root.join("boot"))
            .map_err(|e| e.to_string())?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
            })
            .ok_or("no vmlinuz in the kernel package")?;
        let mut dirs = Vec::new();
        library_dirs(&root, &mut dirs);
        let library_path = std::env::join_paths(&dirs)
            .map_err(|e| e.to_string())?
            .to_string_lossy()
            .into_owned();
        let toolchain = Toolchain {
            qemu,
            root,
            kernel,
            library_path,
        };
        let version = run_quiet(toolchain.command().arg("--version"))
            .map_err(|e| format!("qemu cannot run here: {e}"))?;
        if !version.contains("QEMU emulator") {
            return Err(format!("unexpected qemu --version: {version}"));
        }
        Ok(toolchain)
    })
}

impl Toolchain {
    fn command(&self) -> Command {
        let mut command = Command::new(&self.qemu);
        command
            .env("LD_LIBRARY_PATH", &self.library_path)
            .env(
                "QEMU_MODULE_DIR",
                self.root.join("usr/lib/x86_64-linux-gnu/qemu"),
            )
            .arg("-L")
            .arg(self.root.join("usr/share/seabios"))
            .arg("-L")
            .arg(self.root.join("usr/share/qemu"));
        command
    }

    pub(crate) fn module(&self, name: &str) -> PathBuf {
        find_file(&self.root.join("lib/modules"), &format!("{name}.ko"))
            .unwrap_or_else(|| panic!("kernel module {name}.ko is not in the kernel package"))
    }
}

/// A newc cpio archive, what the kernel unpacks as its initramfs.
#[derive(Default)]
pub(crate) struct Cpio {
    data: Vec<u8>,
    inode: u32,
}

impl Cpio {
    pub(crate) fn entry(&mut self, name: &str, mode: u32, body: &[u8]) {
        self.inode += 1;
        let name_bytes = name.len() + 1;
        let fields = [
            self.inode,
            mode,
            0,
            0,
            1,
            0,
            body.len() as u32,
            0,
            0,
            0,
            0,
            name_bytes as u32,
            0,
        ];
        self.data.extend_from_slice(b"070701");
        for field in fields {
            self.data
                .extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.data.extend_from_slice(name.as_bytes());
        self.data.push(0);
        self.pad();
        self.data.extend_from_slice(body);
        self.pad();
    }

    fn pad(&mut self) {
        while self.data.len() % 4 != 0 {
            self.data.push(0);
        }
    }

    pub(crate) fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, &[]);
    }

    pub(crate) fn file(&mut self, name: &str, source: &Path, mode: u32) {
        let body = std::fs::read(source)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", source.display()));
        self.entry(name, mode, &body);
    }

    pub(crate) fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        self.data
    }
}

const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
MODULES
i=0; while [ ! -e /dev/fb0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
stty -echo
echo "@@ready"
while read -r line; do eval "$line"; echo "@@done $?"; done
"#;

pub(crate) fn config(kind: &str, rotation: u32, extra: &str) -> String {
    format!(
        r#"[display]
sink = "fbdev"
fps = 5.0
fit = "fit"
rotation = {rotation}
upscale-filter = "nearest"
console = "/dev/tty1"

[model]
kind = "{kind}"
width = {}
height = {}

[interpolation]
frames-per-transition = 10

[decode]
batch-size = 5

[buffer]
seconds = 4.0
start-seconds = 1.0
resume-seconds = 0.5

[output]
status-seconds = 1.0
resume = false

[log]
file = ""
{extra}"#,
        PATTERN_SIZE.0, PATTERN_SIZE.1
    )
}

/// The initramfs: busybox, the binary (stripped: the test profile's carries debug info) and the
/// libraries it links, the modules, the init loop and two configs.
fn initramfs(toolchain: &Toolchain, modules: &[&str], rotation: u32, dir: &Path) -> PathBuf {
    let binary = dir.join("dreamframe");
    let stripped = Command::new("strip")
        .arg("-o")
        .arg(&binary)
        .arg(env!("CARGO_BIN_EXE_dreamframe"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !stripped {
        std::fs::copy(env!("CARGO_BIN_EXE_dreamframe"), &binary).expect("copy the binary");
    }
    let mut cpio = Cpio::default();
    for d in [
        "bin", "dev", "proc", "sys", "run", "tmp", "mods", "lib", "lib64", "usr", "usr/lib",
    ] {
        cpio.dir(d);
    }
    cpio.file("bin/busybox", &toolchain.root.join("bin/busybox"), 0o100755);
    cpio.file("dreamframe", &binary, 0o100755);
    let ldd = run_quiet(Command::new("ldd").arg(&binary)).expect("ldd of the binary");
    let mut made = std::collections::BTreeSet::new();
    for library in ldd.lines().filter_map(|line| {
        line.split_whitespace()
            .find(|word| word.starts_with('/'))
            .map(PathBuf::from)
    }) {
        let name = library
            .to_string_lossy()
            .trim_start_matches('/')
            .to_string();
        let mut parent = Path::new(&name).parent();
        let mut parents = Vec::new();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            parents.push(p.to_string_lossy().into_owned());
            parent = p.parent();
        }
        for p in parents.into_iter().rev() {
            if made.insert(p.clone()) && !["lib", "lib64", "usr", "usr/lib"].contains(&p.as_str()) {
                cpio.dir(&p);
            }
        }
        // Resolved through symlinks: the archive holds plain files.
        let real = std::fs::canonicalize(&library).expect("library path");
        cpio.file(&name, &real, 0o100755);
    }
    let mut loads = String::new();
    for module in modules {
        cpio.file(
            &format!("mods/{module}.ko"),
            &toolchain.module(module),
            0o100644,
        );
        // Two pages of virtual height, so the pan probe has a second page to try.
        let parameters = if *module == "drm_kms_helper" {
            " drm_fbdev_overalloc=200"
        } else {
            ""
        };
        loads.push_str(&format!("insmod /mods/{module}.ko{parameters}\n"));
    }
    cpio.entry(
        "init",
        0o100755,
        INIT.replace("MODULES\n", &loads).as_bytes(),
    );
    cpio.entry(
        "pattern.toml",
        0o100644,
        config("test-pattern", rotation, "").as_bytes(),
    );
    cpio.entry("art.toml", 0o100644, config("cppn", 0, "").as_bytes());
    let drm = |text: String| text.replace("sink = \"fbdev\"", "sink = \"drm\"");
    cpio.entry(
        "pattern-drm.toml",
        0o100644,
        drm(config("test-pattern", 0, "")).as_bytes(),
    );
    cpio.entry(
        "art-drm.toml",
        0o100644,
        drm(config("cppn", 0, "")).as_bytes(),
    );
    // The shipped config unchanged: it already names /dev/fb0 and the active VT.
    cpio.entry(
        "shipped.toml",
        0o100644,
        include_str!("../../config/dreamframe.toml").as_bytes(),
    );
    let path = dir.join("initramfs.cpio");
    std::fs::write(&path, cpio.finish()).expect("write the initramfs");
    path
}

pub(crate) struct Vm {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    transcript: Arc<Mutex<String>>,
    monitor: PathBuf,
    dir: PathBuf,
    dumps: u32,
}

/// A screendump: width, height, RGB8.
pub(crate) struct Picture {
    width: u32,
    height: u32,
    rgb: Vec<u8>,
}

impl Picture {
    fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let i = (y as usize * self.width as usize + x as usize) * 3;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }

    /// Share of pixels with any channel above 40.
    fn lit_share(&self) -> f64 {
        let lit = self
            .rgb
            .chunks_exact(3)
            .filter(|p| p.iter().any(|&c| c > 40))
            .count();
        lit as f64 / (self.width as f64 * self.height as f64)
    }

    fn mean_difference(&self, other: &Picture) -> f64 {
        let total: u64 = self
            .rgb
            .iter()
            .zip(&other.rgb)
            .map(|(&a, &b)| a.abs_diff(b) as u64)
            .sum();
        total as f64 / self.rgb.len() as f64
    }
}

fn parse_ppm(bytes: &[u8]) -> Option<Picture> {
    let mut fields = Vec::new();
    let mut at = 0;
    while fields.len() < 4 {
        while bytes.get(at)?.is_ascii_whitespace() {
            at += 1;
        }
        let start = at;
        while !bytes.get(at)?.is_ascii_whitespace() {
            at += 1;
        }
        fields.push(std::str::from_utf8(&bytes[start..at]).ok()?.to_string());
    }
    at += 1;
    let (width, height) = (fields[1].parse().ok()?, fields[2].parse().ok()?);
    let rgb = bytes
        .get(at..at + width as usize * height as usize * 3)?
        .to_vec();
    (fields[0] == "P6").then_some(Picture { width, height, rgb })
}

impl Vm {
    /// Boots the kernel on `initramfs` with `machine` (memory, processors, devices) and waits
    /// up to `ready_within` for the guest to say "@@ready" on the serial line.
    pub(crate) fn boot(
        toolchain: &Toolchain,
        name: &str,
        initramfs: &Path,
        append: &str,
        machine: &[&str],
        dir: &Path,
        ready_within: Duration,
    ) -> Vm {
        let monitor = dir.join("monitor.sock");
        let mut child = toolchain
            .command()
            .args(["-nic", "none", "-display", "none"])
            .args(machine)
            .args(["-serial", "stdio", "-no-reboot"])
            .arg("-monitor")
            .arg(format!("unix:{},server,nowait", monitor.display()))
            .arg("-kernel")
            .arg(&toolchain.kernel)
            .arg("-initrd")
            .arg(initramfs)
            .arg("-append")
            .arg(format!(
                "console=tty0 console=ttyS0 panic=-1 rdinit=/init {append}"
            ))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: cannot start qemu: {e}"));
        let stdin = child.stdin.take().expect("qemu stdin");
        let transcript = Arc::new(Mutex::new(String::new()));
        let (sender, lines) = channel();
        for stream in [
            Box::new(child.stdout.take().expect("qemu stdout")) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().expect("qemu stderr")),
        ] {
            let sender = sender.clone();
            let transcript = Arc::clone(&transcript);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let line = line.trim_end_matches('\r').to_string();
                    transcript
                        .lock()
                        .expect("transcript")
                        .push_str(&format!("{line}\n"));
                    let _ = sender.send(line);
                }
            });
        }
        let mut vm = Vm {
            child,
            stdin,
            lines,
            transcript,
            monitor,
            dir: dir.to_path_buf(),
            dumps: 0,
        };
        vm.wait_for("@@ready", ready_within);
        vm
    }

    pub(crate) fn fail(&self, message: &str) -> ! {
        panic!(
            "{message}\n--- guest transcript (serial console) ---\n{}\n--- files in {} ---",
            self.transcript.lock().expect("transcript"),
            self.dir.display()
        )
    }

    /// The lines before the one starting with `marker`, and that line.
    fn wait_for(&mut self, marker: &str, timeout: Duration) -> (Vec<String>, String) {
        let deadline = Instant::now() + timeout;
        let mut before = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(marker) => return (before, line),
                Ok(line) => before.push(line),
                Err(RecvTimeoutError::Timeout) => {
                    self.fail(&format!("no {marker:?} from the guest within {timeout:?}"))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.fail(&format!("qemu ended before {marker:?}"))
                }
            }
        }
    }

    /// Runs a shell line in the guest; returns its output lines and exit status.
    pub(crate) fn sh(&mut self, line: &str, timeout: Duration) -> (Vec<String>, i32) {
        writeln!(self.stdin, "{line}").expect("write to the guest");
        self.stdin.flush().expect("flush to the guest");
        let (output, done) = self.wait_for("@@done ", timeout);
        let status = done["@@done ".len()..].trim().parse().unwrap_or(-1);
        (output, status)
    }

    pub(crate) fn sh_ok(&mut self, line: &str, timeout: Duration) -> Vec<String> {
        let (output, status) = self.sh(line, timeout);
        if status != 0 {
            self.fail(&format!(
                "guest command failed ({status}): {line}\n{}",
                output.join("\n")
            ));
        }
        output
    }

    pub(crate) fn screendump(&mut self) -> Picture {
        self.dumps += 1;
        let path = self.dir.join(format!("dump{}.ppm", self.dumps));
        let mut monitor = UnixStream::connect(&self.monitor)
            .unwrap_or_else(|e| self.fail(&format!("cannot reach the qemu monitor: {e}")));
        monitor
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("monitor timeout");
        let mut reply = Vec::new();
        let read_until_prompt = |monitor: &mut UnixStream, reply: &mut Vec<u8>| {
            let mut chunk = [0u8; 4096];
            while !String::from_utf8_lossy(reply).ends_with("(qemu) ") {
                match monitor.read(&mut chunk) {
                    Ok(0) | Err(_) => return false,
                    Ok(n) => reply.extend_from_slice(&chunk[..n]),
                }
            }
            true
        };
        if !read_until_prompt(&mut monitor, &mut reply) {
            self.fail("no prompt from the qemu monitor");
        }
        reply.clear();
        writeln!(monitor, "screendump {}", path.display()).expect("monitor write");
        if !read_until_prompt(&mut monitor, &mut reply) {
            self.fail("screendump did not finish");
        }
        crate::util::poll(Duration::from_secs(30), || {
            std::fs::read(&path).ok().and_then(|b| parse_ppm(&b))
        })
        .unwrap_or_else(|| {
            self.fail(&format!(
                "no screendump at {}: {}",
                path.display(),
                String::from_utf8_lossy(&reply)
            ))
        })
    }

    /// Screendumps (half a second apart, each one kept) until `good` holds for one, at most
    /// `within`: the screen shows what the guest did when it gets to it. Returns the last.
    fn screen_until(&mut self, within: Duration, good: impl Fn(&Picture) -> bool) -> Picture {
        let deadline = Instant::now() + within;
        loop {
            let picture = self.screendump();
            if good(&picture) || Instant::now() >= deadline {
                return picture;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// Waits until the run writing to /run/`dir` has a frame on screen (its log printed if not).
fn wait_shown(dir: &str) -> String {
    format!(
        "i=0; until grep -q '\"frames_shown\": [1-9]' /run/{dir}/status.json 2>/dev/null; do \
         sleep 0.2; i=$((i+1)); [ $i -gt 300 ] && cat /run/{dir}.log && exit 1; done; true"
    )
}

pub(crate) const MINUTE: Duration = Duration::from_secs(60);

impl Vm {
    /// Starts the display on `/config` in the background, writing to /run/`dir`, and waits for
    /// its first frame on screen.
    fn start_display(&mut self, config: &str, dir: &str) {
        self.sh_ok(
            &format!(
                "/dreamframe --config /{config} --output-dir /run/{dir} >/run/{dir}.log 2>&1 & echo $! >/run/pid"
            ),
            MINUTE,
        );
        self.sh_ok(&wait_shown(dir), Duration::from_secs(90));
    }

    /// SIGTERM to the display started last: it must exit 0. Returns its final status.json
    /// (which has no final newline: `echo` keeps the end marker on a line of its own).
    fn stop_display(&mut self, dir: &str) -> String {
        let (output, status) = self.sh("kill -TERM $(cat /run/pid); wait $(cat /run/pid)", MINUTE);
        assert_eq!(status, 0, "{dir} run exit: {output:?}");
        self.sh_ok(&format!("cat /run/{dir}/status.json; echo"), MINUTE)
            .join("\n")
    }

    /// Console text and kernel messages written to the VT under a running display: any of it
    /// on screen is damage. The second after it is the console's chance to draw: an absence
    /// can't be polled for.
    pub(crate) fn scribble_on_console(&mut self) {
        self.sh_ok(
            "for i in 1 2 3 4 5 6; do echo \"console text must not show $i\" >/dev/tty1; \
             echo \"<2>kernel message must not show $i\" >/dev/kmsg; done; sleep 1",
            MINUTE,
        );
    }

    /// The art on screen is lit and changes over 3 s: two screendumps 3 s apart, both lit,
    /// that differ, within a minute (bounded only: a starved emulator may show a new picture
    /// only every few seconds); `Err` says how it falls short.
    fn art_moves(&mut self) -> Result<(), String> {
        self.dumps_differ(Instant::now(), MINUTE).map(|_| ())
    }

    /// The picture on screen moves, judged within `limit` of `started`: from half way there
    /// (the display has found its pace by then) a screendump every 3 s, until two in a row,
    /// both lit pictures, differ. On a starved emulator a new picture may come only every few
    /// seconds (rendering keeps to its share of the CPU, generation needs the rest), so one
    /// fixed pair of dumps could fall between two of them. `Err` says how it falls short.
    pub(crate) fn moves_within(
        &mut self,
        started: Instant,
        limit: Duration,
    ) -> Result<f64, String> {
        let half_way = (limit / 2).saturating_sub(started.elapsed());
        self.sh_ok(&format!("sleep {}", half_way.as_secs()), MINUTE);
        self.dumps_differ(started, limit)
    }

    /// A screendump every 3 s until two in a row, both lit pictures, differ; `Err` once past
    /// `limit` from `started`, saying how it falls short.
    fn dumps_differ(&mut self, started: Instant, limit: Duration) -> Result<f64, String> {
        let mut previous = self.screendump();
        let mut seen = Vec::new();
        loop {
            self.sh_ok("sleep 3", MINUTE);
            let later = self.screendump();
            let judged_after = started.elapsed();
            let (lit, lit_later) = (previous.lit_share(), later.lit_share());
            let moved = previous.mean_difference(&later);
            if judged_after > limit {
                return Err(format!(
                    "{judged_after:?} after start, no two screendumps 3 s apart differed (want the art to move within {limit:?}); lit shares and mean changes: {seen:?}"
                ));
            }
            if lit >= 0.5 && lit_later >= 0.5 && moved >= 1.0 {
                return Ok(moved);
            }
            seen.push(format!("{lit:.2}/{lit_later:.2}: {moved:.2}"));
            previous = later;
        }
    }

    /// After the display in /run/`dir` stopped: the log says the console was restored, `probe`
    /// (run as `probe`) finds text mode, and text written to the VT shows again.
    fn console_is_back(&mut self, dir: &str, probe: &str) -> Result<(), String> {
        let log = self
            .sh_ok(&format!("cat /run/{dir}.log"), MINUTE)
            .join("\n");
        assert!(
            log.contains("console path=/dev/tty1 mode=restored"),
            "{log}"
        );
        let after = self.sh_ok(probe, MINUTE);
        assert!(
            after
                .iter()
                .any(|l| l == "console path=/dev/tty1 mode=text"),
            "{after:?}"
        );
        self.sh_ok(
            "clear >/dev/tty1; for i in 1 2 3 4 5 6 7 8; do echo 'the console is back' >/dev/tty1; done",
            MINUTE,
        );
        let text_console = |p: &Picture| (0.001..0.2).contains(&p.lit_share());
        let console_lit = self
            .screen_until(Duration::from_secs(30), text_console)
            .lit_share();
        if !(0.001..0.2).contains(&console_lit) {
            return Err(format!(
                "after exit the screen should be the text console (a few lit pixels), lit share {console_lit:.3}"
            ));
        }
        Ok(())
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn channel_of(text: &str) -> Channel {
    let (offset, length) = text.split_once('/').expect("offset/length");
    Channel {
        offset: offset.parse().expect("offset"),
        length: length.parse().expect("length"),
    }
}

/// The screen as the probe describes it.
pub(crate) fn geometry_of(report: &BTreeMap<String, String>) -> Geometry {
    let number = |key: &str| -> u32 { report[key].parse().expect(key) };
    let format = PixelFormat::new(
        number("bpp"),
        channel_of(&report["red"]),
        channel_of(&report["green"]),
        channel_of(&report["blue"]),
        channel_of(&report["transp"]),
    );
    Geometry {
        width: number("width"),
        height: number("height"),
        stride: number("line_length") as usize,
        format,
    }
}

/// Pixels of the screendump that differ from what the renderer makes of the test pattern,
/// compared at the format's own channel depth.
pub(crate) fn pattern_mismatches(
    picture: &Picture,
    geometry: Geometry,
    rotation: Rotation,
) -> (usize, String) {
    let mut renderer = Renderer::new(
        geometry,
        PATTERN_SIZE,
        Fit::Fit,
        rotation,
        UpscaleFilter::Nearest,
    )
    .expect("renderer for the probed screen");
    let frame = Frame {
        seq: 0,
        width: PATTERN_SIZE.0,
        height: PATTERN_SIZE.1,
        rgb: bars(PATTERN_SIZE.0, PATTERN_SIZE.1),
        at: 0.0,
    };
    let mut expected = vec![0; geometry.frame_bytes()];
    renderer.clear(&mut expected);
    renderer
        .render(&frame, &mut expected)
        .expect("render the pattern");
    let format = geometry.format;
    let bpp = format.bytes_per_pixel();
    let depth = [format.red.length, format.green.length, format.blue.length];
    let mut mismatches = 0;
    let mut first = String::new();
    for y in 0..geometry.height {
        for x in 0..geometry.width {
            let at = y as usize * geometry.stride + x as usize * bpp;
            let want = format.unpack(&expected[at..at + bpp]);
            let got = picture.pixel(x, y);
            let same = (0..3).all(|c| want[c] >> (8 - depth[c]) == got[c] >> (8 - depth[c]));
            if !same {
                if mismatches == 0 {
                    first = format!("first at ({x}, {y}): expected {want:?}, screen {got:?}");
                }
                mismatches += 1;
            }
        }
    }
    (mismatches, first)
}

struct Case {
    name: &'static str,
    modules: &'static [&'static str],
    append: &'static str,
    rotation: u32,
    driver: &'static str,
    bpp: u32,
    flush: &'static str,
    /// Also run the shipped config/dreamframe.toml as it is.
    shipped: bool,
}

/// A guest booted on `video` with `modules` loaded (`rotation` for the pattern config) and
/// `append` on the kernel command line, and the folder of its files; `None`, after saying
/// SKIPPED, where QEMU can't be fetched or run.
fn boot_guest(
    name: &str,
    modules: &[&str],
    rotation: u32,
    append: &str,
    video: &[&str],
) -> Option<(Vm, tempfile::TempDir)> {
    let toolchain = match toolchain() {
        Ok(toolchain) => toolchain,
        Err(reason) => {
            skip(reason);
            return None;
        }
    };
    let dir = tempfile::Builder::new()
        .prefix(&format!("dreamframe-qemu-{name}-"))
        .tempdir()
        .expect("temp dir");
    let initramfs = initramfs(toolchain, modules, rotation, dir.path());
    let machine = [&["-m", "512", "-smp", "1"], video].concat();
    let vm = Vm::boot(
        toolchain,
        name,
        &initramfs,
        append,
        &machine,
        dir.path(),
        Duration::from_secs(90),
    );
    Some((vm, dir))
}

fn run_case(case: &Case) {
    let _alone = crate::util::cpu_hog();
    let started = Instant::now();
    let Some((mut vm, dir)) = boot_guest(
        case.name,
        case.modules,
        case.rotation,
        case.append,
        &["-vga", "std"],
    ) else {
        return;
    };

    // The probe, before anything runs.
    let probe = vm.sh_ok(
        "/dreamframe probe --framebuffer /dev/fb0 --console /dev/tty1",
        MINUTE,
    );
    let report_line = probe
        .iter()
        .find(|l| l.starts_with("framebuffer "))
        .unwrap_or_else(|| vm.fail("no framebuffer line from the probe"));
    let report = parse_fields(report_line);
    assert_eq!(report["driver"], case.driver, "{report_line}");
    assert_eq!(report["bpp"], case.bpp.to_string(), "{report_line}");
    assert_eq!(report["flush"], case.flush, "{report_line}");
    assert_eq!(report["buffering"], "single", "{report_line}");
    assert!(
        probe
            .iter()
            .any(|l| l == "console path=/dev/tty1 mode=text"),
        "{probe:?}"
    );
    let geometry = geometry_of(&report);
    if case.bpp == 16 {
        assert_eq!(geometry.format, PixelFormat::RGB565, "{report_line}");
    } else {
        assert_eq!(geometry.format, PixelFormat::XRGB8888, "{report_line}");
    }

    // The test pattern, with the console doing its worst underneath.
    vm.start_display("pattern.toml", "pattern");
    vm.scribble_on_console();
    let (second, _) = vm.sh(
        "/dreamframe probe --framebuffer /dev/fb0 --console /dev/tty1",
        MINUTE,
    );
    assert!(
        second
            .iter()
            .any(|l| l.contains("in use by another player")),
        "a second player must be refused: {second:?}"
    );
    assert!(
        second
            .iter()
            .any(|l| l == "console path=/dev/tty1 mode=graphics"),
        "{second:?}"
    );
    let rotation = match case.rotation {
        90 => Rotation::Clockwise90,
        180 => Rotation::Half,
        270 => Rotation::Clockwise270,
        _ => Rotation::None,
    };
    let pattern = vm.screendump();
    assert_eq!(
        (pattern.width, pattern.height),
        (geometry.width, geometry.height)
    );
    let (mismatches, first) = pattern_mismatches(&pattern, geometry, rotation);
    if mismatches != 0 {
        vm.fail(&format!(
            "{mismatches} pixels differ from the test pattern ({first}); dumps kept in {}",
            dir.keep().display()
        ));
    }
    vm.stop_display("pattern");

    // The shipped config as a user gets it: a picture within seconds, not after a whole
    // transition (90 frames at ~0.7 s each under TCG), and the art MOVING within 30 s: two
    // screendumps 3 s apart (from 15 s after start), both pictures, that differ.
    if case.shipped {
        let started = Instant::now();
        vm.start_display("shipped.toml", "shipped");
        let status = vm
            .sh_ok("cat /run/shipped/status.json; echo", MINUTE)
            .join("\n");
        let first_picture: f64 = status_number(&status, "first_picture_s")
            .unwrap_or_else(|| vm.fail(&format!("no first_picture_s in {status}")));
        let shipped = vm.screendump();
        let lit = shipped.lit_share();
        if lit < 0.5 || first_picture > 20.0 {
            vm.fail(&format!(
                "shipped config: first picture after {first_picture:.2} s (want within seconds), lit share {lit:.2}"
            ));
        }
        let motion = vm.moves_within(started, Duration::from_secs(30));
        let status = vm
            .sh_ok("cat /run/shipped/status.json; echo", MINUTE)
            .join("\n");
        let moved = match motion {
            Ok(moved) => moved,
            Err(problem) => vm.fail(&format!(
                "shipped config: {problem}; status {status}; dumps kept in {}",
                dir.keep().display()
            )),
        };
        let (output, exit) = vm.sh("kill -TERM $(cat /run/pid); wait $(cat /run/pid)", MINUTE);
        assert_eq!(exit, 0, "shipped run exit: {output:?}");
        let moves = vm.sh_ok(
            "grep -E ' (adapt|first_picture|playback|underrun) ' /run/shipped/dreamframe.log | head -n 12",
            MINUTE,
        );
        let _ = writeln!(
            std::io::stderr(),
            "qemu {}: shipped config, first picture after {first_picture:.2} s, first motion after {:?} s, mean change between dumps 3 s apart {moved:.1}, art speed {:?}, rung {:?}; its log:\n  {}",
            case.name,
            status_number::<f64>(&status, "first_motion_s"),
            status_number::<f64>(&status, "animation_speed"),
            status_number::<f64>(&status, "rung"),
            moves.join("\n  ")
        );
    }

    // The art: lit, and moving.
    vm.start_display("art.toml", "art");
    if let Err(problem) = vm.art_moves() {
        vm.fail(&format!(
            "{problem}; dumps kept in {}",
            dir.keep().display()
        ));
    }

    // SIGTERM: clean exit, text mode back, the console visible again.
    vm.stop_display("art");
    let probe = "/dreamframe probe --framebuffer /dev/fb0 --console /dev/tty1";
    if let Err(problem) = vm.console_is_back("art", probe) {
        vm.fail(&format!(
            "{problem}; dumps kept in {}",
            dir.keep().display()
        ));
    }
    let _ = writeln!(
        std::io::stderr(),
        "qemu {}: {} {}x{} {} bpp passed in {:.1} s",
        case.name,
        case.driver,
        geometry.width,
        geometry.height,
        case.bpp,
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn bochs_drm_32bpp_shows_the_art_and_restores_the_console() {
    run_case(&Case {
        name: "bochs",
        modules: BOCHS_MODULES,
        append: "",
        rotation: 0,
        driver: "bochs-drmdrmfb",
        bpp: 32,
        flush: "msync",
        shipped: true,
    });
}

#[test]
fn vesafb_rgb565_shows_the_art_turned_and_restores_the_console() {
    run_case(&Case {
        name: "vesafb",
        modules: &[],
        // VESA mode 0x314: 800x600, 16 bpp RGB565.
        append: "vga=0x314",
        rotation: 90,
        driver: "VESA VGA",
        bpp: 16,
        flush: "direct",
        shipped: false,
    });
}

/// A number field of a status.json the guest printed.
fn status_number<T: std::str::FromStr>(status: &str, key: &str) -> Option<T> {
    status
        .lines()
        .find_map(|l| l.trim().strip_prefix(&format!("\"{key}\": ")))
        .and_then(|v| v.trim_end_matches(',').parse().ok())
}

/// The drm sink on QEMU's bochs-display: the bochs KMS driver (the same one as the fbdev case's
/// standard VGA, without the legacy VGA device), whose dumb buffers QEMU scans out from video
/// memory, so a screendump shows exactly the buffer the last flip put up. (virtio-gpu would
/// need its host-side resource flush for that and a guest with virtio modules; bochs is already
/// the fbdev case's driver.) Bochs has no vblank interrupt: the kernel completes each flip when
/// the new buffer is programmed, so the timing figures are QEMU's, not a monitor's.
#[test]
fn bochs_kms_flips_the_pattern_and_the_art_and_gives_the_console_back() {
    let _alone = crate::util::cpu_hog();
    let started = Instant::now();
    let Some((mut vm, dir)) = boot_guest("kms", BOCHS_MODULES, 0, "", BOCHS_DISPLAY) else {
        return;
    };

    // The probe: the card, its connected connector with modes, a primary plane taking XR24.
    let probe = vm.sh_ok("/dreamframe probe --console /dev/tty1", MINUTE);
    let line = |prefix: &str, vm: &Vm| -> String {
        probe
            .iter()
            .find(|l| l.starts_with(prefix))
            .cloned()
            .unwrap_or_else(|| vm.fail(&format!("no {prefix:?} line from the probe: {probe:?}")))
    };
    let card = parse_fields(&line("drm_card ", &vm));
    assert_eq!(card["driver"], "bochs-drm", "{card:?}");
    assert_eq!(card["master"], "available", "{card:?}");
    let connector = parse_fields(&line("drm_connector ", &vm));
    assert_eq!(connector["status"], "connected", "{connector:?}");
    let plane = parse_fields(&line("drm_plane ", &vm));
    assert_eq!(plane["kind"], "primary", "{plane:?}");
    assert!(
        plane["formats"].split(',').any(|f| f == "XR24"),
        "{plane:?}"
    );
    let preferred = connector["modes"]
        .split(", ")
        .find_map(|m| m.strip_suffix(" (preferred)"))
        .unwrap_or_else(|| vm.fail(&format!("no preferred mode: {connector:?}")));
    let (width, height) = preferred
        .split('@')
        .next()
        .and_then(|size| size.split_once('x'))
        .map(|(w, h)| (w.parse().expect("width"), h.parse().expect("height")))
        .expect("WxH@R");
    let geometry = Geometry::packed(width, height, PixelFormat::XRGB8888);

    // Every frame shown went up by exactly one flip: the last one's completion may still have
    // been on its way when the pacer stopped.
    let check_flips = |vm: &mut Vm, status: &str, dir: &str| {
        let shown: u64 = status_number(status, "frames_shown").unwrap_or_default();
        let flips: u64 = status_number(status, "flips").unwrap_or_default();
        let missed: u64 = status_number(status, "flips_missed").unwrap_or(u64::MAX);
        if shown == 0 || flips + 1 < shown || flips > shown || missed > flips {
            let log = vm
                .sh_ok(
                    &format!("grep -v ' transition \\| keyframe ' /run/{dir}.log"),
                    MINUTE,
                )
                .join("\n");
            vm.fail(&format!(
                "frames shown {shown}, flips {flips}, missed {missed}: want one flip per frame\n{status}\n{log}"
            ));
        }
        assert!(
            status_number::<u32>(status, "refreshes_per_frame").is_some_and(|n| n >= 1),
            "{status}"
        );
    };

    // The test pattern, pixel for pixel, with the console written to underneath.
    vm.start_display("pattern-drm.toml", "pattern");
    vm.scribble_on_console();
    let (second, status) = vm.sh(
        "/dreamframe --config /pattern-drm.toml --output-dir /run/second --duration 5 2>&1",
        MINUTE,
    );
    assert_ne!(status, 0, "a second player must be refused: {second:?}");
    assert!(
        second
            .iter()
            .any(|l| l.contains("in use by another player")),
        "{second:?}"
    );
    let busy = vm.sh_ok("/dreamframe probe --console /dev/tty1", MINUTE);
    assert!(
        busy.iter()
            .any(|l| l.starts_with("drm_card ") && l.contains("master=\"held by another program")),
        "{busy:?}"
    );
    assert!(
        busy.iter()
            .any(|l| l == "console path=/dev/tty1 mode=graphics"),
        "{busy:?}"
    );
    let pattern = vm.screendump();
    assert_eq!((pattern.width, pattern.height), (width, height));
    let (mismatches, first) = pattern_mismatches(&pattern, geometry, Rotation::None);
    if mismatches != 0 {
        vm.fail(&format!(
            "{mismatches} pixels differ from the test pattern ({first}); dumps kept in {}",
            dir.keep().display()
        ));
    }
    let status = vm.stop_display("pattern");
    check_flips(&mut vm, &status, "pattern");

    // The art: lit and moving; the cable pulled and plugged in again on the way.
    vm.start_display("art-drm.toml", "art");
    if let Err(problem) = vm.art_moves() {
        vm.fail(&format!(
            "{problem}; dumps kept in {}",
            dir.keep().display()
        ));
    }
    // Each wait polls for what is checked after it (bounded, then the check says what failed).
    let unplugged_logged = "grep -q 'drm_hotplug .*connected=false' /run/art.log";
    vm.sh_ok(
        &format!(
            "for f in /sys/class/drm/card*-*/status; do echo off >$f; done; \
             i=0; until {unplugged_logged} || [ $i -ge 120 ]; do sleep 0.2; i=$((i+1)); done; \
             {unplugged_logged}"
        ),
        MINUTE,
    );
    let frames_shown = "grep -o '\"frames_shown\": [0-9]*' /run/art/status.json";
    let (unplugged, _) = vm.sh(frames_shown, MINUTE);
    let replugged_logged = "grep 'drm_hotplug .*connected=true' /run/art.log | grep -q mode=";
    vm.sh_ok(
        &format!(
            "for f in /sys/class/drm/card*-*/status; do echo detect >$f; done; \
             i=0; until {replugged_logged} || [ $i -ge 120 ]; do sleep 0.2; i=$((i+1)); done; \
             {replugged_logged}"
        ),
        MINUTE,
    );
    vm.sh(
        &format!(
            "i=0; while [ \"$({frames_shown})\" = '{}' ] && [ $i -lt 120 ]; do \
             sleep 0.2; i=$((i+1)); done",
            unplugged.join("")
        ),
        MINUTE,
    );
    let (replugged, _) = vm.sh(frames_shown, MINUTE);
    assert_ne!(
        unplugged, replugged,
        "the display must keep running across the hotplug"
    );
    let after_hotplug = vm.screen_until(Duration::from_secs(30), |p| p.lit_share() >= 0.5);
    assert!(
        after_hotplug.lit_share() >= 0.5,
        "art back after the hotplug"
    );

    // The night schedule's blank, by a reload: DPMS off through the connector, then on again.
    vm.sh_ok(
        "cp /art-drm.toml /run/art-drm.toml && printf '%s\\n' '[[schedule.periods]]' \
         'from = \"00:00\"' 'to = \"12:00\"' 'action = \"blank\"' '[[schedule.periods]]' \
         'from = \"12:00\"' 'to = \"00:00\"' 'action = \"blank\"' >>/art-drm.toml && \
         kill -HUP $(cat /run/pid) && i=0; \
         until grep -q 'screen blanked=true sink=drm' /run/art.log; do \
         sleep 0.2; i=$((i+1)); [ $i -gt 100 ] && exit 1; done; \
         i=0; until grep -qx Off /sys/class/drm/card0-*/dpms || [ $i -ge 50 ]; do \
         sleep 0.2; i=$((i+1)); done; true",
        MINUTE,
    );
    // QEMU's screendump keeps the last picture of a switched-off display: the connector's own
    // DPMS state says whether the screen is powered down.
    let dpms = |vm: &mut Vm| {
        vm.sh_ok("cat /sys/class/drm/card0-*/dpms", MINUTE)
            .join(",")
    };
    let blanked = dpms(&mut vm);
    vm.sh_ok(
        "cp /run/art-drm.toml /art-drm.toml && kill -HUP $(cat /run/pid) && i=0; \
         until grep -q 'screen blanked=false sink=drm' /run/art.log; do \
         sleep 0.2; i=$((i+1)); [ $i -gt 100 ] && exit 1; done; \
         i=0; until grep -qx On /sys/class/drm/card0-*/dpms || [ $i -ge 50 ]; do \
         sleep 0.2; i=$((i+1)); done; true",
        MINUTE,
    );
    let (failed, _) = vm.sh("grep screen_blank_failed /run/art.log", MINUTE);
    assert!(failed.is_empty(), "DPMS must work on bochs: {failed:?}");
    let unblanked = dpms(&mut vm);
    let art = vm
        .screen_until(Duration::from_secs(30), |p| p.lit_share() >= 0.5)
        .lit_share();
    if blanked != "Off" || unblanked != "On" || art < 0.5 {
        vm.fail(&format!(
            "blank: DPMS {blanked} while blanked (want Off), {unblanked} after (want On), lit share \
             {art:.3} after (want the art); dumps kept in {}",
            dir.keep().display()
        ));
    }
    let status = vm.stop_display("art");
    check_flips(&mut vm, &status, "art");

    // SIGTERM gave the screen back: text mode, and the console's own picture again.
    if let Err(problem) = vm.console_is_back("art", "/dreamframe probe --console /dev/tty1") {
        vm.fail(&format!(
            "{problem}; dumps kept in {}",
            dir.keep().display()
        ));
    }
    let _ = writeln!(
        std::io::stderr(),
        "qemu kms: bochs-drm {width}x{height} XR24 passed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// `dreamframe bench-display` under QEMU (bochs-display, TCG): the figures of issue 13's bench.
/// A harness, not a test: `cargo test --test integration qemu::bench_display -- --ignored
/// --nocapture`.
#[test]
#[ignore = "a benchmark run under QEMU; prints figures, asserts nothing about speed"]
fn bench_display() {
    let Some((mut vm, _dir)) = boot_guest("bench", BOCHS_MODULES, 0, "", BOCHS_DISPLAY) else {
        return;
    };
    let probe = vm.sh_ok("/dreamframe probe", Duration::from_secs(60));
    let _ = writeln!(std::io::stderr(), "{}", probe.join("\n"));
    let bench = "bench-display --seconds 20 --fps 30,60 --frames 200 2>/run/bench.err";
    let report = vm.sh_ok(
        &format!("/dreamframe --config /pattern-drm.toml {bench}"),
        Duration::from_secs(300),
    );
    let _ = writeln!(std::io::stderr(), "{}", report.join("\n"));
    // The preferred mode is 75 Hz: again on a 60 Hz mode, where 60 fps is one refresh a frame;
    // the largest one no bigger than the preferred (three buffers must fit bochs's 16 MiB).
    let modes: Vec<String> = probe
        .iter()
        .filter(|l| l.starts_with("drm_connector "))
        .flat_map(|l| parse_fields(l).get("modes").cloned())
        .flat_map(|modes| modes.split(", ").map(str::to_string).collect::<Vec<_>>())
        .collect();
    let area = |mode: &str| -> u64 {
        let size = mode.split('@').next().unwrap_or_default();
        let (w, h) = size.split_once('x').unwrap_or(("0", "0"));
        w.parse::<u64>().unwrap_or(0) * h.parse::<u64>().unwrap_or(0)
    };
    let preferred = modes
        .iter()
        .find(|m| m.ends_with(" (preferred)"))
        .map_or(u64::MAX, |m| area(m));
    let sixty = modes
        .iter()
        .filter(|m| m.ends_with("@60") && area(m) <= preferred)
        .max_by_key(|m| area(m));
    if let Some(mode) = sixty {
        let report = vm.sh_ok(
            &format!(
                "sed '/^\\[display\\]/a mode = \"{mode}\"' /pattern-drm.toml >/run/sixty.toml && \
                 /dreamframe --config /run/sixty.toml {bench} || {{ tail -n 3 /run/bench.err; exit 1; }}"
            ),
            Duration::from_secs(300),
        );
        let _ = writeln!(std::io::stderr(), "{}", report.join("\n"));
    }
}
