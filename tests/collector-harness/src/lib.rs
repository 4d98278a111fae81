//! Test support: a throw-away PKI and a real `sensor-collector serve` process.
//!
//! [`Pki`] writes PEM files into its own temporary directory: a CA, a collector certificate
//! for `localhost` and `127.0.0.1`, and host certificates whose subject common name is the
//! host id, as production certificates are issued. [`CollectorProcess`] starts the built
//! binary with a configuration listening on a free loopback port, reads the port from the
//! collector's "listening on" line, and kills the process when dropped.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A certificate and its key, as files.
#[derive(Clone, Debug)]
pub struct Identity {
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub struct Pki {
    dir: tempfile::TempDir,
    issuer: Issuer<'static, KeyPair>,
    /// The CA's certificate, which both sides trust.
    pub ca: PathBuf,
    /// The collector's certificate, for `localhost` and `127.0.0.1`.
    pub collector: Identity,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ca_params, ca_key) = ca_params("sensor test CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("self-signed CA");
        let ca = dir.path().join("ca.crt");
        std::fs::write(&ca, ca_cert.pem()).expect("write CA");
        let mut pki = Pki {
            issuer: Issuer::new(ca_params, ca_key),
            ca,
            collector: Identity {
                cert: PathBuf::new(),
                key: PathBuf::new(),
            },
            dir,
        };
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, "collector");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        pki.collector = pki.issue("collector", params);
        pki
    }

    /// A host certificate whose subject common name is `host_hex`, signed by the CA.
    pub fn host(&self, host_hex: &str) -> Identity {
        self.issue(host_hex, host_params(host_hex))
    }

    /// A host certificate for `host_hex` signed by a CA nobody trusts.
    pub fn untrusted_host(&self, host_hex: &str) -> Identity {
        let (params, key) = ca_params("an attacker's CA");
        let issuer = Issuer::new(params, key);
        self.write(
            &format!("untrusted-{host_hex}"),
            host_params(host_hex),
            &issuer,
        )
    }

    /// A self-signed certificate naming `host_hex`.
    pub fn self_signed_host(&self, host_hex: &str) -> Identity {
        let key = KeyPair::generate().expect("key");
        let cert = host_params(host_hex)
            .self_signed(&key)
            .expect("self-signed");
        self.files(
            &format!("self-{host_hex}"),
            &cert.pem(),
            &key.serialize_pem(),
        )
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn issue(&self, name: &str, params: CertificateParams) -> Identity {
        self.write(name, params, &self.issuer)
    }

    fn write(
        &self,
        name: &str,
        params: CertificateParams,
        issuer: &Issuer<'_, KeyPair>,
    ) -> Identity {
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, issuer).expect("sign");
        self.files(name, &cert.pem(), &key.serialize_pem())
    }

    fn files(&self, name: &str, cert: &str, key: &str) -> Identity {
        let id = Identity {
            cert: self.dir.path().join(format!("{name}.crt")),
            key: self.dir.path().join(format!("{name}.key")),
        };
        std::fs::write(&id.cert, cert).expect("write cert");
        std::fs::write(&id.key, key).expect("write key");
        id
    }
}

impl Default for Pki {
    fn default() -> Self {
        Pki::new()
    }
}

fn ca_params(name: &str) -> (CertificateParams, KeyPair) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    (params, KeyPair::generate().expect("CA key"))
}

fn host_params(host_hex: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("host params");
    params.distinguished_name.push(DnType::CommonName, host_hex);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params
}

/// `GET /metrics` from a Prometheus endpoint at `addr`, over plain HTTP/1.1: the text of a
/// 200 answer, headers included.
pub fn scrape(addr: std::net::SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("metrics endpoint");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .expect("request");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("response");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text
}

/// The value of the sample named `name` (labels included, as rendered) in scraped `text`.
pub fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

/// A running `sensor-collector serve`.
pub struct CollectorProcess {
    child: Child,
    /// The address it listens on.
    pub addr: String,
    /// Everything it logged so far arrives here, line by line.
    pub log: mpsc::Receiver<String>,
    pub config: PathBuf,
}

impl CollectorProcess {
    /// Starts `binary serve` with a configuration for `store` in `dir`, plus `extra` TOML
    /// top-level lines (before the tables); metrics are off unless `extra` sets
    /// `metrics_listen`. Panics if it does not say where it listens
    /// within 30 s.
    pub fn start(
        binary: &Path,
        pki: &Pki,
        dir: &Path,
        store: &str,
        extra: &str,
    ) -> CollectorProcess {
        Self::start_on(binary, pki, dir, store, extra, "127.0.0.1:0")
    }

    /// As `start`, on a given address (to restart a collector where its hosts expect it).
    pub fn start_on(
        binary: &Path,
        pki: &Pki,
        dir: &Path,
        store: &str,
        extra: &str,
        listen: &str,
    ) -> CollectorProcess {
        let config = dir.join("collector.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"{listen}\"\nstore = \"{store}\"\n{}{extra}\n\
                 [tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n",
                // Metrics only where a test asks for them.
                if extra.contains("metrics_listen") {
                    ""
                } else {
                    "metrics_listen = \"off\"\n"
                },
                pki.collector.cert.display(),
                pki.collector.key.display(),
                pki.ca.display()
            ),
        )
        .expect("write config");
        let mut child = Command::new(binary)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sensor-collector");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("collector: {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let addr = loop {
            match log.recv_timeout(Duration::from_secs(30)) {
                Ok(line) => {
                    if let Some(rest) = line.split("listening on ").nth(1) {
                        break rest.split_whitespace().next().expect("address").to_string();
                    }
                }
                Err(e) => {
                    let _ = child.kill();
                    panic!("the collector did not start listening: {e}");
                }
            }
        };
        CollectorProcess {
            child,
            addr,
            log,
            config,
        }
    }

    /// Waits up to `timeout` for a logged line containing `text`.
    pub fn wait_for(&self, text: &str, timeout: Duration) -> Option<String> {
        let end = std::time::Instant::now() + timeout;
        while let Some(left) = end.checked_duration_since(std::time::Instant::now()) {
            match self.log.recv_timeout(left) {
                Ok(line) if line.contains(text) => return Some(line),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for CollectorProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP relay to `upstream` that cuts each connection after a pseudo-random number of bytes
/// (in either direction) or a pseudo-random time, `cuts` times in all, then relays without
/// cutting: a network that keeps failing, at any point of a session.
pub struct CuttingProxy {
    pub addr: String,
    cut: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl CuttingProxy {
    /// Relays to `upstream`, cutting the first `cuts` connections after at most `life`.
    pub fn start(upstream: String, cuts: u64, life: Duration) -> CuttingProxy {
        use std::io::{Read, Write};
        use std::net::{Shutdown, TcpListener, TcpStream};
        use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
        use std::sync::Arc;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let cut = Arc::new(AtomicU64::new(0));
        let done = Arc::clone(&cut);
        std::thread::spawn(move || {
            let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
            for client in listener.incoming().map_while(Result::ok) {
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                // Cuts land anywhere: in the handshake, the hello, a batch, an answer; after
                // up to 4 MiB or up to `life`, whichever comes first.
                let cutting = done.load(Ordering::Relaxed) < cuts;
                let budget = if cutting {
                    (seed % (4 << 20)) as i64 + 1
                } else {
                    i64::MAX
                };
                let left = Arc::new(AtomicI64::new(budget));
                if cutting {
                    let life =
                        Duration::from_micros((seed >> 32) % (life.as_micros() as u64).max(1) + 1);
                    let (left, done) = (Arc::clone(&left), Arc::clone(&done));
                    let (a, b) = (
                        client.try_clone().expect("clone"),
                        server.try_clone().expect("clone"),
                    );
                    std::thread::spawn(move || {
                        std::thread::sleep(life);
                        if left.swap(0, Ordering::Relaxed) > 0 {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        let _ = a.shutdown(Shutdown::Both);
                        let _ = b.shutdown(Shutdown::Both);
                    });
                }
                let pipes = [
                    (
                        client.try_clone().expect("clone"),
                        server.try_clone().expect("clone"),
                    ),
                    (server, client),
                ];
                for (mut from, mut to) in pipes {
                    let left = Arc::clone(&left);
                    let done = Arc::clone(&done);
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        loop {
                            let n = match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            let before = left.fetch_sub(n as i64, Ordering::Relaxed);
                            if before <= 0 {
                                break;
                            }
                            if before <= n as i64 {
                                let pass = before.max(0) as usize;
                                let _ = to.write_all(&buf[..pass]);
                                if before > 0 {
                                    done.fetch_add(1, Ordering::Relaxed);
                                }
                                break;
                            }
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = from.shutdown(Shutdown::Both);
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        CuttingProxy { addr, cut }
    }

    /// Connections cut so far.
    pub fn cuts(&self) -> u64 {
        self.cut.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A host's log as its agent's forward stage hands it out: the host id, the key of its first
/// batch, and every batch retained, in order, read from the agent's store in `dir`.
pub fn outbox(
    dir: &Path,
) -> (
    sensor_log::record::HostId,
    ed25519_dalek::VerifyingKey,
    Vec<sensor_log::forward::BatchMessage>,
) {
    let store = sensor_store::Store::open_read_only(dir).expect("open store");
    let first = store.first_batch().expect("read").expect("a batch");
    let last = store.last_batch().expect("read").expect("a batch").number;
    let (_, key) = store.oldest_key().expect("read").expect("key");
    let batches = (first.number..=last)
        .map(|n| store.outbox_batch(n).expect("read").expect("held"))
        .collect();
    (first.header.host_id, key, batches)
}
