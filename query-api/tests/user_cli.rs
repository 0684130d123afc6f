//! `query-api user …` as an operator runs it, against MariaDB (`TEST_MYSQL_URL`,
//! started by `.ci/run`): the password comes from standard input, never argv, and
//! no default user or password exists anywhere.

use std::io::Write;
use std::process::{Command, Stdio};

fn database() -> String {
    let server = std::env::var("TEST_MYSQL_URL")
        .expect("MariaDB/MySQL is required: TEST_MYSQL_URL is not set (run .ci/run, or export TEST_MYSQL_URL=mysql://root@127.0.0.1:3306)");
    let name = format!("it_cli_{}", uuid::Uuid::new_v4().simple());
    let status = Command::new("mysql")
        .args([
            "-uroot",
            "-h127.0.0.1",
            "-e",
            &format!("CREATE DATABASE `{name}`"),
        ])
        .status()
        .expect("the mysql client is needed to create the test database");
    assert!(status.success(), "creating {name} failed");
    format!("{}/{name}", server.trim_end_matches('/'))
}

fn run(db: &str, args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_query-api"))
        .args(args)
        .env("DATABASE_URL", db)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn users_are_created_listed_changed_and_deleted_from_the_command_line() {
    let db = database();
    let (ok, out, err) = run(&db, &["user", "list"], "");
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "", "no user exists until one is created");

    let (ok, out, err) = run(
        &db,
        &["user", "create", "--username", "alice", "--role", "admin"],
        "a-very-long-password\n",
    );
    assert!(ok, "{err}");
    assert!(out.contains("created admin alice"), "{out}");
    let (ok, _, err) = run(&db, &["user", "create", "--username", "bob"], "short\n");
    assert!(!ok && err.contains("at least 12"), "{err}");
    let (ok, _, err) = run(
        &db,
        &["user", "create", "--username", "alice", "--role", "viewer"],
        "another-long-password\n",
    );
    assert!(!ok && err.contains("already exists"), "{err}");
    let (ok, _, err) = run(
        &db,
        &["user", "create", "--username", "carol", "--role", "root"],
        "another-long-password\n",
    );
    assert!(!ok && err.contains("--role"), "{err}");

    let (_, out, _) = run(&db, &["user", "list"], "");
    assert_eq!(out.trim(), "alice\tadmin");
    let (ok, _, err) = run(
        &db,
        &["user", "set-password", "--username", "alice"],
        "a-different-long-password\n",
    );
    assert!(ok, "{err}");
    let (ok, _, err) = run(
        &db,
        &["user", "set-password", "--username", "nobody"],
        "a-different-long-password\n",
    );
    assert!(!ok && err.contains("no user"), "{err}");
    let (ok, _, err) = run(&db, &["user", "delete", "--username", "alice"], "");
    assert!(ok, "{err}");
    let (_, out, _) = run(&db, &["user", "list"], "");
    assert_eq!(out.trim(), "");
}
