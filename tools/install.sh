#!/usr/bin/env bash
# One-step install of dreamframe as the display a box boots into (run as root, after
# `cargo build --release`): the binary to /usr/local/bin, the config to /etc/dreamframe/ (an
# existing one is kept), the `dreamframe` system user in the framebuffer/console/GPU groups, the
# unit (and on a CUDA box its drop-in, systemd/cuda.conf) enabled. DESTDIR=/some/dir stages the files there instead and skips user and systemctl.
# On Debian and Ubuntu the package from `cargo deb` does the same with /usr/bin (README); this
# script is for the other systems.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${DESTDIR:-}
binary=${BINARY:-target/release/dreamframe}
[[ -x "$binary" ]] || { echo "no $binary: run cargo build --release first" >&2; exit 1; }
if [[ -z "$dest" && $EUID -ne 0 ]]; then
  echo "run as root (or set DESTDIR to stage the files)" >&2
  exit 1
fi

install -D -m 0755 "$binary" "$dest/usr/local/bin/dreamframe"
# The log analyzer, for reading the logs over SSH (built alongside by cargo build --release).
analyzer="$(dirname "$binary")/dreamframe-analyze"
[[ -x "$analyzer" ]] && install -D -m 0755 "$analyzer" "$dest/usr/local/bin/dreamframe-analyze"
if [[ -e "$dest/etc/dreamframe/dreamframe.toml" ]]; then
  echo "keeping the existing $dest/etc/dreamframe/dreamframe.toml"
else
  install -D -m 0644 config/dreamframe.toml "$dest/etc/dreamframe/dreamframe.toml"
fi
# The unit names the Debian package's path, /usr/bin/dreamframe; this install's is /usr/local/bin.
install -d "$dest/etc/systemd/system"
sed 's|^ExecStart=/usr/bin/dreamframe |ExecStart=/usr/local/bin/dreamframe |' systemd/dreamframe.service \
  >"$dest/etc/systemd/system/dreamframe.service"
chmod 0644 "$dest/etc/systemd/system/dreamframe.service"
grep -q '^ExecStart=/usr/local/bin/dreamframe ' "$dest/etc/systemd/system/dreamframe.service" ||
  { echo "systemd/dreamframe.service: no ExecStart=/usr/bin/dreamframe to point at /usr/local/bin" >&2; exit 1; }
# On a CUDA box (the NVIDIA driver loaded, or CUDA=1 when staging) the drop-in that lets the
# service open every NVIDIA device (systemd/cuda.conf says what it changes and why).
if [[ -e /proc/driver/nvidia/version || -n "${CUDA:-}" ]]; then
  install -D -m 0644 systemd/cuda.conf "$dest/etc/systemd/system/dreamframe.service.d/cuda.conf"
fi
"$dest/usr/local/bin/dreamframe" --check-config "$dest/etc/dreamframe/dreamframe.toml"

if [[ -z "$dest" ]]; then
  groups=$(for g in video tty render; do getent group "$g" >/dev/null && printf '%s,' "$g"; done)
  if ! id dreamframe >/dev/null 2>&1; then
    useradd --system --no-create-home --home-dir /var/lib/dreamframe --shell /usr/sbin/nologin \
      --groups "${groups%,}" dreamframe
  fi
  systemctl daemon-reload
  systemctl enable dreamframe.service
  echo "installed; start now with: systemctl start dreamframe"
  echo "for a clean screen add to the kernel command line: consoleblank=0 vt.global_cursor_default=0"
  echo "(and on NVIDIA: nvidia-drm.modeset=1 nvidia-drm.fbdev=1)"
fi
