//! The appliance as a user gets it: the Debian package installed with dpkg and the machine booted
//! under real systemd (PID 1, udev, logind, getty@tty1), in QEMU on bochs-display. Checks what
//! only a real boot shows (systemd-analyze reads the unit, it runs nothing):
//! - the enabled service starts at boot and its first picture is up (drm, chosen by `auto`);
//! - it owns the console: tty1 is handed to the `dreamframe` user, the configured console
//!   (/dev/tty0, the active VT) goes to graphics mode, no `console_unavailable`; stopped, the
//!   console is back in text mode;
//! - on the framebuffer, console text and kernel messages written under the art never show (the
//!   test pattern is on screen pixel for pixel);
//! - a device refused by a device policy is said to be so, not blamed on a missing group.
//!
//! The guest's root is this machine's own Debian over 9p (read-only) under a tmpfs overlay, so
//! nothing here changes and no image is built; what a minimal Debian has that this container
//! lacks (udev, which makes /dev/tty* 0620 group tty) comes from Debian's package, unpacked into
//! the overlay. Units this machine enables for itself (a database, timers) are left out of the
//! guest's boot, and so is its /.dockerenv: systemd would take the guest for a container and
//! start a getty on /dev/console, whose TTYReset= and TTYVHangup= put the active VT back in
//! text mode under the display. A root shell on the serial line (a unit of the test's own) drives it. Where QEMU,
//! the package tools or systemd are missing the test says SKIPPED and passes, except under
//! `CI=true`, where it fails (`util::skip`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use dreamframe::config::Rotation;
use dreamframe::events::parse::parse_fields;

use crate::qemu::{self, Cpio, Toolchain, Vm, MINUTE};

fn skip(reason: &str) {
    crate::util::skip("the package booted under systemd in QEMU", reason);
}

/// The kernel modules the guest needs before its root can be mounted (virtio, 9p, overlay) and
/// for the screen (bochs): the host's /lib/modules is not the guest kernel's, so udev can load
/// none of them.
const MODULES: &[&str] = &[
    "virtio",
    "virtio_ring",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "netfs",
    "fscache",
    "9pnet",
    "9pnet_virtio",
    "9p",
    "overlay",
];

/// Mounts the host's root read-only with a tmpfs over it, installs the package as the README
/// says (`dpkg -i` here: no network, and its dependencies are all installed), leaves out the
/// host's own enabled units and hands over to systemd. Mount points are made upper-only
/// (a whiteout, then a fresh directory): a mount on a directory backed by 9p is dropped when
/// 9p revalidates it.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
exec >/dev/ttyS0 2>&1
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
MODULES
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 host /lower || poweroff -f
mount -t tmpfs -o mode=755 tmpfs /upper
mkdir -p /upper/u/var /upper/w
for d in proc sys dev run tmp var/tmp home root; do mknod /upper/u/$d c 0 0; done
mount -t overlay -o lowerdir=/lower,upperdir=/upper/u,workdir=/upper/w overlay /newroot || poweroff -f
mkdir -m 555 /newroot/proc /newroot/sys
mkdir -m 755 /newroot/dev /newroot/run /newroot/home
mkdir -m 1777 /newroot/tmp /newroot/var/tmp
mkdir -m 700 /newroot/root
cp -a /extra/. /newroot/
echo 0123456789abcdef0123456789abcdef >/newroot/etc/machine-id
rm -f /newroot/.dockerenv /newroot/run/.containerenv
rm -f /newroot/etc/systemd/system/multi-user.target.wants/* /newroot/etc/systemd/system/timers.target.wants/*
mount -t proc proc /newroot/proc; mount -t sysfs sys /newroot/sys; mount -t devtmpfs dev /newroot/dev
chroot /newroot /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin /usr/bin/dpkg -i /tmp/dreamframe.deb
echo "@@dpkg $?"
ln -s /dev/null /newroot/etc/systemd/system/serial-getty@ttyS0.service
ln -s /etc/systemd/system/test-shell.service /newroot/etc/systemd/system/multi-user.target.wants/
exec switch_root /newroot /lib/systemd/systemd
"#;

/// The test's root shell on the serial line, the protocol of `qemu::Vm::sh`.
const SHELL_UNIT: &str = r#"[Unit]
Description=test driver on the serial line
[Service]
ExecStart=/bin/sh -c 'stty -echo; echo @@ready; while read -r line; do eval "$line"; echo "@@done $?"; done'
StandardInput=tty
StandardOutput=tty
TTYPath=/dev/ttyS0
"#;

/// Debian's udev package (apt-get download, cached beside QEMU's packages), unpacked.
fn udev(toolchain: &Toolchain, dir: &Path) -> Result<PathBuf, String> {
    let cache = toolchain.root.parent().ok_or("no QEMU cache")?.join("debs");
    let find = || {
        std::fs::read_dir(&cache).ok().and_then(|entries| {
            entries.flatten().map(|e| e.path()).find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("udev_"))
            })
        })
    };
    let deb = match find() {
        Some(deb) => deb,
        None => {
            qemu::run_quiet(
                Command::new("apt-get")
                    .args(["download", "udev"])
                    .current_dir(&cache),
            )?;
            find().ok_or("apt-get download udev left no udev_*.deb")?
        }
    };
    let unpacked = dir.join("udev");
    qemu::run_quiet(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
    Ok(unpacked)
}

/// Adds the files under `from` to the archive under `to`, with /lib, /bin and /sbin taken to
/// /usr as on a merged-/usr system (copying a `lib` folder over the `lib` link would break it).
fn add_tree(cpio: &mut Cpio, from: &Path, to: &str, made: &mut std::collections::BTreeSet<String>) {
    let mut entries: Vec<_> = std::fs::read_dir(from)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", from.display()))
        .flatten()
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let mut target = format!("{to}/{name}");
        for (merged, usr) in [
            ("extra/lib", "extra/usr/lib"),
            ("extra/bin", "extra/usr/bin"),
            ("extra/sbin", "extra/usr/sbin"),
        ] {
            if target == merged {
                target = usr.to_string();
            }
        }
        let kind = entry.file_type().expect("file type");
        if kind.is_symlink() {
            let link = std::fs::read_link(&path).expect("read link");
            cpio.entry(&target, 0o120777, link.to_string_lossy().as_bytes());
        } else if kind.is_dir() {
            if made.insert(target.clone()) {
                cpio.dir(&target);
            }
            add_tree(cpio, &path, &target, made);
        } else {
            use std::os::unix::fs::PermissionsExt;
            let mode = entry.metadata().expect("metadata").permissions().mode() & 0o7777;
            cpio.file(&target, &path, 0o100000 | mode);
        }
    }
}

fn initramfs(toolchain: &Toolchain, deb: &Path, udev: &Path, dir: &Path) -> PathBuf {
    let mut cpio = Cpio::default();
    let mut made = std::collections::BTreeSet::new();
    for d in [
        "bin",
        "dev",
        "proc",
        "sys",
        "mods",
        "lower",
        "upper",
        "newroot",
        "extra",
        "extra/usr",
        "extra/tmp",
        "extra/etc",
        "extra/etc/systemd",
        "extra/etc/systemd/system",
        "extra/root",
    ] {
        cpio.dir(d);
        made.insert(d.to_string());
    }
    cpio.file("bin/busybox", &toolchain.root.join("bin/busybox"), 0o100755);
    let mut loads = String::new();
    for module in MODULES.iter().chain(qemu::BOCHS_MODULES) {
        cpio.file(
            &format!("mods/{module}.ko"),
            &toolchain.module(module),
            0o100644,
        );
        loads.push_str(&format!("insmod /mods/{module}.ko\n"));
    }
    add_tree(&mut cpio, udev, "extra", &mut made);
    cpio.file("extra/tmp/dreamframe.deb", deb, 0o100644);
    cpio.entry(
        "extra/etc/systemd/system/test-shell.service",
        0o100644,
        SHELL_UNIT.as_bytes(),
    );
    // The framebuffer leg's config: the test pattern pixel for pixel, the console as shipped.
    let pattern = qemu::config("test-pattern", 0, "").replace("/dev/tty1", "/dev/tty0");
    cpio.entry("extra/root/pattern.toml", 0o100644, pattern.as_bytes());
    cpio.entry(
        "init",
        0o100755,
        INIT.replace("MODULES\n", &loads).as_bytes(),
    );
    let path = dir.join("initramfs.cpio");
    std::fs::write(&path, cpio.finish()).expect("write the initramfs");
    path
}

/// Waits for a display started by systemd to have a frame on screen (status.json is removed
/// before each start, so an old one can't answer).
const FIRST_FRAME: &str =
    "i=0; until grep -q '\"frames_shown\": [1-9]' /var/lib/dreamframe/status.json 2>/dev/null; \
     do sleep 1; i=$((i+1)); [ $i -gt 300 ] && exit 1; done; true";

/// What the service said about itself, for failures.
const SERVICE_STATE: &str = "systemctl status dreamframe --no-pager -l | head -n 12; journalctl -b -u dreamframe --no-pager -o cat | tail -n 40";

fn guest_ok(vm: &mut Vm, line: &str, timeout: Duration) -> Vec<String> {
    let (output, status) = vm.sh(line, timeout);
    if status != 0 {
        let (state, _) = vm.sh(SERVICE_STATE, MINUTE);
        vm.fail(&format!(
            "guest command failed ({status}): {line}\n{}\n--- the service ---\n{}",
            output.join("\n"),
            state.join("\n")
        ));
    }
    output
}

/// The log lines of the service's current run.
fn journal(vm: &mut Vm) -> String {
    guest_ok(vm, "journalctl -b -u dreamframe --no-pager -o cat _SYSTEMD_INVOCATION_ID=$(systemctl show -p InvocationID --value dreamframe)", MINUTE).join("\n")
}

#[test]
fn the_package_boots_under_systemd_into_the_art_and_owns_the_console() {
    let toolchain = match qemu::toolchain() {
        Ok(toolchain) => toolchain,
        Err(reason) => return skip(reason),
    };
    for (tool, path) in [
        ("systemd", "/lib/systemd/systemd"),
        ("dpkg", "/usr/bin/dpkg"),
        ("cargo-deb", ""),
    ] {
        let missing = if path.is_empty() {
            Command::new("cargo")
                .args(["deb", "--version"])
                .output()
                .map_or(true, |o| !o.status.success())
        } else {
            !Path::new(path).exists()
        };
        if missing {
            return skip(&format!("{tool} is not installed on this machine"));
        }
    }
    let dir = tempfile::Builder::new()
        .prefix("dreamframe-appliance-")
        .tempdir()
        .expect("temp dir");
    // Built before the machine is ours alone: the build takes the same lock.
    let deb = crate::deb::build(dir.path());
    let _alone = crate::util::cpu_hog();
    let started = Instant::now();
    let udev = match udev(toolchain, dir.path()) {
        Ok(udev) => udev,
        Err(reason) => return skip(&reason),
    };
    let initramfs = initramfs(toolchain, &deb, &udev, dir.path());
    let share = "local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap";
    let machine = [
        &["-m", "1024", "-smp", "2", "-virtfs", share][..],
        qemu::BOCHS_DISPLAY,
    ]
    .concat();
    // /dev/console is tty0 (the last console=), as on an appliance: systemd's status goes to the
    // screen, the serial line keeps the installer's output and the test's shell.
    let mut vm = Vm::boot(
        toolchain,
        "appliance",
        &initramfs,
        "quiet console=tty0",
        &machine,
        dir.path(),
        // 45 s on an idle machine; 297 s in a CI run beside the rest of the suite (TCG).
        Duration::from_secs(600),
    );
    let booted = started.elapsed();

    // Started at boot by its enabled unit; the first picture up.
    guest_ok(&mut vm, FIRST_FRAME, Duration::from_secs(360));
    let up = started.elapsed();
    let log = journal(&mut vm);
    for wanted in [
        "sink_chosen sink=drm",
        "console path=/dev/tty0 mode=graphics",
    ] {
        if !log.contains(wanted) {
            vm.fail(&format!("no {wanted:?} in the service's log:\n{log}"));
        }
    }
    if log.contains("console_unavailable") {
        vm.fail(&format!("the service could not take the console:\n{log}"));
    }
    // tty1 is the service's (systemd handed it over), the console in graphics mode, no getty.
    let owners = guest_ok(
        &mut vm,
        "stat -c '%n %a %U %G' /dev/tty0 /dev/tty1; systemctl is-active getty@tty1 || true",
        MINUTE,
    );
    assert!(
        owners.iter().any(|l| l == "/dev/tty0 620 root tty"),
        "udev's modes: {owners:?}"
    );
    assert!(
        owners.iter().any(|l| l == "/dev/tty1 620 dreamframe tty"),
        "{owners:?}"
    );
    assert!(
        owners.iter().any(|l| l == "inactive"),
        "getty@tty1 must give way: {owners:?}"
    );
    let probe = guest_ok(
        &mut vm,
        "/usr/bin/dreamframe probe --console /dev/tty1 | grep '^console '",
        MINUTE,
    );
    if probe != ["console path=/dev/tty1 mode=graphics"] {
        let (state, _) = vm.sh(&format!("cat /sys/class/tty/tty0/active; {SERVICE_STATE}; journalctl -b -o short-monotonic --no-pager | grep -v 'dreamframe\\[' | tail -n 60"), MINUTE);
        vm.fail(&format!(
            "tty1 is not in graphics mode under the service: {probe:?}\n{}",
            state.join("\n")
        ));
    }
    if let Err(problem) = vm.moves_within(Instant::now(), Duration::from_secs(90)) {
        let log = journal(&mut vm);
        vm.fail(&format!("the service's art: {problem}\n{log}"));
    }

    // Stopped: the console comes back.
    guest_ok(&mut vm, "systemctl stop dreamframe", MINUTE);
    let stopped = guest_ok(
        &mut vm,
        "journalctl -b -u dreamframe --no-pager -o cat | grep -o 'console path=.*'",
        MINUTE,
    );
    assert_eq!(
        stopped.last().map(String::as_str),
        Some("console path=/dev/tty0 mode=restored"),
        "{stopped:?}"
    );
    let probe = guest_ok(
        &mut vm,
        "/usr/bin/dreamframe probe --console /dev/tty1",
        MINUTE,
    );
    assert!(
        probe
            .iter()
            .any(|l| l == "console path=/dev/tty1 mode=text"),
        "{probe:?}"
    );
    let report = probe
        .iter()
        .find(|l| l.starts_with("framebuffer "))
        .unwrap_or_else(|| vm.fail(&format!("no framebuffer line from the probe: {probe:?}")));
    let geometry = qemu::geometry_of(&parse_fields(report));

    // A device policy's refusal is named as one (EPERM), not as a missing group (EACCES).
    let refused = guest_ok(&mut vm, "systemd-run --wait --pipe --quiet -p DevicePolicy=closed /usr/bin/dreamframe probe --framebuffer /dev/fb0 --console /dev/tty1; true", MINUTE);
    for device in [
        "framebuffer path=/dev/fb0",
        "console path=/dev/tty1",
        "drm_card path=/dev/dri/card0",
    ] {
        let line = refused
            .iter()
            .find(|l| l.starts_with(device))
            .unwrap_or_else(|| vm.fail(&format!("no {device:?} line: {refused:?}")));
        assert!(
            line.contains("Operation not permitted") && line.contains("DeviceAllow="),
            "{line}"
        );
        assert!(
            !line.contains("group"),
            "no group helps against a device policy: {line}"
        );
    }

    // The framebuffer: console text and kernel messages under the art never show.
    guest_ok(&mut vm, "cp /root/pattern.toml /etc/dreamframe/dreamframe.toml && rm -f /var/lib/dreamframe/status.json && systemctl start dreamframe", Duration::from_secs(360));
    guest_ok(&mut vm, FIRST_FRAME, Duration::from_secs(360));
    vm.scribble_on_console();
    let log = journal(&mut vm);
    assert!(
        log.contains("console path=/dev/tty0 mode=graphics"),
        "{log}"
    );
    let pattern = vm.screendump();
    let (mismatches, first) = qemu::pattern_mismatches(&pattern, geometry, Rotation::None);
    if mismatches != 0 {
        vm.fail(&format!("{mismatches} pixels differ from the test pattern under the service ({first}); dumps kept in {}", dir.keep().display()));
    }
    guest_ok(&mut vm, "systemctl stop dreamframe", MINUTE);
    let _ = writeln!(
        std::io::stderr(),
        "appliance: booted in {:.1} s, first picture {:.1} s after power-on, passed in {:.1} s",
        booted.as_secs_f64(),
        up.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
