//! The guest's initramfs: a static busybox, the modules that reach the root file system
//! (virtio, 9p, overlayfs) and the TPM and RNG drivers when they are modules, and an `/init`
//! that mounts the host's root read-only under a tmpfs overlay and hands over to the run
//! script of [`super::guest`]. Cached beside the unpacked kernel, rebuilt when its inputs
//! change.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use super::kernel::Kernel;

/// The 9p tag of the host's root file system (read-only) and of the run's share.
pub const ROOT_TAG: &str = "sensor-root";
pub const SHARE_TAG: &str = "sensor-vm";
/// Where the share is mounted in the guest; the run script is `SHARE_DIR/run.sh`.
pub const SHARE_DIR: &str = "/sensor-vm";

/// The modules the guest needs before its root exists, and for its devices; each one that
/// the kernel has built in is skipped, and dependencies come from `modules.dep`.
const MODULES: &[&str] = &[
    "virtio_pci",
    "9pnet_virtio",
    "9p",
    "overlay",
    "virtio_rng",
    "tpm_tis",
];

const BUSYBOX: &str = "/bin/busybox";

/// Stage one, as PID 1 in the initramfs. Any failure says why on the console and powers the
/// guest off (qemu runs with -no-reboot, so the host sees qemu end without a boot marker).
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
fail() {
    echo "sensor-vm: boot failed: $*"
    echo o > /proc/sysrq-trigger
    sleep 60
    exit 1
}
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
while read -r m; do
    insmod "/modules/$m" || fail "insmod $m"
done < /modules/order
# The host's root, read-only (qemu refuses writes too), under an overlay whose upper layer
# is guest memory: the guest can write anywhere and none of it reaches the host.
mkdir -p /lower /rw /newroot
mount -t 9p -o ro,trans=virtio,version=9p2000.L,cache=loose,msize=512000 @ROOT@ /lower \
    || fail "mounting the host's root (9p)"
mount -t tmpfs -o mode=0755 sensor-rw /rw || fail "tmpfs"
mkdir -p /rw/upper /rw/work
mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work sensor-root /newroot \
    || fail "overlay over the host's root"
mkdir -p /newroot@SHARE_DIR@
mount -t 9p -o trans=virtio,version=9p2000.L,cache=none,msize=512000 @SHARE@ /newroot@SHARE_DIR@ \
    || fail "mounting the run's share (9p)"
ip link set lo up || fail "bringing lo up"
hostname sensor-vm
for d in dev proc sys; do
    mount -o move /$d /newroot/$d || fail "moving /$d"
done
# The rest of what the tests and the agent need, mounted here by busybox: under TCG every
# first exec of a dynamic binary from the host's root costs about half a second.
mnt() {
    # mnt TYPE OPTIONS DIR (a file system the kernel lacks is reported, not fatal)
    mkdir -p "/newroot$3" && mount -t "$1" -o "$2" "$1" "/newroot$3" \
        || echo "sensor-vm: mounting $1 on $3 failed"
}
mnt tmpfs mode=1777,nosuid,nodev /tmp
mnt tmpfs mode=0755,nosuid,nodev /run
mnt devpts gid=5,mode=620,ptmxmode=666 /dev/pts
mnt tmpfs mode=1777,nosuid,nodev /dev/shm
mnt securityfs rw /sys/kernel/security
mnt tracefs rw /sys/kernel/tracing
mnt debugfs rw /sys/kernel/debug
mnt bpf mode=0700 /sys/fs/bpf
mnt cgroup2 rw,nsdelegate /sys/fs/cgroup
# The guest kernel's own modules (the host's /lib/modules has none for it).
mkdir -p /newroot/lib/modules && ln -sfn @MODULES@ /newroot/lib/modules/@RELEASE@
OUT=/newroot@SHARE_DIR@/out
N=/newroot
{
    echo "release $(uname -r)"
    echo "lsm $(cat $N/sys/kernel/security/lsm 2>/dev/null)"
    echo "lockdown $(cat $N/sys/kernel/security/lockdown 2>/dev/null)"
    echo "tpm $(ls $N/dev/tpm0 $N/dev/tpmrm0 2>/dev/null | sed "s|^$N||" | tr '\n' ' ')"
    [ -e $N/sys/kernel/btf/vmlinux ] && echo "btf yes" || echo "btf no"
    [ -e $N/sys/kernel/tracing/kprobe_events ] && echo "kprobe_events yes" || echo "kprobe_events no"
} > "$OUT/kernel.txt" 2>&1
cut -d' ' -f1 $N/proc/uptime > "$OUT/booted"
echo "sensor-vm: booted"
cat "$OUT/kernel.txt"
exec switch_root /newroot /bin/sh @SHARE_DIR@/run.sh
"#;

/// The initramfs for `kernel`, built when missing or when its inputs changed.
pub fn build(kernel: &Kernel) -> Result<PathBuf> {
    let path = kernel.dir.join("initramfs.cpio");
    let key_path = kernel.dir.join("initramfs.key");
    let modules = resolve(kernel)?;
    let busybox = fs::metadata(BUSYBOX).with_context(|| {
        format!("{BUSYBOX} is missing: install busybox-static (cargo xtask setup)")
    })?;
    let init = INIT
        .replace("@ROOT@", ROOT_TAG)
        .replace("@SHARE@", SHARE_TAG)
        .replace("@SHARE_DIR@", SHARE_DIR)
        .replace(
            "@MODULES@",
            &format!(
                "'{}'",
                kernel
                    .modules()
                    .display()
                    .to_string()
                    .replace('\'', r"'\''")
            ),
        )
        .replace("@RELEASE@", &kernel.release);
    let key = format!(
        "{init}\n{modules:?}\nbusybox {} {}\n",
        busybox.len(),
        busybox.mtime()
    );
    if path.exists() && fs::read_to_string(&key_path).ok().as_deref() == Some(key.as_str()) {
        return Ok(path);
    }
    let busybox_bytes = fs::read(BUSYBOX)?;
    if !is_static(&busybox_bytes) {
        bail!("{BUSYBOX} is dynamically linked: install busybox-static (cargo xtask setup)");
    }
    let mut cpio = Cpio::default();
    for dir in [
        "bin", "dev", "proc", "sys", "modules", "lower", "rw", "newroot",
    ] {
        cpio.dir(dir);
    }
    cpio.node("dev/console", 0o020600, (5, 1));
    cpio.file("bin/busybox", 0o755, &busybox_bytes);
    cpio.file("init", 0o755, init.as_bytes());
    let mut order = String::new();
    for (name, file) in &modules {
        let bytes = module_bytes(&kernel.modules().join(file))?;
        let stored = format!("{name}.ko");
        cpio.file(&format!("modules/{stored}"), 0o644, &bytes);
        order.push_str(&stored);
        order.push('\n');
    }
    cpio.file("modules/order", 0o644, order.as_bytes());
    let tmp = path.with_extension("cpio.partial");
    fs::write(&tmp, cpio.finish())?;
    fs::rename(&tmp, &path)?;
    fs::write(&key_path, key)?;
    Ok(path)
}

/// The module files to load, in load order (dependencies first): (name, path relative to
/// `lib/modules/RELEASE`).
fn resolve(kernel: &Kernel) -> Result<Vec<(String, String)>> {
    let dir = kernel.modules();
    let name_of = |path: &str| -> String {
        let file = path.rsplit('/').next().unwrap_or(path);
        let stem = file.split(".ko").next().unwrap_or(file);
        stem.replace('-', "_")
    };
    let builtin: BTreeSet<String> = fs::read_to_string(dir.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .map(name_of)
        .collect();
    let dep_text = fs::read_to_string(dir.join("modules.dep"))
        .with_context(|| format!("reading {}/modules.dep", dir.display()))?;
    let mut deps: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for line in dep_text.lines() {
        let Some((module, rest)) = line.split_once(':') else {
            continue;
        };
        deps.insert(
            name_of(module),
            (
                module.to_string(),
                rest.split_whitespace().map(name_of).collect(),
            ),
        );
    }
    fn visit(
        name: &str,
        deps: &BTreeMap<String, (String, Vec<String>)>,
        out: &mut Vec<(String, String)>,
    ) {
        let Some((path, needs)) = deps.get(name) else {
            return;
        };
        if out.iter().any(|(n, _)| n == name) {
            return;
        }
        for need in needs {
            visit(need, deps, out);
        }
        out.push((name.to_string(), path.clone()));
    }
    let mut out = Vec::new();
    for want in MODULES {
        if builtin.contains(*want) {
            continue;
        }
        if !deps.contains_key(*want) {
            bail!(
                "kernel {} has module {want} neither built in nor in modules.dep",
                kernel.release
            );
        }
        visit(want, &deps, &mut out);
    }
    Ok(out)
}

/// A module file's ELF bytes: busybox's insmod takes no compressed module, so `.ko.xz`
/// (Debian 13) and `.ko.zst` are decompressed here.
fn module_bytes(path: &Path) -> Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        "xz"
    } else if name.ends_with(".zst") {
        "zstd"
    } else {
        return fs::read(path).with_context(|| format!("reading {name}"));
    };
    let out = Command::new(tool)
        .arg("-dc")
        .arg(path)
        .output()
        .with_context(|| format!("starting {tool} for {name}"))?;
    if !out.status.success() {
        bail!(
            "{tool} -dc {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out.stdout)
}

/// Whether an ELF executable has no program interpreter (PT_INTERP), i.e. runs with no
/// shared libraries: the initramfs has none.
fn is_static(elf: &[u8]) -> bool {
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    if !elf.starts_with(b"\x7fELF\x02\x01") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    (0..usize::from(phnum)).all(|i| {
        let at = phoff as usize + i * usize::from(phentsize);
        elf.get(at..at + 4)
            .is_some_and(|t| u32::from_le_bytes(t.try_into().expect("4 bytes")) != 3)
    })
}

/// A `newc` cpio archive, the format the kernel unpacks as an initramfs.
#[derive(Default)]
struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, (0, 0), &[]);
    }

    fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100000 | perm, (0, 0), data);
    }

    fn node(&mut self, name: &str, mode: u32, dev: (u32, u32)) {
        self.entry(name, mode, dev, &[]);
    }

    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
        let fields = [
            self.ino,
            mode,
            0,
            0,
            nlink,
            0,
            u32::try_from(data.len()).expect("initramfs file under 4 GiB"),
            0,
            0,
            rdev.0,
            rdev.1,
            u32::try_from(name.len() + 1).expect("short name"),
            0,
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        self.out.resize(self.out.len().next_multiple_of(4), 0);
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        // The kernel reads the archive in 512-byte blocks, as cpio writes it.
        self.out.resize(self.out.len().next_multiple_of(512), 0);
        self.out
    }
}
