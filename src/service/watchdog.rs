//! systemd notifications (the sd_notify datagram protocol): READY=1 once the first frame is on
//! screen, WATCHDOG=1 only while the pacing thread is really reaching its deadlines, STOPPING=1 on
//! shutdown. Without $NOTIFY_SOCKET (not under systemd) every call does nothing. Sent from the
//! tokio thread; a failed send is logged once and otherwise ignored.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

pub(crate) struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    warned: bool,
}

fn socket_address(path: &str) -> std::io::Result<SocketAddr> {
    match path.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())
        }
        None => SocketAddr::from_pathname(path),
    }
}

impl Notifier {
    pub(crate) fn from_env() -> Self {
        let target = std::env::var("NOTIFY_SOCKET")
            .ok()
            .filter(|p| !p.is_empty())
            .and_then(|path| {
                match UnixDatagram::unbound()
                    .and_then(|socket| Ok((socket, socket_address(&path)?)))
                {
                    Ok(target) => Some(target),
                    Err(error) => {
                        log::warn!(
                            "{}",
                            crate::events::NotifyUnavailable {
                                socket: path.clone(),
                                error: error.to_string(),
                            }
                        );
                        None
                    }
                }
            });
        Self {
            target,
            warned: false,
        }
    }

    pub(crate) fn is_active(&self) -> bool {
        self.target.is_some()
    }

    pub(crate) fn send(&mut self, message: &str) {
        if let Some((socket, address)) = &self.target {
            if let Err(error) = socket.send_to_addr(message.as_bytes(), address) {
                if !self.warned {
                    log::warn!(
                        "{}",
                        crate::events::NotifyFailed {
                            message: message.into(),
                            error: error.to_string(),
                        }
                    );
                    self.warned = true;
                }
            }
        }
    }

    /// How often to ping the watchdog: half of systemd's WatchdogSec, if it set one for us.
    pub(crate) fn watchdog_interval() -> Option<Duration> {
        let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
        if let Ok(pid) = std::env::var("WATCHDOG_PID") {
            if pid.parse::<u32>().ok()? != std::process::id() {
                return None;
            }
        }
        (usec > 0).then(|| Duration::from_micros(usec / 2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_reach_the_notify_socket() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("notify.sock");
        let receiver = UnixDatagram::bind(&path).expect("bind");
        let mut notifier = Notifier {
            target: Some((
                UnixDatagram::unbound().unwrap(),
                socket_address(path.to_str().unwrap()).unwrap(),
            )),
            warned: false,
        };
        notifier.send("READY=1");
        let mut buffer = [0u8; 64];
        let n = receiver.recv(&mut buffer).expect("datagram");
        assert_eq!(&buffer[..n], b"READY=1");
    }
}
