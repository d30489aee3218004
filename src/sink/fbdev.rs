//! The fbdev sink: frames copied into the mapped /dev/fbN, in the pixel format and stride the
//! device reports, with the console taken into graphics mode (see `console`).
//!
//! Inputs: screen buffers from the pacer thread, which owns this sink and calls `present` at each
//! deadline. Output: pixels on the framebuffer. At open the device is probed (`FramebufferReport`:
//! driver, sizes, channel layout, stride, whether panning and vsync work), logged and put in
//! status.json; the frame then goes out the tear-free way the device allows:
//! - a second page (yres_virtual >= 2*yres) whose pan is honoured: draw the hidden page, pan to it;
//! - a DRM fbdev emulation (id "...drmfb": bochs, i915, amdgpu, nvidia-drm, simpledrm): the
//!   mapping is a shadow buffer the kernel copies out ~50 ms after a write, and its pan is accepted
//!   but not shown, so draw and `msync` the page, which copies it out at once;
//! - direct video memory (vesafb, efifb): draw in place.
//!
//! Where FBIO_WAITFORVSYNC works, each frame waits for it first, on a helper thread with a
//! timeout: a vsync that never comes turns waiting off instead of freezing the display.
//!
//! An exclusive `flock` on the device keeps a second player off the same screen. Failures: open,
//! map, lock or an unsupported (non-truecolor) layout are errors naming the device and the fix;
//! a console that can't be taken is a warning (the art still shows, the cursor may blink over it).

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use framebuffer::{FixScreeninfo, Framebuffer, VarScreeninfo};
use memmap2::MmapMut;

use super::Sink;
use crate::console::ConsoleGuard;
use crate::frame::pixel_format::{Channel, PixelFormat};
use crate::frame::Geometry;

/// FB_VISUAL_TRUECOLOR from <linux/fb.h>.
const FB_VISUAL_TRUECOLOR: u32 = 2;
/// The first vsync must come within this long for waiting to be used at all.
const VSYNC_PROBE_TIMEOUT: Duration = Duration::from_millis(200);
/// Per frame: no display refreshes slower than 20 Hz.
const VSYNC_TIMEOUT: Duration = Duration::from_millis(50);
/// This many missed vsyncs in a row turn waiting off for the rest of the run.
const VSYNC_MISSES_TO_DISABLE: u32 = 3;

/// What the device is and how frames reach it; logged at start and put in status.json.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub(crate) struct FramebufferReport {
    pub path: String,
    /// The driver's id (fix.id): "bochsdrmfb", "VESA VGA", "EFI VGA", "i915drmfb", ...
    pub driver: String,
    pub width: u32,
    pub height: u32,
    pub virtual_width: u32,
    pub virtual_height: u32,
    pub bits_per_pixel: u32,
    pub red: Channel,
    pub green: Channel,
    pub blue: Channel,
    pub transp: Channel,
    pub line_length: u32,
    pub memory_bytes: u32,
    /// DRM fbdev emulation: the mapping is a shadow copy, flushed by msync after each frame.
    pub shadow_buffer: bool,
    /// The outcome of trying to pan to a second page.
    pub pan: String,
    /// The outcome of waiting for one vertical blank.
    pub vsync: String,
    /// "double (pan)" or "single".
    pub buffering: &'static str,
    /// How a drawn frame is made visible: "pan", "msync" or "direct".
    pub flush: &'static str,
}

impl FramebufferReport {
    /// The `framebuffer` log event (also what `dreamframe probe` prints).
    pub(crate) fn event(&self) -> crate::events::Framebuffer {
        crate::events::Framebuffer {
            path: self.path.clone(),
            driver: self.driver.clone(),
            width: self.width,
            height: self.height,
            virtual_width: self.virtual_width,
            virtual_height: self.virtual_height,
            bpp: self.bits_per_pixel,
            red: self.red.to_string(),
            green: self.green.to_string(),
            blue: self.blue.to_string(),
            transp: self.transp.to_string(),
            line_length: self.line_length,
            memory_bytes: self.memory_bytes,
            shadow_buffer: self.shadow_buffer,
            buffering: self.buffering.into(),
            flush: self.flush.into(),
            pan: self.pan.clone(),
            vsync: self.vsync.clone(),
        }
    }
}

fn open_hint(path: &Path, error: &std::io::Error) -> String {
    let path = path.display();
    match error.kind() {
        ErrorKind::PermissionDenied if crate::checked_fs::refused_by_device_policy(error) => format!(
            "cannot open framebuffer {path}: {error}: {}",
            crate::checked_fs::DEVICE_POLICY_HINT
        ),
        ErrorKind::PermissionDenied => format!(
            "cannot open framebuffer {path}: permission denied. Add this user to the `video` group \
             (`sudo usermod -aG video $USER`, then log in again), run as root, or watch the art in \
             this terminal with `--sink terminal`"
        ),
        ErrorKind::NotFound => format!(
            "cannot open framebuffer {path}: no such device. This machine has no framebuffer there \
             (no fbdev driver; on NVIDIA boot with `nvidia-drm.modeset=1 nvidia-drm.fbdev=1`), set \
             `display.framebuffer`, or watch the art in this terminal with `--sink terminal`"
        ),
        _ => format!("cannot open framebuffer {path}: {error}; `--sink terminal` shows the art in this terminal"),
    }
}

fn lock_exclusive(file: &File, path: &Path) -> anyhow::Result<()> {
    let lock = crate::sys::lock_exclusive(file)
        .with_context(|| format!("cannot lock framebuffer {}", path.display()))?;
    if lock == crate::sys::Lock::Held {
        bail!(
            "framebuffer {} is in use by another player (a second dreamframe?): only one may \
             draw on a screen; stop the other first (`systemctl stop dreamframe`)",
            path.display()
        );
    }
    Ok(())
}

/// FBIO_WAITFORVSYNC on a helper thread, so a wait that never returns costs a timeout, not the
/// display. The thread blocks in the ioctl; a stuck one is left behind and waiting turns off.
struct VsyncWaiter {
    request: SyncSender<()>,
    done: Receiver<std::io::Result<()>>,
    /// A request the thread has not answered yet (it is stuck in the kernel).
    outstanding: bool,
    misses: u32,
    enabled: bool,
}

impl VsyncWaiter {
    /// Starts the helper on the device's FBIO_WAITFORVSYNC and waits for one vsync; `Err` says
    /// why waiting won't be used.
    fn probe(file: &File) -> Result<(Self, Duration), String> {
        let file = file
            .try_clone()
            .map_err(|e| format!("not used: cannot duplicate the descriptor: {e}"))?;
        Self::probe_with(move || crate::sys::fb::wait_for_vsync(file.as_raw_fd()))
    }

    fn probe_with(
        mut wait: impl FnMut() -> std::io::Result<()> + Send + 'static,
    ) -> Result<(Self, Duration), String> {
        let (request, requests) = sync_channel::<()>(1);
        let (answer, done) = sync_channel(1);
        std::thread::Builder::new()
            .name("vsync".into())
            .spawn(move || {
                while requests.recv().is_ok() {
                    if answer.send(wait()).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| format!("not used: cannot start the vsync thread: {e}"))?;
        let mut waiter = Self {
            request,
            done,
            outstanding: false,
            misses: 0,
            enabled: true,
        };
        let started = Instant::now();
        match waiter.wait_once(VSYNC_PROBE_TIMEOUT) {
            Ok(true) => Ok((waiter, started.elapsed())),
            Ok(false) => Err(format!(
                "not used: no vsync within {} ms",
                VSYNC_PROBE_TIMEOUT.as_millis()
            )),
            Err(error) => Err(format!("not supported: {error}")),
        }
    }

    /// `Ok(true)`: a vsync came; `Ok(false)`: timed out (or still stuck from before).
    fn wait_once(&mut self, timeout: Duration) -> std::io::Result<bool> {
        if self.outstanding {
            match self.done.try_recv() {
                Ok(_) => self.outstanding = false,
                Err(_) => return Ok(false),
            }
        }
        if self.request.send(()).is_err() {
            return Err(std::io::Error::other("vsync thread ended"));
        }
        match self.done.recv_timeout(timeout) {
            Ok(result) => result.map(|()| true),
            Err(RecvTimeoutError::Timeout) => {
                self.outstanding = true;
                Ok(false)
            }
            Err(RecvTimeoutError::Disconnected) => Err(std::io::Error::other("vsync thread ended")),
        }
    }

    /// Waits for the next vsync before a frame goes out; gives up on the device after repeated
    /// misses or an error.
    fn wait(&mut self) {
        if !self.enabled {
            return;
        }
        match self.wait_once(VSYNC_TIMEOUT) {
            Ok(true) => self.misses = 0,
            Ok(false) => {
                self.misses += 1;
                if self.misses >= VSYNC_MISSES_TO_DISABLE {
                    self.enabled = false;
                    log::warn!(
                        "{}",
                        crate::events::VsyncDisabled {
                            reason: format!(
                                "{} waits of {} ms timed out in a row",
                                self.misses,
                                VSYNC_TIMEOUT.as_millis()
                            ),
                        }
                    );
                }
            }
            Err(error) => {
                self.enabled = false;
                log::warn!(
                    "{}",
                    crate::events::VsyncDisabled {
                        reason: error.to_string()
                    }
                );
            }
        }
    }
}

/// The device's reported layout as our pixel format.
fn pixel_format(var: &VarScreeninfo) -> PixelFormat {
    let channel = |b: &framebuffer::Bitfield| Channel {
        offset: b.offset,
        length: b.length,
    };
    PixelFormat::new(
        var.bits_per_pixel,
        channel(&var.red),
        channel(&var.green),
        channel(&var.blue),
        channel(&var.transp),
    )
}

fn driver_id(fix: &FixScreeninfo) -> String {
    String::from_utf8_lossy(&fix.id)
        .trim_end_matches('\0')
        .to_string()
}

/// DRM's fbdev emulation names its device "<driver>drmfb" (drm_fb_helper).
fn is_drm_shadow(driver: &str) -> bool {
    driver.ends_with("drmfb")
}

/// The layout checks shared by a real device and a memory-backed one.
fn checked_geometry(
    path: &Path,
    var: &VarScreeninfo,
    fix: &FixScreeninfo,
    mapped: usize,
) -> anyhow::Result<Geometry> {
    let id = driver_id(fix);
    let format = pixel_format(var);
    if fix.visual != FB_VISUAL_TRUECOLOR {
        bail!(
            "framebuffer {} ({id}) uses visual {}; only truecolor (visual 2) is supported: switch \
             the console to a 16, 24 or 32 bpp mode (e.g. `fbset -depth 32`, or `vga=0x314` / a \
             DRM driver at boot)",
            path.display(),
            fix.visual
        );
    }
    format.validate().with_context(|| {
        format!(
            "framebuffer {} ({id}) reports an unsupported pixel format {format}",
            path.display()
        )
    })?;
    let geometry = Geometry {
        width: var.xres,
        height: var.yres,
        stride: fix.line_length as usize,
        format,
    };
    if geometry.stride < geometry.width as usize * format.bytes_per_pixel()
        || geometry.frame_bytes() > mapped
    {
        bail!(
            "framebuffer {} ({id}) maps {mapped} bytes, too few for {}x{} at line_length {}",
            path.display(),
            geometry.width,
            geometry.height,
            geometry.stride
        );
    }
    Ok(geometry)
}

pub(crate) struct FbdevSink {
    mapping: MmapMut,
    file: File,
    geometry: Geometry,
    report: FramebufferReport,
    /// Byte offsets of the pages in the mapping: one, or two when double-buffering by panning.
    pages: Vec<usize>,
    /// The page on screen.
    shown: usize,
    var: VarScreeninfo,
    vsync: Option<VsyncWaiter>,
    /// Powered down by the schedule: powered up again when the sink goes.
    blanked: bool,
    // Dropped after the mapping: the console repaints only once we are done drawing.
    _console: Option<ConsoleGuard>,
}

impl FbdevSink {
    /// Opens, locks, probes and maps the device, and takes the console (when one is given).
    pub(crate) fn open(path: &Path, console: Option<&Path>) -> anyhow::Result<Self> {
        let mut sink = Self::open_device(path)?;
        log::info!("{}", sink.report.event());
        // A console blanked before we started stays dark otherwise.
        if let Err(error) = crate::sys::fb::blank(&sink.file, false) {
            log::debug!(
                "{}",
                crate::events::UnblankFailed {
                    error: error.to_string()
                }
            );
        }
        sink._console = ConsoleGuard::take_or_warn(console);
        Ok(sink)
    }

    /// Everything but the console: for `open` and the `probe` subcommand.
    pub(crate) fn open_device(path: &Path) -> anyhow::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|error| anyhow::anyhow!(open_hint(path, &error)))?;
        lock_exclusive(&file, path)?;
        let var = Framebuffer::get_var_screeninfo(&file)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| {
                format!(
                    "{} is not a framebuffer (FBIOGET_VSCREENINFO)",
                    path.display()
                )
            })?;
        let fix = Framebuffer::get_fix_screeninfo(&file)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| {
                format!(
                    "{} is not a framebuffer (FBIOGET_FSCREENINFO)",
                    path.display()
                )
            })?;
        // The whole virtual area: a second page, when there is one, is mapped too.
        let length = (fix.line_length as usize * var.yres_virtual as usize).max(1);
        let mapping = crate::sys::fb::map_shared(&file, length).with_context(|| {
            format!("cannot map framebuffer {} ({length} bytes)", path.display())
        })?;
        let geometry = checked_geometry(path, &var, &fix, mapping.len())?;
        let driver = driver_id(&fix);
        let shadow = is_drm_shadow(&driver);

        let (pages, pan) = probe_pan(&file, &var, &geometry, shadow);
        let (vsync, vsync_outcome) = match VsyncWaiter::probe(&file) {
            Ok((waiter, took)) => (
                Some(waiter),
                format!("works (first wait {:.1} ms)", took.as_secs_f64() * 1e3),
            ),
            Err(outcome) => (None, outcome),
        };
        let report = make_report(path, &var, &fix, shadow, pan, vsync_outcome, pages.len());
        let mut var = var;
        var.xoffset = 0;
        var.yoffset = 0;
        Ok(Self {
            mapping,
            file,
            geometry,
            report,
            pages,
            shown: 0,
            var,
            vsync,
            blanked: false,
            _console: None,
        })
    }

    /// A framebuffer backed by an ordinary file (tmpfs) with the given layout: the same locking
    /// and drawing path without a device, for benchmarks and tests. No pan, no vsync.
    pub(crate) fn over_file(
        path: &Path,
        var: &VarScreeninfo,
        fix: &FixScreeninfo,
    ) -> anyhow::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        lock_exclusive(&file, path)?;
        let length = fix.line_length as u64 * var.yres_virtual as u64;
        file.set_len(length)
            .with_context(|| format!("cannot size {}", path.display()))?;
        let mapping = crate::sys::fb::map_shared(&file, length as usize)
            .with_context(|| format!("cannot map {}", path.display()))?;
        let geometry = checked_geometry(path, var, fix, mapping.len())?;
        let not_here = "not available (memory-backed)".to_string();
        let report = make_report(path, var, fix, false, not_here.clone(), not_here, 1);
        Ok(Self {
            mapping,
            file,
            geometry,
            report,
            pages: vec![0],
            shown: 0,
            var: var.clone(),
            vsync: None,
            blanked: false,
            _console: None,
        })
    }

    pub(crate) fn report(&self) -> &FramebufferReport {
        &self.report
    }

    #[cfg(test)]
    /// The visible page's bytes, as last presented (tests read the screen back).
    pub(crate) fn visible(&self) -> &[u8] {
        let offset = self.pages[self.shown];
        &self.mapping[offset..offset + self.geometry.frame_bytes()]
    }
}

/// Tries a pan to the second page; returns the page offsets to use and what happened.
fn probe_pan(
    file: &File,
    var: &VarScreeninfo,
    geometry: &Geometry,
    shadow: bool,
) -> (Vec<usize>, String) {
    let single = vec![0];
    if var.yres_virtual < 2 * var.yres {
        return (
            single,
            format!(
                "no second page (yres_virtual {} < 2 x yres {})",
                var.yres_virtual, var.yres
            ),
        );
    }
    let mut second = var.clone();
    second.xoffset = 0;
    second.yoffset = var.yres;
    if let Err(error) = Framebuffer::pan_display(file, &second) {
        return (single, format!("refused ({error})"));
    }
    let honoured = Framebuffer::get_var_screeninfo(file)
        .map(|now| now.yoffset == var.yres)
        .unwrap_or(false);
    let mut first = second.clone();
    first.yoffset = 0;
    let _ = Framebuffer::pan_display(file, &first);
    if shadow {
        // Measured on bochs (and true of every DRM fbdev emulation): the pan succeeds and the
        // scanout keeps showing page 0.
        return (
            single,
            "accepted but not shown (DRM fbdev emulation draws page 0): single page + msync".into(),
        );
    }
    if !honoured {
        return (single, "ignored (yoffset unchanged)".into());
    }
    (vec![0, geometry.stride * var.yres as usize], "works".into())
}

fn make_report(
    path: &Path,
    var: &VarScreeninfo,
    fix: &FixScreeninfo,
    shadow: bool,
    pan: String,
    vsync: String,
    pages: usize,
) -> FramebufferReport {
    let format = pixel_format(var);
    FramebufferReport {
        path: path.display().to_string(),
        driver: driver_id(fix),
        width: var.xres,
        height: var.yres,
        virtual_width: var.xres_virtual,
        virtual_height: var.yres_virtual,
        bits_per_pixel: var.bits_per_pixel,
        red: format.red,
        green: format.green,
        blue: format.blue,
        transp: format.transp,
        line_length: fix.line_length,
        memory_bytes: fix.smem_len,
        shadow_buffer: shadow,
        pan,
        vsync,
        buffering: if pages > 1 { "double (pan)" } else { "single" },
        flush: if pages > 1 {
            "pan"
        } else if shadow {
            "msync"
        } else {
            "direct"
        },
    }
}

impl Sink for FbdevSink {
    fn name(&self) -> &'static str {
        "fbdev"
    }

    fn geometry(&self) -> Geometry {
        self.geometry
    }

    fn present(&mut self, frame: &[u8]) -> anyhow::Result<()> {
        let length = self.geometry.frame_bytes();
        let target = if self.pages.len() > 1 {
            1 - self.shown
        } else {
            self.shown
        };
        let offset = self.pages[target];
        if self.pages.len() > 1 {
            // Draw the hidden page, then show it at the vertical blank.
            self.mapping[offset..offset + length].copy_from_slice(&frame[..length]);
            if let Some(vsync) = &mut self.vsync {
                vsync.wait();
            }
            self.var.yoffset = (offset / self.geometry.stride) as u32;
            Framebuffer::pan_display(&self.file, &self.var)
                .map_err(|e| anyhow::anyhow!("{e}"))
                .context("cannot pan the framebuffer")?;
            self.shown = target;
        } else {
            if let Some(vsync) = &mut self.vsync {
                vsync.wait();
            }
            self.mapping[offset..offset + length].copy_from_slice(&frame[..length]);
            if self.report.shadow_buffer {
                // Copies the shadow out now instead of ~50 ms later.
                self.mapping
                    .flush_range(offset, length)
                    .context("cannot flush the framebuffer (msync)")?;
            }
        }
        Ok(())
    }

    fn device_report(&self) -> Option<serde_json::Value> {
        serde_json::to_value(&self.report).ok()
    }

    fn set_blanked(&mut self, blanked: bool) -> anyhow::Result<()> {
        crate::sys::fb::blank(&self.file, blanked).with_context(|| {
            format!(
                "FBIOBLANK {} on {}",
                if blanked { "powerdown" } else { "unblank" },
                self.report.path
            )
        })?;
        self.blanked = blanked;
        Ok(())
    }
}

impl Drop for FbdevSink {
    fn drop(&mut self) {
        // Whoever uses the screen next (the console, a restart) must find it powered up.
        if self.blanked {
            let _ = crate::sys::fb::blank(&self.file, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_policy_refusal_is_not_called_a_missing_group() {
        let path = Path::new("/dev/x1");
        let eperm = std::io::Error::from_raw_os_error(libc::EPERM);
        let message = open_hint(path, &eperm);
        assert!(
            message.starts_with("cannot open framebuffer /dev/x1: Operation not permitted"),
            "{message}"
        );
        assert!(message.contains("DeviceAllow="), "{message}");
        assert!(!message.contains("group"), "{message}");
        let eacces = std::io::Error::from_raw_os_error(libc::EACCES);
        assert!(open_hint(path, &eacces).contains("`video`"));
    }

    /// A 1x-page layout like vesafb's RGB565 or a 32-bit XRGB one, with a padded stride.
    pub(crate) fn layout(
        width: u32,
        height: u32,
        bpp: u32,
        stride: u32,
    ) -> (VarScreeninfo, FixScreeninfo) {
        let mut var = VarScreeninfo {
            xres: width,
            yres: height,
            xres_virtual: width,
            yres_virtual: height,
            bits_per_pixel: bpp,
            ..Default::default()
        };
        if bpp == 16 {
            (var.red.offset, var.red.length) = (11, 5);
            (var.green.offset, var.green.length) = (5, 6);
            (var.blue.offset, var.blue.length) = (0, 5);
        } else {
            (var.red.offset, var.red.length) = (16, 8);
            (var.green.offset, var.green.length) = (8, 8);
            (var.blue.offset, var.blue.length) = (0, 8);
        }
        let mut fix = FixScreeninfo {
            line_length: stride,
            visual: FB_VISUAL_TRUECOLOR,
            smem_len: stride * height,
            ..Default::default()
        };
        fix.id[..8].copy_from_slice(b"testfb\0\0");
        (var, fix)
    }

    #[test]
    fn a_missing_framebuffer_explains_how_to_fix_it() {
        let error = FbdevSink::open(Path::new("/nonexistent/fb9"), None)
            .err()
            .expect("no device");
        let text = format!("{error:#}");
        assert!(
            text.contains("/nonexistent/fb9") && text.contains("--sink terminal"),
            "{text}"
        );
    }

    #[test]
    fn a_file_that_is_not_a_framebuffer_is_named() {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        let error = FbdevSink::open(file.path(), None)
            .err()
            .expect("not a framebuffer");
        let text = format!("{error:#}");
        assert!(text.contains("is not a framebuffer"), "{text}");
    }

    #[test]
    fn frames_land_in_the_mapping_row_by_row_with_the_stride() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("fb");
        let (var, fix) = layout(4, 3, 16, 12);
        let mut sink = FbdevSink::over_file(&path, &var, &fix).expect("memory-backed fb");
        let geometry = sink.geometry();
        assert_eq!(
            (geometry.stride, geometry.format),
            (12, PixelFormat::RGB565)
        );
        let frame: Vec<u8> = (0..geometry.frame_bytes()).map(|i| i as u8).collect();
        sink.present(&frame).expect("present");
        assert_eq!(sink.visible(), &frame[..]);
        let on_disk = std::fs::read(&path).expect("read back");
        assert_eq!(&on_disk[..frame.len()], &frame[..]);
        assert_eq!(sink.report().flush, "direct");
    }

    #[test]
    fn a_second_player_is_refused_while_the_first_holds_the_screen() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("fb");
        let (var, fix) = layout(8, 8, 32, 32);
        let first = FbdevSink::over_file(&path, &var, &fix).expect("first player");
        let error = FbdevSink::over_file(&path, &var, &fix)
            .err()
            .expect("second refused");
        assert!(
            format!("{error:#}").contains("in use by another player"),
            "{error:#}"
        );
        drop(first);
        FbdevSink::over_file(&path, &var, &fix).expect("free again once the first is gone");
    }

    #[test]
    fn non_truecolor_and_short_strides_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (var, mut fix) = layout(8, 8, 32, 32);
        fix.visual = 3; // FB_VISUAL_PSEUDOCOLOR
        let error = FbdevSink::over_file(&dir.path().join("a"), &var, &fix)
            .err()
            .expect("visual");
        assert!(format!("{error:#}").contains("only truecolor"), "{error:#}");
        let (var, fix) = layout(8, 8, 32, 16);
        let error = FbdevSink::over_file(&dir.path().join("b"), &var, &fix)
            .err()
            .expect("stride");
        assert!(format!("{error:#}").contains("line_length 16"), "{error:#}");
        let (mut var, fix) = layout(8, 8, 32, 32);
        var.bits_per_pixel = 8;
        let error = FbdevSink::over_file(&dir.path().join("c"), &var, &fix)
            .err()
            .expect("bpp");
        assert!(
            format!("{error:#}").contains("unsupported pixel format"),
            "{error:#}"
        );
    }

    #[test]
    fn a_device_without_vsync_reports_it_and_a_vsync_that_never_comes_stops_being_waited_for() {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        let outcome = VsyncWaiter::probe(file.as_file())
            .err()
            .expect("no vsync on a file");
        assert!(outcome.starts_with("not supported"), "{outcome}");

        let never = VsyncWaiter::probe_with(|| {
            std::thread::sleep(Duration::from_secs(3600));
            Ok(())
        });
        assert!(never.err().expect("times out").contains("no vsync within"));

        // Works twice, then hangs in the kernel for good.
        let mut calls = 0;
        let (mut waiter, _) = VsyncWaiter::probe_with(move || {
            calls += 1;
            if calls > 2 {
                std::thread::sleep(Duration::from_secs(3600));
            }
            Ok(())
        })
        .expect("first vsync comes");
        waiter.wait();
        assert!(waiter.enabled && waiter.misses == 0);
        let started = Instant::now();
        for _ in 0..10 {
            waiter.wait();
        }
        assert!(
            !waiter.enabled,
            "waiting must turn off after repeated misses"
        );
        // One timeout per miss until it turns off, then nothing: the display keeps going.
        let waited = started.elapsed();
        assert!(
            waited < VSYNC_TIMEOUT * (VSYNC_MISSES_TO_DISABLE + 2),
            "waited {waited:?}"
        );
    }

    #[test]
    fn drm_fbdev_emulation_is_recognised_by_its_id() {
        assert!(is_drm_shadow("bochsdrmfb"));
        assert!(is_drm_shadow("nvidia-drmdrmfb"));
        assert!(!is_drm_shadow("VESA VGA"));
        assert!(!is_drm_shadow("EFI VGA"));
    }

    #[test]
    fn the_report_line_has_every_field() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (var, fix) = layout(8, 4, 16, 16);
        let sink = FbdevSink::over_file(&dir.path().join("fb"), &var, &fix).expect("fb");
        let line = sink.report().event().to_string();
        for key in [
            "driver=testfb",
            "width=8",
            "height=4",
            "bpp=16",
            "red=11/5",
            "green=5/6",
            "blue=0/5",
            "line_length=16",
            "buffering=single",
            "flush=direct",
            "vsync=\"not available",
        ] {
            assert!(line.contains(key), "{key} missing from {line}");
        }
    }
}
