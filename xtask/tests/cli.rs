//! `cargo xtask` as a new user meets it (issue 15, items 9 and 12): the alias shows cargo's
//! progress during the first compile, and `--help` / `bench --help` list everything.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_xtask");

fn workspace() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

#[test]
fn cargo_alias_does_not_silence_the_first_compile() {
    let config = std::fs::read_to_string(workspace().join(".cargo/config.toml")).unwrap();
    let alias = config
        .lines()
        .find_map(|l| l.trim().strip_prefix("xtask = "))
        .expect("an xtask alias");
    assert_eq!(alias, "\"run --package xtask --\"");
}

#[test]
fn help_lists_bench_and_solutions() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().any(|l| l.trim_start().starts_with("bench ")),
        "{text}"
    );
    assert!(text.contains("solutions"), "{text}");
}

#[test]
fn bench_help_works() {
    for arg in ["--help", "-h"] {
        let out = Command::new(BIN).args(["bench", arg]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "bench {arg}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.starts_with("Benchmarks against the classic tools"),
            "{text}"
        );
        for b in [
            "iso",
            "images",
            "registry-config",
            "repodata",
            "solution-validate",
        ] {
            assert!(
                text.lines()
                    .any(|l| l.trim_start().starts_with(&format!("{b} "))),
                "{b} in:\n{text}"
            );
        }
    }
    let out = Command::new(BIN).args(["bench", "nope"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim_end(),
        "error: unknown benchmark \"nope\" (see `cargo xtask bench --help`)"
    );
}
