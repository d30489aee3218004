//! The drm sink: KMS directly, the way mpv's DRM output and kmscube do it. At open it takes the
//! card (`display.card`, else the first with a connected screen), becomes DRM master, picks the
//! connector, the mode (`display.mode`, else the screen's preferred one) and the best format
//! the primary plane takes (XRGB8888, else RGB565), allocates three dumb buffers and sets the
//! mode. Each frame is copied into a buffer that is neither on screen nor queued, and a page
//! flip to it is requested: the kernel swaps buffers on the vertical blank, so there is never a
//! tear. The flip's completion event says when the frame really went on screen (`Flip`); the
//! pacer turns those into `presented_*` and `flips_missed`.
//!
//! Inputs: screen buffers from the pacer thread, which owns this sink. Output: pixels on the
//! screen. `present` never waits for a vertical blank except when the previous flip is still
//! queued (a late frame), and then at most `flip_timeout`: a flip that never completes is given
//! up (logged) and the mode set again, so the display can't freeze on a stuck driver.
//!
//! Also: the night schedule's blank (DPMS off through the connector property, else a black
//! buffer); the cable pulled and plugged in again (`maintain`, at every pacer deadline, looks at
//! the connector every `HOTPLUG_CHECK`: the kernel's cached state, no probing; on reconnection
//! the screen is probed and the mode set again, a new mode picked up, retried at the next check
//! if that fails); on drop, the CRTC as we found it (the console's
//! picture), DPMS on, master released, the console's text mode back (`ConsoleGuard`). An
//! exclusive `flock` on the card refuses a second player; another DRM master (a desktop) is
//! named as such.

pub(crate) mod card;
pub(crate) mod choice;

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use drm::buffer::Buffer as _;
use drm::control::dumbbuffer::DumbBuffer;
use drm::control::{connector, crtc, framebuffer, property, Device as ControlDevice, Mode};
use drm::Device as _;
use memmap2::MmapMut;

use super::{Flip, Sink};
use crate::config::{DisplayConfig, ModeRequest};
use crate::console::ConsoleGuard;
use crate::frame::Geometry;
use card::{Card, ConnectorReport};
use choice::{fourcc_name, ModeInfo};

/// Scanout buffers: one on screen, one queued for the next vertical blank, one being drawn.
const BUFFERS: usize = 3;
/// How often the connector's cached state is looked at for a cable pulled or plugged in.
const HOTPLUG_CHECK: Duration = Duration::from_secs(2);
/// DPMS values (drm_mode.h).
const DPMS_ON: u64 = 0;
const DPMS_OFF: u64 = 3;

/// What the screen is and how frames reach it; logged at start and put in status.json.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub(crate) struct DrmReport {
    pub card: String,
    pub driver: String,
    pub connector: String,
    pub mode: String,
    pub refresh_hz: f64,
    pub format: String,
    pub buffers: usize,
    pub pitch: u32,
    /// Blanking powers the screen down (DPMS) rather than showing black.
    pub dpms: bool,
}

impl DrmReport {
    pub(crate) fn event(&self) -> crate::events::Drm {
        crate::events::Drm {
            card: self.card.clone(),
            driver: self.driver.clone(),
            connector: self.connector.clone(),
            mode: self.mode.clone(),
            refresh_hz: self.refresh_hz,
            format: self.format.clone(),
            buffers: self.buffers,
            pitch: self.pitch,
            dpms: self.dpms,
        }
    }
}

/// A dumb buffer registered as a framebuffer, mapped.
struct ScanoutBuffer {
    mapping: MmapMut,
    dumb: DumbBuffer,
    fb: framebuffer::Handle,
    pitch: usize,
}

pub(crate) struct DrmSink {
    card: Card,
    report: DrmReport,
    connector: connector::Handle,
    crtc: crtc::Handle,
    mode: Mode,
    refresh: Duration,
    /// What the renderer fills (the mode at open; a later mode of another size gets the frame
    /// centred).
    geometry: Geometry,
    fourcc: u32,
    buffers: Vec<ScanoutBuffer>,
    /// The buffer on screen, or queued to be at the next vertical blank.
    front: usize,
    /// A flip requested and not completed: its buffer and the number of its `present`.
    pending: Option<(usize, u64)>,
    pending_since: Instant,
    /// `present` calls so far: a flip carries its present's number, so one that went up by a
    /// modeset instead (no completion event) is simply missing from the pacer's count.
    presents: u64,
    completed: VecDeque<Flip>,
    /// The CRTC as it was before we took it: put back on drop.
    saved: crtc::Info,
    dpms: Option<property::Handle>,
    blanked: bool,
    connected: bool,
    wanted_mode: Option<ModeRequest>,
    next_hotplug_check: Instant,
    // Dropped last: the console repaints once the screen is given back.
    _console: Option<ConsoleGuard>,
}

/// Picks the card: the configured one, else the first under /dev/dri with a connected screen;
/// with its connectors, probed (force: a screen the kernel never looked at reads "unknown" in
/// the cached state).
fn choose_card(configured: Option<&Path>) -> anyhow::Result<(Card, Vec<ConnectorReport>)> {
    if let Some(path) = configured {
        let card = Card::open(path)?;
        let connectors = card::connectors(&card, true)?;
        return Ok((card, connectors));
    }
    let paths = card::card_paths(Path::new(card::CARDS_DIR));
    if paths.is_empty() {
        bail!(
            "no DRM card under {} (no KMS driver loaded); `display.sink = \"fbdev\"` uses the \
             framebuffer",
            card::CARDS_DIR
        );
    }
    let mut seen = Vec::new();
    for path in &paths {
        match Card::open(path) {
            Ok(card) => match card::connectors(&card, true) {
                Ok(connectors) if connectors.iter().any(|c| c.connected) => {
                    return Ok((card, connectors))
                }
                Ok(connectors) => seen.push(format!(
                    "{}: no screen connected ({})",
                    path.display(),
                    connectors
                        .iter()
                        .map(|c| format!("{} {}", c.name, c.status))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
                Err(error) => seen.push(format!("{error:#}")),
            },
            Err(error) => seen.push(format!("{error:#}")),
        }
    }
    bail!("no DRM card with a connected screen: {}", seen.join("; "))
}

fn lock_card(card: &Card) -> anyhow::Result<()> {
    let lock = crate::sys::lock_exclusive(&card.file)
        .with_context(|| format!("cannot lock DRM card {}", card.path.display()))?;
    if lock == crate::sys::Lock::Held {
        bail!(
            "DRM card {} is in use by another player (a second dreamframe?): only one may draw \
             on a screen; stop the other first (`systemctl stop dreamframe`)",
            card.path.display()
        );
    }
    Ok(())
}

fn become_master(card: &Card) -> anyhow::Result<()> {
    card.acquire_master_lock().map_err(|error| {
        anyhow::anyhow!(
            "cannot become DRM master of {} ({error}): another program drives this screen, \
             usually a desktop (X11 or a Wayland compositor; stop it, e.g. `systemctl stop \
             display-manager`) or another player; `display.sink = \"fbdev\"` draws through the \
             framebuffer instead",
            card.path.display()
        )
    })
}

/// The connector to drive: the first connected one with modes.
fn choose_connector(
    card: &Card,
    connectors: &[ConnectorReport],
) -> anyhow::Result<ConnectorReport> {
    connectors
        .iter()
        .find(|c| c.connected && !c.modes.is_empty())
        .cloned()
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no screen connected to DRM card {} (connectors: {}); plug one in, or pick \
                 another card with `display.card`",
                card.path.display(),
                connectors
                    .iter()
                    .map(|c| format!("{} {}", c.name, c.status))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

/// The CRTC for the connector: the one it already drives, else the first its encoders can use.
fn choose_crtc(card: &Card, connector: connector::Handle) -> anyhow::Result<crtc::Handle> {
    let info = card.get_connector(connector, false)?;
    let resources = card.resource_handles()?;
    if let Some(crtc) = info
        .current_encoder()
        .and_then(|encoder| card.get_encoder(encoder).ok())
        .and_then(|encoder| encoder.crtc())
    {
        return Ok(crtc);
    }
    for &encoder in info.encoders() {
        if let Ok(encoder) = card.get_encoder(encoder) {
            if let Some(&crtc) = resources.filter_crtcs(encoder.possible_crtcs()).first() {
                return Ok(crtc);
            }
        }
    }
    bail!(
        "no CRTC can drive connector {}",
        Card::connector_name(&info)
    )
}

fn dpms_property(card: &Card, connector: connector::Handle) -> Option<property::Handle> {
    let properties = card.get_properties(connector).ok()?;
    let (handles, _) = properties.as_props_and_values();
    handles.iter().copied().find(|&handle| {
        card.get_property(handle)
            .map(|info| info.name().to_bytes() == b"DPMS")
            .unwrap_or(false)
    })
}

fn allocate(card: &Card, size: (u32, u32), fourcc: u32) -> anyhow::Result<Vec<ScanoutBuffer>> {
    let (bpp, depth) = if fourcc == choice::FOURCC_RGB565 {
        (16, 16)
    } else {
        (32, 24)
    };
    let format = drm::buffer::DrmFourcc::try_from(fourcc)
        .map_err(|_| anyhow::anyhow!("unknown fourcc {}", fourcc_name(fourcc)))?;
    let mut buffers = Vec::with_capacity(BUFFERS);
    for _ in 0..BUFFERS {
        let dumb = card
            .create_dumb_buffer(size, format, bpp)
            .with_context(|| format!("cannot allocate a {}x{} dumb buffer", size.0, size.1))?;
        let fb = match card.add_framebuffer(&dumb, depth, bpp) {
            Ok(fb) => fb,
            Err(error) => {
                let _ = card.destroy_dumb_buffer(dumb);
                return Err(error).context("cannot register the dumb buffer as a framebuffer");
            }
        };
        let pitch = dumb.pitch() as usize;
        let length = pitch * size.1 as usize;
        let mapped = drm_ffi::mode::dumbbuffer::map(
            std::os::fd::AsFd::as_fd(card),
            u32::from(dumb.handle()),
            0,
            0,
        )
        .and_then(|map| crate::sys::drm::map_dumb(&card.file, map.offset, length));
        let mut mapping = match mapped {
            Ok(mapping) => mapping,
            Err(error) => {
                let _ = card.destroy_framebuffer(fb);
                let _ = card.destroy_dumb_buffer(dumb);
                return Err(error).context("cannot map the dumb buffer");
            }
        };
        mapping.fill(0);
        buffers.push(ScanoutBuffer {
            mapping,
            dumb,
            fb,
            pitch,
        });
    }
    Ok(buffers)
}

fn free(card: &Card, buffers: Vec<ScanoutBuffer>) {
    for buffer in buffers {
        drop(buffer.mapping);
        let _ = card.destroy_framebuffer(buffer.fb);
        let _ = card.destroy_dumb_buffer(buffer.dumb);
    }
}

impl DrmSink {
    /// Opens the card, takes the screen and the console.
    pub(crate) fn open(config: &DisplayConfig) -> anyhow::Result<Self> {
        let (card, connectors) = choose_card(config.card.as_deref())?;
        lock_card(&card)?;
        become_master(&card)?;
        let _ = card.set_client_capability(drm::ClientCapability::UniversalPlanes, true);
        let connector = choose_connector(&card, &connectors)?;
        let infos = connector.mode_infos();
        let index = choice::pick_mode(&infos, config.mode.as_ref()).map_err(|error| {
            anyhow::anyhow!("{} on {}: {error}", card.path.display(), connector.name)
        })?;
        let (mode, info) = (connector.modes[index], infos[index]);
        let crtc = choose_crtc(&card, connector.handle)?;
        let formats = card.primary_formats(crtc);
        let (fourcc, format) = choice::pick_format(&formats).ok_or_else(|| {
            anyhow::anyhow!(
                "DRM card {}'s primary plane takes neither XRGB8888 nor RGB565 (it takes {})",
                card.path.display(),
                formats
                    .iter()
                    .map(|&f| fourcc_name(f))
                    .collect::<Vec<_>>()
                    .join(",")
            )
        })?;
        let size = (info.width, info.height);
        let buffers = allocate(&card, size, fourcc)?;
        let saved = card.get_crtc(crtc)?;
        card.set_crtc(
            crtc,
            Some(buffers[0].fb),
            (0, 0),
            &[connector.handle],
            Some(mode),
        )
        .with_context(|| {
            format!(
                "cannot set mode {} on {} of {}",
                info.label(),
                connector.name,
                card.path.display()
            )
        })?;
        let dpms = dpms_property(&card, connector.handle);
        if let Some(dpms) = dpms {
            let _ = card.set_property(connector.handle, dpms, DPMS_ON);
        }
        let geometry = Geometry {
            width: size.0,
            height: size.1,
            stride: buffers[0].pitch,
            format,
        };
        let report = DrmReport {
            card: card.path.display().to_string(),
            driver: card.driver_name(),
            connector: connector.name.clone(),
            mode: info.label(),
            refresh_hz: info.refresh_hz,
            format: fourcc_name(fourcc),
            buffers: buffers.len(),
            pitch: buffers[0].pitch as u32,
            dpms: dpms.is_some(),
        };
        log::info!("{}", report.event());
        let console = ConsoleGuard::take_or_warn(config.console.as_deref());
        Ok(Self {
            report,
            connector: connector.handle,
            crtc,
            mode,
            refresh: Duration::from_secs_f64(1.0 / info.refresh_hz),
            geometry,
            fourcc,
            buffers,
            front: 0,
            pending: None,
            pending_since: Instant::now(),
            presents: 0,
            completed: VecDeque::new(),
            saved,
            dpms,
            blanked: false,
            connected: true,
            wanted_mode: config.mode,
            next_hotplug_check: Instant::now() + HOTPLUG_CHECK,
            card,
            _console: console,
        })
    }

    pub(crate) fn report(&self) -> &DrmReport {
        &self.report
    }

    /// How long a queued flip may take before it is given up: a few refreshes.
    fn flip_timeout(&self) -> Duration {
        (self.refresh * 4).max(Duration::from_millis(100))
    }

    /// Reads the flip completions waiting on the card, without waiting.
    fn collect_events(&mut self) -> anyhow::Result<()> {
        let events = match self.card.receive_events() {
            Ok(events) => events,
            Err(error) if error.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(error) => return Err(error).context("cannot read the DRM card's events"),
        };
        for event in events {
            if let drm::control::Event::PageFlip(flip) = event {
                if let Some((_, number)) = self.pending.take() {
                    self.completed.push_back(Flip {
                        number,
                        at: crate::sys::drm::instant_of_monotonic(flip.duration),
                        // Drivers without a vblank interrupt complete flips with sequence 0.
                        vblank: flip.frame != 0,
                    });
                }
            }
        }
        Ok(())
    }

    /// Waits for the queued flip; a flip that does not complete in time is given up. What
    /// already came is read first: a flip queued long ago (a slow frame rate) is no flip late.
    fn finish_pending(&mut self) -> anyhow::Result<()> {
        let timeout = self.flip_timeout();
        loop {
            self.collect_events()?;
            if self.pending.is_none() {
                return Ok(());
            }
            let waited = self.pending_since.elapsed();
            if waited >= timeout {
                self.pending = None;
                log::warn!(
                    "{}",
                    crate::events::DrmFlipStuck {
                        waited_ms: waited.as_secs_f64() * 1e3,
                        recovery: "setting the mode again with the newest frame".into(),
                    }
                );
                // The flip is lost (a driver that dropped it, a CRTC switched off under us):
                // the next frame goes up by a modeset instead.
                return self.set_mode(self.front);
            }
            crate::sys::drm::wait_readable(&self.card.file, timeout - waited)?;
        }
    }

    fn set_mode(&mut self, buffer: usize) -> anyhow::Result<()> {
        self.card
            .set_crtc(
                self.crtc,
                Some(self.buffers[buffer].fb),
                (0, 0),
                &[self.connector],
                Some(self.mode),
            )
            .with_context(|| format!("cannot set the mode on {}", self.report.card))?;
        self.front = buffer;
        Ok(())
    }

    /// A buffer neither on screen nor queued.
    fn free_buffer(&self) -> usize {
        let pending = self.pending.map(|(buffer, _)| buffer);
        (0..self.buffers.len())
            .find(|&b| b != self.front && Some(b) != pending)
            .expect("three buffers leave one free besides the shown and the queued one")
    }

    fn draw(&mut self, target: usize, frame: &[u8]) {
        let geometry = self.geometry;
        let buffer = &mut self.buffers[target];
        let screen = buffer.dumb.size();
        if screen == (geometry.width, geometry.height) && buffer.pitch == geometry.stride {
            let length = geometry.frame_bytes();
            buffer.mapping[..length].copy_from_slice(&frame[..length]);
            return;
        }
        // A mode of another size since a hotplug: the frame centred, the rest black.
        let bpp = geometry.format.bytes_per_pixel();
        let (sx, sy, dx, dy, width, height) =
            choice::placement((geometry.width, geometry.height), screen);
        buffer.mapping.fill(0);
        for row in 0..height as usize {
            let from = (sy as usize + row) * geometry.stride + sx as usize * bpp;
            let to = (dy as usize + row) * buffer.pitch + dx as usize * bpp;
            let length = width as usize * bpp;
            buffer.mapping[to..to + length].copy_from_slice(&frame[from..from + length]);
        }
    }

    /// The cable: looked at every `HOTPLUG_CHECK` in the kernel's cached state.
    fn check_hotplug(&mut self) -> anyhow::Result<()> {
        if Instant::now() < self.next_hotplug_check {
            return Ok(());
        }
        self.next_hotplug_check = Instant::now() + HOTPLUG_CHECK;
        let Ok(info) = self.card.get_connector(self.connector, false) else {
            return Ok(());
        };
        let connected = info.state() == connector::State::Connected;
        if connected == self.connected {
            return Ok(());
        }
        self.connected = connected;
        if connected {
            if let Err(error) = self.reconnected() {
                // Tried again at the next check (a screen still waking up, a link training).
                self.connected = false;
                log::warn!(
                    "{}",
                    crate::events::DrmHotplug {
                        connector: self.report.connector.clone(),
                        connected: true,
                        mode: None,
                        error: Some(format!("{error:#}")),
                    }
                );
            }
        } else {
            log::warn!(
                "{}",
                crate::events::DrmHotplug {
                    connector: self.report.connector.clone(),
                    connected: false,
                    mode: None,
                    error: None,
                }
            );
        }
        Ok(())
    }

    /// The screen is back (maybe another one): probe it, pick the mode again, set it.
    fn reconnected(&mut self) -> anyhow::Result<()> {
        self.finish_pending()?;
        let info = self.card.get_connector(self.connector, true)?;
        let modes: Vec<ModeInfo> = info.modes().iter().map(ModeInfo::of).collect();
        if modes.is_empty() {
            bail!("the screen reports no modes yet");
        }
        let index = match choice::pick_mode(&modes, self.wanted_mode.as_ref()) {
            Ok(index) => index,
            // The new screen lacks the configured mode: its preferred one, rather than nothing.
            Err(_) => choice::pick_mode(&modes, None).map_err(|e| anyhow::anyhow!(e))?,
        };
        let chosen = modes[index];
        let old_size = self.buffers[0].dumb.size();
        self.mode = info.modes()[index];
        self.refresh = Duration::from_secs_f64(1.0 / chosen.refresh_hz);
        self.report.mode = chosen.label();
        self.report.refresh_hz = chosen.refresh_hz;
        if (chosen.width, chosen.height) != old_size {
            let fresh = allocate(&self.card, (chosen.width, chosen.height), self.fourcc)?;
            let old = std::mem::replace(&mut self.buffers, fresh);
            self.set_mode(0)?;
            free(&self.card, old);
        } else {
            self.set_mode(self.front)?;
        }
        if self.blanked {
            // Setting the mode lit the screen: the schedule still wants it dark.
            self.set_blanked(true)?;
        }
        log::info!(
            "{}",
            crate::events::DrmHotplug {
                connector: self.report.connector.clone(),
                connected: true,
                mode: Some(chosen.label()),
                error: None,
            }
        );
        Ok(())
    }

    fn request_flip(&mut self, target: usize, number: u64) -> anyhow::Result<()> {
        let flipped = self.card.page_flip(
            self.crtc,
            self.buffers[target].fb,
            drm::control::PageFlipFlags::EVENT,
            None,
        );
        match flipped {
            Ok(()) => {
                self.pending = Some((target, number));
                self.pending_since = Instant::now();
                self.front = target;
                Ok(())
            }
            Err(error)
                if matches!(error.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM)) =>
            {
                Err(error).with_context(|| {
                    format!(
                        "lost control of {} (another program became DRM master: a desktop \
                         started, or a VT switch)",
                        self.report.card
                    )
                })
            }
            // The CRTC is off (someone else switched it off) or the driver refused the flip:
            // set the mode with this frame, and flip again from the next one. With no screen
            // connected there is nothing to show it on: keep going until the cable is back.
            Err(_) => match self.set_mode(target) {
                Err(_) if !self.connected => Ok(()),
                result => result,
            },
        }
    }
}

impl Sink for DrmSink {
    fn name(&self) -> &'static str {
        "drm"
    }

    fn geometry(&self) -> Geometry {
        self.geometry
    }

    fn present(&mut self, frame: &[u8]) -> anyhow::Result<()> {
        let number = self.presents;
        self.presents += 1;
        self.collect_events()?;
        let target = self.free_buffer();
        self.draw(target, frame);
        // Only one flip may be queued: a frame that comes while the last is still waiting for
        // its vertical blank waits too (drawn already, into the third buffer).
        self.finish_pending()?;
        self.request_flip(target, number)
    }

    /// Every pacer deadline, frame or not (held frames, the schedule's blank): the cable.
    fn maintain(&mut self) -> anyhow::Result<()> {
        self.check_hotplug()
    }

    fn device_report(&self) -> Option<serde_json::Value> {
        serde_json::to_value(&self.report).ok()
    }

    fn refresh(&self) -> Option<Duration> {
        Some(self.refresh)
    }

    fn take_flip(&mut self) -> Option<Flip> {
        if self.completed.is_empty() && self.pending.is_some() {
            if let Err(error) = self.collect_events() {
                log::debug!("drm events: {error:#}");
            }
        }
        self.completed.pop_front()
    }

    fn set_blanked(&mut self, blanked: bool) -> anyhow::Result<()> {
        self.finish_pending()?;
        match self.dpms {
            Some(dpms) => self
                .card
                .set_property(
                    self.connector,
                    dpms,
                    if blanked { DPMS_OFF } else { DPMS_ON },
                )
                .with_context(|| format!("DPMS on connector {}", self.report.connector))?,
            None if blanked => {
                // No DPMS: a black picture instead of the art.
                let black = self.free_buffer();
                self.buffers[black].mapping.fill(0);
                self.set_mode(black)?;
            }
            None => self.set_mode(self.front)?,
        }
        self.blanked = blanked;
        Ok(())
    }
}

impl Drop for DrmSink {
    fn drop(&mut self) {
        let _ = self.finish_pending();
        if let Some(dpms) = self.dpms {
            let _ = self.card.set_property(self.connector, dpms, DPMS_ON);
        }
        // The CRTC as we found it: the console's framebuffer, or off.
        let _ = self.card.set_crtc(
            self.crtc,
            self.saved.framebuffer(),
            self.saved.position(),
            if self.saved.framebuffer().is_some() {
                std::slice::from_ref(&self.connector)
            } else {
                &[]
            },
            self.saved.mode(),
        );
        free(&self.card, std::mem::take(&mut self.buffers));
        let _ = self.card.release_master_lock();
    }
}
