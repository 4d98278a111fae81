//! Agent configuration: the embedded defaults (`default-config.toml`), then the user's file,
//! which adds watches and owners, overrides `[agent]` keys one by one, removes default
//! watches with `unwatch`, or starts from nothing with `default_watches = false`.
//!
//! `raw` is the file as written, `validate` checks one file, `merge` lays the user's file
//! over the defaults; the `[tpm]` section is read and checked by `sensor-tpm`. Every error
//! names the file and the key (`watch[2].path`) and says what is wrong.
//! Documented in `docs/configuration.md`.

mod error;
mod merge;
mod raw;
mod validate;

use std::path::{Path, PathBuf};
use std::time::Duration;

use sensor_tpm::TpmConfig;
use serde::Deserialize;

use crate::attribution::OwnerRule;
use crate::watch::Rule;
pub use error::ConfigError;

/// The embedded defaults.
pub const DEFAULT_CONFIG: &str = include_str!("../../default-config.toml");
/// The name errors in the embedded defaults give as their file.
const DEFAULTS_NAME: &str = "<embedded defaults>";

/// A procfs file of other processes whose opening is reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcFile {
    Environ,
    Mem,
    Maps,
    Cmdline,
}

impl ProcFile {
    /// The `PROC_*` bit the kernel programs test.
    pub const fn bit(self) -> u32 {
        match self {
            ProcFile::Environ => sensor_common::PROC_ENVIRON,
            ProcFile::Mem => sensor_common::PROC_MEM,
            ProcFile::Maps => sensor_common::PROC_MAPS,
            ProcFile::Cmdline => sensor_common::PROC_CMDLINE,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentConfig {
    pub state_dir: PathBuf,
    /// Size of the kernel → agent ring buffer: a power of two, at least one page.
    pub ring_buffer_bytes: u32,
    /// Each identity's event budget (docs/probes.md, "Floods"): this many a second on
    /// average, in bursts of up to `budget_burst`.
    /// `0` switches budgets off.
    pub budget_per_second: u32,
    pub budget_burst: u32,
    /// Repeats of an access within this long are folded into a count; `None` when `"off"`.
    pub fold_window: Option<Duration>,
    pub proc_files: Vec<ProcFile>,
    /// Where Prometheus scrapes `/metrics`; `None` when `"off"`.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Which way each probe attaches (`--probe-mode` overrides it).
    pub probe_mode: crate::probes::ModeChoice,
}

/// Where the forward stage sends sealed batches (docs/forwarding.md).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardConfig {
    /// `host:port` of each collector, tried in order.
    pub collectors: Vec<String>,
    /// The host's certificate (subject common name: the host id) and key, and the CA the
    /// collectors' certificates chain to.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub ca: PathBuf,
    /// The name collectors' certificates must carry; by default each address's host part.
    pub server_name: Option<String>,
    /// Batches sent and not yet answered, at most (the collector may allow fewer).
    pub window: u16,
}

/// The `[log]` section: batching, key rotation, the in-memory buffer for a full disk, and
/// retention.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    pub batch_records: usize,
    pub batch_interval: Duration,
    /// `None` when rotation is `"off"`.
    pub key_rotation: Option<Duration>,
    /// The first rotation after start (the key on disk may have been copied while the agent
    /// was stopped); `None` (`"off"`) leaves it to `key_rotation`.
    pub first_key_rotation: Option<Duration>,
    pub max_pending_records: usize,
    pub retention_max_bytes: Option<u64>,
    pub retention_max_age: Option<Duration>,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub agent: AgentConfig,
    pub log: LogConfig,
    /// The `[tpm]` section; `None` when `tcti = "off"`.
    pub tpm: Option<TpmConfig>,
    /// The `[forward]` section; `None` when unset: the log stays on the host only.
    pub forward: Option<ForwardConfig>,
    /// The rule table: rule id `n` is `watches[n - 1]`.
    pub watches: Vec<Rule>,
    pub owners: Vec<OwnerRule>,
}

impl Config {
    /// `SensorConfig.proc_files`: the `PROC_*` bits of `agent.proc_files`.
    pub fn proc_files_mask(&self) -> u32 {
        self.agent
            .proc_files
            .iter()
            .fold(0, |bits, f| bits | f.bit())
    }

    /// The rule table (rule id `n` is `rules()[n - 1]`).
    pub fn rules(&self) -> &[Rule] {
        &self.watches
    }

    /// The embedded defaults, amended by the file at `path` when given.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let defaults = validate::parse(DEFAULT_CONFIG, DEFAULTS_NAME)?;
        let user = match path {
            Some(p) => {
                let file = p.display().to_string();
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    file: file.clone(),
                    source,
                })?;
                Some((validate::parse(&text, &file)?, file))
            }
            None => None,
        };
        merge::merge(defaults, user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(Some(&path))
    }

    /// The error message with the temp file's path cut off.
    fn error(text: &str) -> String {
        let e = load_text(text).unwrap_err().to_string();
        e.split_once("agent.toml: ")
            .map(|(_, rest)| rest.to_owned())
            .unwrap_or(e)
    }

    #[test]
    fn defaults_load_and_cover_the_field_notes() {
        let c = Config::load(None).unwrap();
        assert_eq!(c.agent.state_dir, Path::new("/var/lib/sensor-agent"));
        assert_eq!(c.agent.ring_buffer_bytes, 16 << 20);
        assert_eq!(
            (c.agent.budget_per_second, c.agent.budget_burst),
            (10_000, 10_000)
        );
        assert_eq!(c.agent.fold_window, Some(Duration::from_secs(1)));
        assert_eq!(
            c.proc_files_mask(),
            sensor_common::PROC_ENVIRON | sensor_common::PROC_MEM
        );
        let covered = |path: &str| c.watches.iter().any(|r| r.matches_path(path));
        for path in [
            "/etc/shadow",
            "/etc/gshadow",
            "/etc/security/opasswd",
            "/etc/sudoers",
            "/etc/sudoers.d/90-cloud",
            "/etc/pam.conf",
            "/etc/pam.d/sshd",
            "/root/.ssh/id_ed25519",
            "/home/alice/.ssh/id_rsa",
            "/home/alice/.ssh/authorized_keys",
            "/etc/ssh/ssh_host_ed25519_key",
            "/home/alice/.aws/credentials",
            "/root/.aws/config",
            "/home/alice/.aws/sso/cache/abc.json",
            "/home/alice/.azure/msal_token_cache.json",
            "/home/alice/.config/gcloud/application_default_credentials.json",
            "/root/.config/gcloud/access_tokens.db",
            "/home/alice/.docker/config.json",
            "/home/alice/.kube/config",
            "/home/alice/.git-credentials",
            "/root/.netrc",
            "/home/alice/.vault-token",
            "/home/alice/.pgpass",
            "/var/run/secrets/kubernetes.io/serviceaccount/token",
            "/var/lib/kubelet/pki/kubelet-client-current.pem",
            "/var/lib/kubelet/kubeconfig",
            "/etc/kubernetes/admin.conf",
            "/etc/kubernetes/pki/ca.key",
            "/etc/rancher/k3s/k3s.yaml",
            "/etc/ssl/private/server.key",
            "/etc/letsencrypt/live/example.org/privkey.pem",
            // The catalogue of docs/credentials.md (the Atomic Red Team misses first).
            "/home/alice/.gnupg/private-keys-v1.d/0123ABCD.key",
            "/root/.gnupg/secring.gpg",
            "/home/alice/.mozilla/firefox/abcd1234.default-release/logins.json",
            "/home/alice/.mozilla/firefox/abcd1234.default-release/key4.db",
            "/home/alice/.config/google-chrome/Default/Login Data",
            "/home/alice/.config/chromium/Profile 1/Login Data",
            "/home/alice/.config/BraveSoftware/Brave-Browser/Default/Login Data",
            "/home/alice/.password-store/bank.gpg",
            "/home/alice/.config/Bitwarden CLI/data.json",
            "/home/alice/.local/share/keyrings/login.keyring",
            "/home/alice/.oci/config",
            "/home/alice/.oci/sessions/DEFAULT/token",
            "/home/alice/.config/gh/hosts.yml",
            "/home/alice/.terraform.d/credentials.tfrc.json",
            "/run/containers/0/auth.json",
            "/run/user/1000/containers/auth.json",
            "/home/alice/.config/containers/auth.json",
            "/run/credentials/postgresql.service/db-password",
            "/etc/credstore/api-token",
            "/var/lib/systemd/credential.secret",
            "/etc/krb5.keytab",
            "/var/lib/sss/db/ccache_EXAMPLE.ORG",
        ] {
            assert!(covered(path), "{path} is not watched by default");
        }
        for path in [
            "/home/alice/.ssh/id_rsa.pub",
            "/etc/kubernetes/pki/ca.crt",
            "/etc/ssh/ssh_host_rsa_key.pub",
            "/home/alice/.mozilla/firefox/abcd1234.default-release/places.sqlite",
            "/home/alice/.gnupg/pubring.kbx",
        ] {
            assert!(!covered(path), "{path} should not be watched");
        }
    }

    #[test]
    fn user_file_adds_overrides_and_removes() {
        let c = load_text(
            r#"
unwatch = ["/etc/pam.d/*", "/home/*/.aws/*"]

[agent]
ring_buffer_bytes = 8388608
proc_files = ["environ", "mem", "maps"]

[[watch]]
path = "/srv/app/secrets/*.key"
kind = "tls-key"
owner = "payments"
exclude = ["test-*"]

[[owner]]
unit = "nginx.service"
owner = "web"
"#,
        )
        .unwrap();
        assert_eq!(c.agent.ring_buffer_bytes, 8 << 20);
        assert_eq!(c.agent.state_dir, Path::new("/var/lib/sensor-agent"));
        assert_eq!(
            c.proc_files_mask() & sensor_common::PROC_MAPS,
            sensor_common::PROC_MAPS
        );
        assert!(!c.watches.iter().any(|r| r.path == "/etc/pam.d/*"));
        assert!(!c
            .watches
            .iter()
            .any(|r| r.path.starts_with("/home/*/.aws/")));
        assert!(c.watches.iter().any(|r| r.path == "/etc/shadow"));
        let last = c.watches.last().unwrap();
        assert_eq!(
            (last.kind.as_str(), last.owner.as_deref()),
            ("tls-key", Some("payments"))
        );
        assert_eq!(c.owners.len(), 1);
    }

    #[test]
    fn tpm_section_defaults_overrides_and_off() {
        let c = Config::load(None).unwrap();
        assert_eq!(c.tpm, Some(TpmConfig::default()));
        let c = load_text(
            "[tpm]\ntcti = \"swtpm:host=127.0.0.1,port=2321\"\npcr = 14\nquote_period = \"5s\"\n",
        )
        .unwrap();
        let tpm = c.tpm.unwrap();
        assert_eq!(
            (tpm.tcti.as_deref(), tpm.pcr, tpm.quote_period),
            (
                Some("swtpm:host=127.0.0.1,port=2321"),
                14,
                Duration::from_secs(5)
            )
        );
        assert_eq!(tpm.nv_interval, Duration::from_secs(3600));
        assert!(load_text("[tpm]\ntcti = \"off\"\n").unwrap().tpm.is_none());
    }

    #[test]
    fn default_watches_false_starts_empty() {
        let c = load_text(
            "default_watches = false\n[[watch]]\npath = \"/etc/shadow\"\nkind = \"password-db\"\n",
        )
        .unwrap();
        assert_eq!(c.watches.len(), 1);
    }

    #[test]
    fn errors_name_the_key() {
        let cases: &[(&str, &str)] = &[
            (
                "[[watch]]\npath = \"/etc/shadow\"\nkind = \"x\"\n[[watch]]\npath = \"etc/shadow\"\nkind = \"password-db\"\n",
                "watch[1].path: `etc/shadow` is not an absolute path",
            ),
            ("[[watch]]\npath = \"/etc/[x\"\nkind = \"x\"\n", "watch[0].path: `/etc/[x`: bad glob"),
            ("[[watch]]\npath = \"/etc/../shadow\"\nkind = \"x\"\n", "watch[0].path: `/etc/../shadow` contains a `..`"),
            ("[[watch]]\npath = \"/etc/**/key\"\nkind = \"x\"\n", "watch[0].path: `/etc/**/key`: `**` is not supported"),
            ("[[watch]]\npath = \"/k/*\"\nkind = \"x\"\nexclude = [\"a/b\"]\n", "watch[0].exclude[0]: `a/b` contains `/`"),
            ("[[watch]]\npath = \"/k\"\nkind = \"Bad Kind\"\n", "watch[0].kind: `Bad Kind` is not a kind"),
            ("[[watch]]\npath = \"/k\"\nkind = 3\n", "watch[0].kind: invalid type: integer `3`, expected a string"),
            ("[[watch]]\npath = \"/k\"\n", "watch[0]: missing field `kind`"),
            ("[[watch]]\npth = \"/k\"\nkind = \"x\"\n", "watch[0].pth: unknown field `pth`"),
            ("[agent]\nring_buffer_bytes = 1000\n", "agent.ring_buffer_bytes: `1000` is not a power of two"),
            ("[agent]\nring_buffer_bytes = 1024\n", "agent.ring_buffer_bytes: `1024` is smaller than the page size"),
            ("[agent]\nring_buffer_bytes = \"big\"\n", "agent.ring_buffer_bytes: invalid type: string \"big\""),
            ("[agent]\nproc_files = [\"environ\", \"stack\"]\n", "agent.proc_files[1]: unknown variant `stack`"),
            ("[agent]\nstate_dir = \"var/lib\"\n", "agent.state_dir: `var/lib` is not an absolute path"),
            ("[agent]\nbudget_burst = 0\n", "agent.budget_burst: must be at least 1"),
            ("[agent]\nbudget_per_second = -1\n", "agent.budget_per_second: invalid value: integer `-1`"),
            ("[agent]\nfold_window = \"soon\"\n", "agent.fold_window: `soon` is not a duration"),
            ("[agent]\nprobe_mode = \"ebpf\"\n", "agent.probe_mode: `ebpf` is not one of auto, lsm, fentry, kprobe, tracepoint"),
            ("[agnt]\n", "agnt: unknown field `agnt`"),
            ("unwatch = [\"/etc/nothing\"]\n", "unwatch[0]: `/etc/nothing` matches no default watch path"),
            ("default_watches = false\nunwatch = [\"/etc/shadow\"]\n", "unwatch: has no effect"),
            ("[[owner]]\nowner = \"web\"\n", "owner[0]: needs at least one of"),
            ("[[owner]]\nowner = \"web\"\nexe = \"/usr/bin/[\"\n", "owner[0].exe: `/usr/bin/[`: bad glob"),
            ("[[owner]]\nunit = \"a\"\nowner = \" \"\n", "owner[0].owner: is empty"),
            ("[[watch]\n", "line 1, column"),
            ("[tpm]\npcr = 16\n", "tpm.pcr: pcr 16 can be reset by any local root"),
            ("[tpm]\nquote_period = \"soon\"\n", "tpm.quote_period: `soon` is not a duration"),
            ("[tpm]\nnv_index = 5\n", "tpm.nv_index: nv_index 0x00000005 is not an NV index"),
            ("[tpm]\ntcti = \"tpm0\"\n", "tpm.tcti: tcti \"tpm0\": expected device:"),
            ("[tpm]\nqueue_depth = 0\n", "tpm.queue_depth: queue_depth 0 is outside"),
            ("[tpm]\nquote = 1\n", "tpm.quote: unknown field `quote`"),
            ("[tpm]\nnv_interval = \"0s\"\n", "tpm.nv_interval: must be more than zero"),
            ("[log]\nkey_rotation = \"soon\"\n", "log.key_rotation: `soon` is not a duration"),
            ("[log]\nbatch_interval = \"off\"\n", "log.batch_interval: `off` is not a duration"),
            ("[log]\nbatch_records = 0\n", "log.batch_records: must be at least 1"),
        ];
        for (text, expected) in cases {
            let e = error(text);
            assert!(
                e.starts_with(expected),
                "for {text:?}\n got: {e}\nwant: {expected}"
            );
        }
    }

    #[test]
    fn errors_name_the_file() {
        let e = Config::load(Some(Path::new("/nonexistent/x.toml")))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("config /nonexistent/x.toml: cannot read:"),
            "{e}"
        );
        let e = load_text("[[watch]]\npath = \"etc/shadow\"\nkind = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("config /")
                && e.contains("agent.toml: watch[0].path: `etc/shadow` is not an absolute path"),
            "{e}"
        );
    }
}
