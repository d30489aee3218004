//! A DRM card: the device file behind the `drm` crate's traits, finding cards, and the probe
//! report (`dreamframe probe`, and `auto`'s test for a connected screen). Runs on whichever
//! thread opens the sink or probes; every failure names the card and the fix.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use drm::control::{connector, crtc, plane, Device as ControlDevice};
use drm::Device;

use super::choice::{fourcc_name, mode_list, ModeInfo};

/// Where the kernel puts the cards.
pub(crate) const CARDS_DIR: &str = "/dev/dri";

/// An open DRM card (the primary node, /dev/dri/cardN).
pub(crate) struct Card {
    pub file: File,
    pub path: PathBuf,
}

impl AsFd for Card {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl Device for Card {}
impl ControlDevice for Card {}

impl Card {
    /// Opens the card for modesetting; its event queue is read without blocking. Anything but
    /// a character device (a FIFO, a plain file, a folder) is refused before it is opened.
    pub(crate) fn open(path: &Path) -> anyhow::Result<Self> {
        use std::os::unix::fs::FileTypeExt;
        if let Ok(meta) = std::fs::metadata(path) {
            if !meta.file_type().is_char_device() {
                anyhow::bail!(
                    "{} is not a DRM card (not a character device; cards are /dev/dri/cardN, \
                     `dreamframe probe` lists them)",
                    path.display()
                );
            }
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .map_err(|error| anyhow::anyhow!(open_hint(path, &error)))?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
        })
    }

    pub(crate) fn driver_name(&self) -> String {
        self.get_driver()
            .map(|d| d.name().to_string_lossy().into_owned())
            .unwrap_or_else(|_| "unknown".into())
    }

    /// "HDMI-A-1", "Virtual-1": the kernel's own connector names.
    pub(crate) fn connector_name(info: &connector::Info) -> String {
        format!("{}-{}", info.interface().as_str(), info.interface_id())
    }

    /// The plane's type ("primary", "overlay", "cursor") from its `type` property.
    pub(crate) fn plane_kind(&self, plane: plane::Handle) -> &'static str {
        let Ok(properties) = self.get_properties(plane) else {
            return "unknown";
        };
        let (handles, values) = properties.as_props_and_values();
        for (handle, value) in handles.iter().zip(values) {
            let named_type = self
                .get_property(*handle)
                .map(|info| info.name().to_bytes() == b"type")
                .unwrap_or(false);
            if named_type {
                return match value {
                    0 => "overlay",
                    1 => "primary",
                    2 => "cursor",
                    _ => "unknown",
                };
            }
        }
        "unknown"
    }

    /// The formats of the primary plane that can show `crtc` (empty: the driver lists none).
    pub(crate) fn primary_formats(&self, crtc: crtc::Handle) -> Vec<u32> {
        let Ok(resources) = self.resource_handles() else {
            return Vec::new();
        };
        let Ok(planes) = self.plane_handles() else {
            return Vec::new();
        };
        for plane in planes {
            let Ok(info) = self.get_plane(plane) else {
                continue;
            };
            let serves = resources
                .filter_crtcs(info.possible_crtcs())
                .contains(&crtc);
            if serves && self.plane_kind(plane) == "primary" {
                return info.formats().to_vec();
            }
        }
        Vec::new()
    }
}

fn open_hint(path: &Path, error: &std::io::Error) -> String {
    let path = path.display();
    match error.kind() {
        ErrorKind::PermissionDenied if crate::checked_fs::refused_by_device_policy(error) => {
            format!(
                "cannot open DRM card {path}: {error}: {}",
                crate::checked_fs::DEVICE_POLICY_HINT
            )
        }
        ErrorKind::PermissionDenied => format!(
            "cannot open DRM card {path}: permission denied. Add this user to the `video` and \
             `render` groups (`sudo usermod -aG video,render $USER`, then log in again) or run as \
             root"
        ),
        ErrorKind::NotFound => format!(
            "cannot open DRM card {path}: no such device. This machine has no KMS driver there \
             (on NVIDIA boot with `nvidia-drm.modeset=1`); `dreamframe probe` lists the cards, \
             `display.card` names one, `display.sink = \"fbdev\"` uses the framebuffer"
        ),
        _ => format!("cannot open DRM card {path}: {error}"),
    }
}

/// The cards under `dir` (card0, card1, ... in number order; render nodes left out).
pub(crate) fn card_paths(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut cards: Vec<(u32, PathBuf)> = entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let name = entry.file_name();
            let number = name.to_str()?.strip_prefix("card")?.parse().ok()?;
            Some((number, entry.path()))
        })
        .collect();
    cards.sort();
    cards.into_iter().map(|(_, path)| path).collect()
}

/// A connector as probed.
#[derive(Debug, Clone)]
pub(crate) struct ConnectorReport {
    pub handle: connector::Handle,
    pub name: String,
    pub connected: bool,
    pub status: &'static str,
    /// As the kernel lists them (best first), to set one.
    pub modes: Vec<drm::control::Mode>,
}

impl ConnectorReport {
    /// The modes as the choices read them.
    pub(crate) fn mode_infos(&self) -> Vec<ModeInfo> {
        self.modes.iter().map(ModeInfo::of).collect()
    }
}

/// Connectors of `card`, in the kernel's order. `force` re-reads the screens (EDID), which
/// only the master may and which can take tens of milliseconds; otherwise the kernel's last
/// known state.
pub(crate) fn connectors(card: &Card, force: bool) -> anyhow::Result<Vec<ConnectorReport>> {
    let resources = card.resource_handles().map_err(|error| {
        if error.raw_os_error() == Some(libc::ENOTTY) {
            anyhow::anyhow!(
                "{} is not a DRM card (DRM_IOCTL_MODE_GETRESOURCES: {error}); `dreamframe \
                 probe` lists the cards",
                card.path.display()
            )
        } else {
            anyhow::anyhow!(
                "{} does not do modesetting (DRM_IOCTL_MODE_GETRESOURCES: {error}); it may be a \
                 render-only GPU: `dreamframe probe` lists the cards",
                card.path.display()
            )
        }
    })?;
    let mut found = Vec::new();
    for &handle in resources.connectors() {
        let Ok(info) = card.get_connector(handle, force) else {
            continue;
        };
        let status = match info.state() {
            connector::State::Connected => "connected",
            connector::State::Disconnected => "disconnected",
            connector::State::Unknown => "unknown",
        };
        found.push(ConnectorReport {
            handle,
            name: Card::connector_name(&info),
            connected: info.state() == connector::State::Connected,
            status,
            modes: info.modes().to_vec(),
        });
    }
    Ok(found)
}

/// What `dreamframe probe` prints for one card: the card line, then a line per connector and
/// per plane.
pub(crate) fn probe_lines(path: &Path) -> Vec<String> {
    let unavailable = |error: String| {
        vec![crate::events::DrmCard {
            path: path.display().to_string(),
            error: Some(error),
            ..Default::default()
        }
        .to_string()]
    };
    let card = match Card::open(path) {
        Ok(card) => card,
        Err(error) => return unavailable(format!("{error:#}")),
    };
    let _ = card.set_client_capability(drm::ClientCapability::UniversalPlanes, true);
    let connectors = match connectors(&card, false) {
        Ok(connectors) => connectors,
        Err(error) => return unavailable(format!("{error:#}")),
    };
    let planes = card.plane_handles().unwrap_or_default();
    let crtcs = card
        .resource_handles()
        .map(|r| r.crtcs().len())
        .unwrap_or(0);
    let master = match card.acquire_master_lock() {
        Ok(()) => {
            let _ = card.release_master_lock();
            "available".to_string()
        }
        Err(error) => format!("held by another program ({error})"),
    };
    let card_name = path.display().to_string();
    let mut lines = vec![crate::events::DrmCard {
        path: card_name.clone(),
        driver: Some(card.driver_name()),
        connectors: Some(connectors.len()),
        crtcs: Some(crtcs),
        planes: Some(planes.len()),
        master: Some(master),
        error: None,
    }
    .to_string()];
    for connector in &connectors {
        lines.push(
            crate::events::DrmConnector {
                card: card_name.clone(),
                connector: connector.name.clone(),
                status: connector.status.into(),
                modes: mode_list(&connector.mode_infos()),
            }
            .to_string(),
        );
    }
    for plane in planes {
        let Ok(info) = card.get_plane(plane) else {
            continue;
        };
        let formats: Vec<String> = info.formats().iter().map(|&f| fourcc_name(f)).collect();
        lines.push(
            crate::events::DrmPlane {
                card: card_name.clone(),
                plane: u32::from(plane),
                kind: card.plane_kind(plane).into(),
                formats: formats.join(","),
            }
            .to_string(),
        );
    }
    lines
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
            message.starts_with("cannot open DRM card /dev/x1: Operation not permitted"),
            "{message}"
        );
        assert!(message.contains("DeviceAllow="), "{message}");
        assert!(!message.contains("group"), "{message}");
        let eacces = std::io::Error::from_raw_os_error(libc::EACCES);
        assert!(open_hint(path, &eacces).contains("`video`"));
    }

    #[test]
    fn cards_are_listed_in_number_order_without_render_nodes() {
        let dir = tempfile::tempdir().expect("temp dir");
        for name in ["card10", "card2", "renderD128", "card0", "cardX", "by-path"] {
            std::fs::write(dir.path().join(name), b"").expect("make entry");
        }
        let names: Vec<String> = card_paths(dir.path())
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["card0", "card2", "card10"]);
        assert!(card_paths(&dir.path().join("missing")).is_empty());
    }

    #[test]
    fn a_missing_card_explains_itself_and_a_plain_file_is_no_card() {
        let error = Card::open(Path::new("/nonexistent/card7"))
            .err()
            .expect("no card");
        let text = format!("{error:#}");
        assert!(
            text.contains("/nonexistent/card7") && text.contains("dreamframe probe"),
            "{text}"
        );
        let file = tempfile::NamedTempFile::new().expect("temp file");
        let Err(error) = Card::open(file.path()) else {
            panic!("a plain file taken for a card");
        };
        assert!(
            format!("{error:#}").contains("is not a DRM card"),
            "{error:#}"
        );
        // A character device that is not a card: its ioctls are refused, and it is named.
        let card = Card::open(Path::new("/dev/null")).expect("/dev/null opens");
        let Err(error) = connectors(&card, false) else {
            panic!("/dev/null taken for a card");
        };
        assert!(
            format!("{error:#}").contains("/dev/null is not a DRM card"),
            "{error:#}"
        );
        let lines = probe_lines(file.path());
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with("drm_card ") && lines[0].contains("error="),
            "{lines:?}"
        );
    }
}
