//! What `--check-config` warns about beyond the file itself: a valid config that will still make
//! the display fall back (or fail) at run time on this machine. A Stable Diffusion weights folder
//! that doesn't exist or lacks a file the preset needs, a CUDA device asked of a build without
//! CUDA, a framebuffer, DRM card or console path that is not a character device, a log file that
//! is not a regular file (a FIFO), an output folder that cannot be made.
//!
//! Device paths are looked at only where they are this machine's: in a chroot or an image build
//! (the package's postinst there) /dev is not the one the service will boot with, so a missing
//! device there says nothing (`devices_are_this_machines`).
//!
//! Inputs: the checked config and its file. Outputs: `ConfigProblem`s placed at their keys, for
//! the caller to print as `warning:` lines. Runs on the main thread; looks at the filesystem
//! only (opens nothing, loads no weights). Cannot fail: what it can't look at, it skips.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use crate::config::{
    place_warnings, ComputeDevice, Config, ConfigProblem, Fallback, ModelKind, SinkKind,
};
use crate::generator::stable_diffusion::{preset, weights::WeightFiles};

/// The character devices of DRM (Linux's devices.txt: 226 char, /dev/dri/card0 is 226,0).
const DRM_MAJOR: u32 = 226;

/// Whether `root` is the root of the machine's init (`init_root`, /proc/1/root): not in a chroot
/// or an image build. Where init's root can't be looked at for permission (not root), yes; where
/// there is no /proc (an image build), no.
fn same_root(root: &Path, init_root: &Path) -> bool {
    match (std::fs::metadata(root), std::fs::metadata(init_root)) {
        (Ok(root), Ok(init)) => (root.dev(), root.ino()) == (init.dev(), init.ino()),
        (_, Err(error)) => error.kind() == std::io::ErrorKind::PermissionDenied,
        _ => false,
    }
}

/// Whether this /dev is the one the display will run with (`same_root`).
fn devices_are_this_machines() -> bool {
    same_root(Path::new("/"), Path::new("/proc/1/root"))
}

/// The warnings for `config`, read from `path` (whose text gives the positions).
pub(crate) fn warnings(config: &Config, path: &Path) -> Vec<ConfigProblem> {
    let unread = without_effect(config);
    let mut found: Vec<(&str, String, String)> = Vec::new();
    let sd = &config.model.stable_diffusion;
    if config.model.kind == ModelKind::StableDiffusion {
        let then = match config.model.fallback {
            Fallback::Cppn => "the display will show the built-in generator instead",
            Fallback::None => "the display will not start (model.fallback = \"none\")",
        };
        if let ComputeDevice::Cuda(index) = sd.device {
            if !cfg!(feature = "cuda") {
                found.push((
                    "model.device",
                    format!("\"cuda:{index}\""),
                    format!(
                        "this build has no CUDA support (rebuild with `--features cuda,cudnn`): {then}"
                    ),
                ));
            }
        }
        let spec = preset::spec(sd.preset);
        let half = matches!(sd.device, ComputeDevice::Cuda(_));
        if let Err(error) =
            WeightFiles::locate(&sd.weights_dir, &spec, half, config.decode.tiny_decoder)
        {
            found.push((
                "model.weights-dir",
                format!("{:?}", sd.weights_dir.display().to_string()),
                format!("{error:#}: {then}"),
            ));
        }
    }
    // `auto` takes KMS first: the framebuffer only matters to it on a box without DRM cards.
    let local_devices = devices_are_this_machines();
    let auto_needs_framebuffer = config.display.sink == SinkKind::Auto
        && crate::sink::drm::card::card_paths(std::path::Path::new(
            crate::sink::drm::card::CARDS_DIR,
        ))
        .is_empty();
    if local_devices && (config.display.sink == SinkKind::Fbdev || auto_needs_framebuffer) {
        let framebuffer = &config.display.framebuffer;
        let what = match std::fs::metadata(framebuffer) {
            Ok(meta) if meta.file_type().is_char_device() => None,
            Ok(meta) if meta.is_dir() => Some("is a folder, not a character device"),
            Ok(_) => Some("is not a character device (a framebuffer is /dev/fbN)"),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Some("does not exist"),
            Err(_) => None, // no permission to look: the display's own error will say
        };
        if let Some(what) = what {
            let then = match config.display.sink {
                SinkKind::Auto => {
                    "and there is no DRM card either: display.sink = \"auto\" will fail under \
                     systemd (from a terminal it shows the art there)"
                }
                _ => "the display will not start (display.sink = \"fbdev\")",
            };
            found.push((
                "display.framebuffer",
                format!("{:?}", framebuffer.display().to_string()),
                format!("{what}: {then}"),
            ));
        }
    }
    if let Some(card) = config
        .display
        .card
        .as_ref()
        .filter(|_| matches!(config.display.sink, SinkKind::Drm | SinkKind::Auto))
        .filter(|_| local_devices)
    {
        let what = match std::fs::metadata(card) {
            Ok(meta)
                if meta.file_type().is_char_device() && libc::major(meta.rdev()) == DRM_MAJOR =>
            {
                None
            }
            Ok(meta) if meta.file_type().is_char_device() => {
                Some("is a character device but not a DRM card (a DRM card is /dev/dri/cardN)")
            }
            Ok(_) => Some("is not a character device (a DRM card is /dev/dri/cardN)"),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Some("does not exist"),
            Err(_) => None,
        };
        if let Some(what) = what {
            found.push((
                "display.card",
                format!("{:?}", card.display().to_string()),
                format!("{what}: the drm sink will not start (`dreamframe probe` lists the cards)"),
            ));
        }
    }
    // The console is taken by the screen sinks only; a missing one is said at run time.
    let console = config.display.console.as_ref().filter(|_| {
        matches!(
            config.display.sink,
            SinkKind::Drm | SinkKind::Fbdev | SinkKind::Auto
        )
    });
    if let Some(console) = console {
        let not_a_terminal = std::fs::metadata(console)
            .ok()
            .filter(|meta| !meta.file_type().is_char_device());
        if let Some(meta) = not_a_terminal {
            found.push((
                "display.console",
                format!("{:?}", console.display().to_string()),
                format!(
                    "is {}, not a terminal (a console is /dev/ttyN): the display will leave the \
                     console alone (its cursor and blanking may show over the art)",
                    crate::checked_fs::kind_of(meta.file_type())
                ),
            ));
        }
    }
    let output = crate::service::OutputPaths::for_config(config);
    if let Some(why) = crate::checked_fs::folder_blocked(&output.dir) {
        found.push((
            "output.dir",
            format!("{:?}", output.dir.display().to_string()),
            format!(
                "{why}: the display will run without status.json, snapshots, resume.json, its \
                 lock and (there) its log"
            ),
        ));
    }
    if let Some(log) = output.log {
        if let Some(meta) = std::fs::metadata(&log).ok().filter(|meta| !meta.is_file()) {
            found.push((
                "log.file",
                format!("{:?}", log.display().to_string()),
                format!(
                    "is {}, not a regular file: the display will log to stderr only",
                    crate::checked_fs::kind_of(meta.file_type())
                ),
            ));
        }
    }
    found.extend(
        unread
            .iter()
            .map(|(key, value, why)| (key.as_str(), value.clone(), why.clone())),
    );
    if found.is_empty() {
        return Vec::new();
    }
    let origin = path.display().to_string();
    let text = crate::checked_fs::read_regular(path, crate::config::MAX_CONFIG_BYTES)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .unwrap_or_default();
    place_warnings(&text, &origin, &found)
}

/// Keys set to other than their defaults that the chosen generator never reads: a theme's
/// `style` without model.kind = "mix", one style's section while it never runs, themes with the
/// test pattern.
fn without_effect(config: &Config) -> Vec<(String, String, String)> {
    let defaults = Config::default();
    let kind = config.model.kind;
    let cppn_runs = match kind {
        ModelKind::Cppn | ModelKind::Mix => true,
        ModelKind::StableDiffusion => config.model.fallback == Fallback::Cppn,
        ModelKind::Warp | ModelKind::Flame | ModelKind::TestPattern => false,
    };
    let warp_runs = matches!(kind, ModelKind::Warp | ModelKind::Mix);
    let flame_runs = matches!(kind, ModelKind::Flame | ModelKind::Mix);
    let mut found = Vec::new();
    let mut unread = |key: String, value: String, why: &str| {
        found.push((
            key,
            value,
            format!("has no effect with model.kind = \"{}\": {why}", kind.name()),
        ))
    };
    if kind == ModelKind::TestPattern && config.prompts != defaults.prompts {
        let count = config.prompts.themes.len();
        unread(
            "prompts.themes".into(),
            format!("{count} themes"),
            "the test pattern shows fixed bars",
        );
    }
    if kind != ModelKind::Mix {
        for (index, theme) in config.prompts.themes.iter().enumerate() {
            if let Some(style) = theme.style {
                unread(
                    format!("prompts.themes[{index}].style"),
                    format!("\"{}\"", style.name()),
                    "themes pick styles with model.kind = \"mix\"",
                );
            }
        }
    }
    if !cppn_runs && config.cppn != defaults.cppn {
        unread(
            "cppn".into(),
            "(a table)".into(),
            "it sets the cppn style, which never runs",
        );
    }
    if !warp_runs && config.warp != defaults.warp {
        unread(
            "warp".into(),
            "(a table)".into(),
            "it sets the warp style, which never runs",
        );
    }
    if !flame_runs && config.flame != defaults.flame {
        unread(
            "flame".into(),
            "(a table)".into(),
            "it sets the flame style, which never runs",
        );
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_are_judged_only_where_this_root_is_inits() {
        let dir = tempfile::tempdir().unwrap();
        let chroot = dir.path().join("chroot");
        std::fs::create_dir(&chroot).unwrap();
        assert!(same_root(dir.path(), dir.path()));
        assert!(!same_root(&chroot, dir.path()), "a chroot");
        assert!(
            !same_root(dir.path(), &dir.path().join("no-proc")),
            "an image build without /proc"
        );
    }
}
