//! The harness starts a real PostgreSQL server, which answers SQL, keeps a transaction's
//! writes and enforces constraints, and stops it on drop. Needs the `postgresql` package
//! (`cargo xtask setup`); in CI (`CI=true`) a missing server fails the test.

use pg_harness::PgServer;

fn server() -> Option<PgServer> {
    match PgServer::start() {
        Ok(s) => Some(s),
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI must run this test: {e}")
        }
        Err(e) => {
            eprintln!("skipped: {e}");
            None
        }
    }
}

#[test]
fn a_real_server_answers_keeps_commits_and_enforces_constraints_then_stops() {
    let Some(pg) = server() else { return };
    assert_eq!(pg.psql("SELECT 1 + 1").expect("query"), "2");
    pg.psql(
        "CREATE TABLE batches (host text, number bigint, digest bytea, PRIMARY KEY (host, number))",
    )
    .expect("create");
    pg.psql("INSERT INTO batches VALUES ('h', 1, '\\x01')")
        .expect("insert");
    // The same key again is refused by the database itself: what a collector's idempotence
    // and fork detection will rest on.
    let conflict = pg
        .psql("INSERT INTO batches VALUES ('h', 1, '\\x02')")
        .expect_err("duplicate key");
    assert!(conflict.to_string().contains("duplicate key"), "{conflict}");
    assert_eq!(
        pg.psql(
            "INSERT INTO batches VALUES ('h', 1, '\\x02') ON CONFLICT DO NOTHING RETURNING number"
        )
        .expect("on conflict"),
        ""
    );
    assert_eq!(
        pg.psql("SELECT encode(digest, 'hex') FROM batches")
            .expect("select"),
        "01"
    );
    let port = pg.port();
    let socket = pg.socket_dir().to_path_buf();
    drop(pg);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the server still listens after drop"
    );
    assert!(!socket.exists(), "its directory is left behind");
}

#[test]
fn two_servers_run_side_by_side() {
    let (Some(a), Some(b)) = (server(), server()) else {
        return;
    };
    assert_ne!(a.port(), b.port());
    a.psql("CREATE TABLE t (x int)").expect("create in a");
    assert!(b.psql("SELECT * FROM t").is_err(), "b sees a's table");
}
