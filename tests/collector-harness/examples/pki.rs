//! Writes a throw-away PKI into a directory, for benchmarks that run a real collector and
//! agent by hand (xtask/bench/forward.sh): `pki DIR HOST_HEX` writes `ca.crt`,
//! `collector.crt`/`.key` (for `localhost` and `127.0.0.1`) and `host.crt`/`.key` (subject
//! common name HOST_HEX, the agent's host id).

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(host)) = (args.next(), args.next()) else {
        eprintln!("usage: pki DIR HOST_HEX");
        std::process::exit(2);
    };
    let dir = std::path::Path::new(&dir);
    std::fs::create_dir_all(dir).expect("create DIR");
    let pki = collector_harness::Pki::new();
    let host_id = pki.host(&host);
    let copy = |from: &std::path::Path, to: &str| {
        std::fs::copy(from, dir.join(to)).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
    };
    copy(&pki.ca, "ca.crt");
    copy(&pki.collector.cert, "collector.crt");
    copy(&pki.collector.key, "collector.key");
    copy(&host_id.cert, "host.crt");
    copy(&host_id.key, "host.key");
}
