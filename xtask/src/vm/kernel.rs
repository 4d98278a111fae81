//! The Debian kernels the lane boots: the newest `linux-image-*-amd64` of a suite, fetched by
//! apt from a private sources list, state and cache (never the system's), verified by apt
//! against the suite's signed Release file, and unpacked once under `target/vm/`.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

/// One kernel the lane can boot, named by its version line.
pub struct Suite {
    /// The name on the command line (`--kernel 6.1`).
    pub name: &'static str,
    /// The Debian suite whose `linux-image-amd64` names the kernel.
    pub codename: &'static str,
    pub debian: &'static str,
}

pub const SUITES: &[Suite] = &[
    Suite {
        name: "5.10",
        codename: "bullseye",
        debian: "Debian 11",
    },
    Suite {
        name: "6.1",
        codename: "bookworm",
        debian: "Debian 12",
    },
    Suite {
        name: "6.12",
        codename: "trixie",
        debian: "Debian 13",
    },
];

/// The keyring apt checks every suite's Release file with (debian-archive-keyring).
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// An unpacked kernel package.
pub struct Kernel {
    pub suite: &'static Suite,
    /// `linux-image-6.1.0-37-amd64`
    pub package: String,
    /// `6.1.140-1`
    pub version: String,
    /// What `uname -r` says in the guest.
    pub release: String,
    /// The unpacked package: `boot/vmlinuz-RELEASE`, `boot/config-RELEASE`,
    /// `lib/modules/RELEASE` (with the `modules.dep` made by depmod).
    pub dir: PathBuf,
}

impl Kernel {
    pub fn vmlinuz(&self) -> PathBuf {
        self.dir.join(format!("boot/vmlinuz-{}", self.release))
    }

    pub fn config(&self) -> PathBuf {
        self.dir.join(format!("boot/config-{}", self.release))
    }

    pub fn modules(&self) -> PathBuf {
        self.dir.join("lib/modules").join(&self.release)
    }
}

/// The Debian archive this machine's apt uses (`URIs:` or `deb URI` of the entry serving
/// the main archive), read from /etc/apt at run time so the lane fetches from the same host.
pub fn mirror() -> Result<String> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = dir
            .filter_map(|e| Some(e.ok()?.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "list" || x == "sources"))
            .collect();
        more.sort();
        files.extend(more);
    }
    let mut uris = Vec::new();
    for file in files {
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        if file.extension().is_some_and(|x| x == "sources") {
            uris.extend(deb822_uris(&text));
        } else {
            uris.extend(one_line_uris(&text));
        }
    }
    uris.into_iter()
        .find(|u| u.trim_end_matches('/').ends_with("/debian"))
        .map(|u| u.trim_end_matches('/').to_string())
        .context(
            "no Debian archive (a `deb` source whose URI ends in /debian) in /etc/apt/sources.list \
             or /etc/apt/sources.list.d: the VM lane fetches its kernels from the machine's own mirror",
        )
}

/// `URIs:` of the `Types: deb` stanzas of a deb822 `.sources` file that are not disabled.
fn deb822_uris(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza
                .lines()
                .filter(|l| !l.starts_with('#'))
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
                })
        };
        let is_deb = field("Types").is_some_and(|t| t.split_whitespace().any(|t| t == "deb"));
        let enabled = field("Enabled").is_none_or(|e| !e.eq_ignore_ascii_case("no"));
        if is_deb && enabled {
            if let Some(uris) = field("URIs") {
                out.extend(uris.split_whitespace().map(str::to_string));
            }
        }
    }
    out
}

/// The URIs of the `deb [options] URI suite components` lines of a `.list` file.
fn one_line_uris(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let l = l.split('#').next()?.trim();
            let rest = l.strip_prefix("deb ")?.trim_start();
            let rest = match rest.strip_prefix('[') {
                Some(opts) => opts.split_once(']')?.1.trim_start(),
                None => rest,
            };
            rest.split_whitespace().next().map(str::to_string)
        })
        .collect()
}

/// apt-get and apt-cache confined to the suite's own sources list, index, state and cache
/// under `target/vm/apt/SUITE/`: the system's sources, lists, pinning and caches are
/// neither read nor written.
struct PrivateApt {
    dir: PathBuf,
}

impl PrivateApt {
    fn new(cache: &Path, suite: &Suite, mirror: &str) -> Result<PrivateApt> {
        let dir = cache.join("apt").join(suite.codename);
        for sub in ["lists/partial", "cache/archives/partial", "empty"] {
            fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }
        fs::write(
            dir.join("sources.list"),
            format!(
                "# Written by `cargo xtask vm-test`: the mirror of /etc/apt, suite {}.\n\
                 deb [signed-by={KEYRING}] {mirror} {} main\n",
                suite.codename, suite.codename
            ),
        )?;
        // An empty dpkg status: candidates come from this suite alone, never from what the
        // host has installed.
        fs::write(dir.join("status"), "")?;
        Ok(PrivateApt { dir })
    }

    fn cmd(&self, tool: &str) -> Command {
        let d = |sub: &str| self.dir.join(sub).display().to_string();
        let mut cmd = Command::new(tool);
        for (key, value) in [
            ("Dir::Etc::SourceList", d("sources.list")),
            ("Dir::Etc::SourceParts", d("empty")),
            ("Dir::Etc::Preferences", d("empty/preferences")),
            ("Dir::Etc::PreferencesParts", d("empty")),
            ("Dir::State", d("")),
            ("Dir::State::Lists", d("lists")),
            ("Dir::State::status", d("status")),
            ("Dir::Cache", d("cache")),
            ("Acquire::Languages", "none".into()),
            // The system's appstream hook would fetch DEP-11 metadata the lane never reads.
            (
                "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled",
                "false".into(),
            ),
            (
                "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled",
                "false".into(),
            ),
            (
                "Acquire::IndexTargets::deb::DEP-11-icons-hidpi::DefaultEnabled",
                "false".into(),
            ),
            ("Acquire::AllowInsecureRepositories", "false".into()),
        ] {
            cmd.arg("-o").arg(format!("{key}={value}"));
        }
        cmd.env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    }

    /// `apt-get update`; fails, naming the keyring, when the suite's Release file cannot
    /// be verified.
    fn update(&self, suite: &Suite) -> Result<()> {
        let out = self
            .cmd("apt-get")
            .args(["update", "-q"])
            .output()
            .context("starting apt-get update")?;
        let err = String::from_utf8_lossy(&out.stderr);
        let signature: Vec<&str> = err
            .lines()
            .filter(|l| {
                [
                    "NO_PUBKEY",
                    "EXPKEYSIG",
                    "is not signed",
                    "GPG error",
                    "BADSIG",
                ]
                .iter()
                .any(|s| l.contains(s))
            })
            .collect();
        if !signature.is_empty() {
            bail!(
                "apt could not verify the {} Release file with the machine's keyring {KEYRING}:\n  {}\n\
                 The signing key of {} is missing or expired there: install a newer \
                 debian-archive-keyring (the lane never fetches an unverified kernel).",
                suite.codename,
                signature.join("\n  "),
                suite.codename
            );
        }
        if !out.status.success() {
            bail!(
                "apt-get update for {} failed ({}):\n{err}",
                suite.codename,
                out.status
            );
        }
        Ok(())
    }

    /// `apt-cache show --no-all-versions WHAT`'s first record, as (field, value) lines.
    fn show(&self, what: &str) -> Result<Vec<(String, String)>> {
        let out = self
            .cmd("apt-cache")
            .args(["show", "--no-all-versions", what])
            .output()
            .context("starting apt-cache show")?;
        if !out.status.success() {
            bail!(
                "apt-cache show {what} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let record = text.split("\n\n").next().unwrap_or_default();
        Ok(record
            .lines()
            .filter(|l| !l.starts_with(' '))
            .filter_map(|l| {
                let (k, v) = l.split_once(':')?;
                Some((k.to_string(), v.trim().to_string()))
            })
            .collect())
    }
}

fn field<'a>(record: &'a [(String, String)], name: &str) -> Option<&'a str> {
    record
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The suite's newest kernel, downloaded and unpacked when the cache does not have it yet.
pub fn fetch(cache: &Path, suite: &'static Suite, mirror: &str) -> Result<Kernel> {
    if !Path::new(KEYRING).exists() {
        bail!("{KEYRING} is missing: install debian-archive-keyring (apt verifies the kernels with it)");
    }
    let apt = PrivateApt::new(cache, suite, mirror)?;
    eprintln!(
        "xtask vm: {} ({} {}): apt-get update from {mirror}",
        suite.name, suite.debian, suite.codename
    );
    apt.update(suite)?;
    // The meta-package names the suite's current kernel ABI package.
    let meta = apt.show("linux-image-amd64")?;
    let depends = field(&meta, "Depends").context("linux-image-amd64 has no Depends")?;
    let (package, version) = depends
        .split(',')
        .next()
        .and_then(|d| {
            let d = d.split('|').next()?.trim();
            let (name, rest) = d.split_once(" (= ")?;
            Some((name.trim().to_string(), rest.strip_suffix(')')?.to_string()))
        })
        .filter(|(name, _)| name.starts_with("linux-image-"))
        .with_context(|| format!("cannot read the kernel package from Depends: {depends}"))?;
    let record = apt.show(&format!("{package}={version}"))?;
    let sha256 = field(&record, "SHA256")
        .with_context(|| format!("{package} {version} has no SHA256 in the index"))?
        .to_string();

    let debs = cache.join("debs").join(suite.codename);
    fs::create_dir_all(&debs)?;
    let deb = debs.join(format!(
        "{package}_{}_amd64.deb",
        version.replace(':', "%3a")
    ));
    if deb.exists() && sha256_of(&deb)? == sha256 {
        eprintln!(
            "xtask vm: {}: {package} {version} (cached; SHA256 as in the signed index)",
            suite.name
        );
    } else {
        download(&apt, &debs, &package, &version, &deb)?;
        let got = sha256_of(&deb)?;
        if got != sha256 {
            let _ = fs::remove_file(&deb);
            bail!("{package} {version}: SHA256 {got} differs from the signed index's {sha256}");
        }
    }
    remove_others(&debs, &deb)?;

    let kernels = cache.join("kernels").join(suite.codename);
    let dir = kernels.join(format!("{package}_{version}"));
    if !dir.join("complete").exists() {
        unpack(&deb, &dir)?;
    }
    remove_others(&kernels, &dir)?;
    let release = fs::read_to_string(dir.join("complete"))?.trim().to_string();
    Ok(Kernel {
        suite,
        package,
        version,
        release,
        dir,
    })
}

/// `apt-get download PACKAGE=VERSION` into a fresh directory, moved to `deb`. apt refuses a
/// package whose index it could not authenticate, and checks the file's hash against it.
fn download(apt: &PrivateApt, debs: &Path, package: &str, version: &str, deb: &Path) -> Result<()> {
    eprintln!("xtask vm: downloading {package} {version}");
    let tmp = debs.join(format!(".download-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
    // apt downloads as its sandbox user `_apt`; without this it warns and downloads as root.
    let _ = Command::new("chown")
        .args(["_apt"])
        .arg(&tmp)
        .stderr(std::process::Stdio::null())
        .status();
    let result = (|| {
        crate::status(
            apt.cmd("apt-get")
                .args(["download", "-q"])
                .arg(format!("{package}={version}"))
                .current_dir(&tmp),
            "apt-get download",
        )?;
        let got = fs::read_dir(&tmp)?
            .filter_map(|e| Some(e.ok()?.path()))
            .find(|p| p.extension().is_some_and(|x| x == "deb"))
            .context("apt-get download left no .deb")?;
        fs::rename(&got, deb)?;
        Ok(())
    })();
    let _ = fs::remove_dir_all(&tmp);
    result
}

/// Unpacks the package into `dir` (whole or not at all): the kernel, its config, every
/// module (kept in `lib/modules`, where depmod and the guest look) and a `modules.dep`.
fn unpack(deb: &Path, dir: &Path) -> Result<()> {
    eprintln!("xtask vm: unpacking {}", deb.display());
    let name = dir.file_name().context("kernel dir")?.to_string_lossy();
    let tmp = dir.with_file_name(format!(".{name}.partial"));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
    crate::status(
        Command::new("dpkg-deb").arg("-x").arg(deb).arg(&tmp),
        "dpkg-deb -x",
    )?;
    // Debian 13 ships the modules in /usr/lib/modules (merged /usr).
    let usr = tmp.join("usr/lib/modules");
    if usr.exists() && !tmp.join("lib/modules").exists() {
        fs::create_dir_all(tmp.join("lib"))?;
        fs::rename(&usr, tmp.join("lib/modules"))?;
    }
    let release = fs::read_dir(tmp.join("boot"))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .find_map(|n| n.strip_prefix("vmlinuz-").map(str::to_string))
        .with_context(|| format!("no boot/vmlinuz-* in {}", deb.display()))?;
    if !tmp.join("lib/modules").join(&release).exists() {
        bail!("{} has no lib/modules/{release}", deb.display());
    }
    // The package has no modules.dep (its postinst runs depmod).
    crate::status(
        Command::new("depmod").arg("-b").arg(&tmp).arg(&release),
        "depmod",
    )?;
    fs::write(tmp.join("complete"), format!("{release}\n"))?;
    let _ = fs::remove_dir_all(dir);
    fs::rename(&tmp, dir)?;
    Ok(())
}

/// Removes the entries of `dir` other than `keep` (an older kernel of the same suite).
fn remove_others(dir: &Path, keep: &Path) -> Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path != keep
            && !path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        {
            if path.is_dir() {
                let _ = fs::remove_dir_all(&path);
            } else {
                let _ = fs::remove_file(&path);
            }
        }
    }
    Ok(())
}

fn sha256_of(path: &Path) -> Result<String> {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .context("starting sha256sum")?;
    if !out.status.success() {
        bail!("sha256sum {} failed", path.display());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string())
}

/// `NAME=value` of the kernel's config options that decide which hooks can load (BTF,
/// BPF LSM, kprobes, the trampolines of fentry), for the report.
pub fn config_facts(kernel: &Kernel) -> Vec<String> {
    const NAMES: &[&str] = &[
        "CONFIG_DEBUG_INFO_BTF",
        "CONFIG_BPF_LSM",
        "CONFIG_KPROBES",
        "CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS",
        "CONFIG_LSM",
    ];
    let text = fs::read_to_string(kernel.config()).unwrap_or_default();
    NAMES
        .iter()
        .map(|name| {
            let value = text
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
                .unwrap_or("n");
            format!("{}={value}", name.trim_start_matches("CONFIG_"))
        })
        .collect()
}
