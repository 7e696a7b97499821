//! `faxi-watchdog check-config` and `run` against a corpus of bad files
//! (tests/configs/bad: each says what its errors must contain with
//! `# expect:` lines, and what they must never show with `# never:`), and the
//! shipped example configs, which must pass.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use faxi_tests::workspace_bin;

fn configs(dir: &str) -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

fn check_config(file: &Path) -> (i32, String, String) {
    let out = Command::new(workspace_bin("faxi-watchdog"))
        .arg("check-config")
        .arg(file)
        .env("FAXI_PG_PASSWORD", "example-pg-password")
        .env("FAXI_REDIS_PASSWORD", "example-redis-password")
        .env("FAXI_S3_ACCESS_KEY", "example-access-key")
        .env("FAXI_S3_SECRET_KEY", "example-secret-key")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_bad_config_is_refused_with_its_reasons() {
    let files = configs("configs/bad");
    assert!(files.len() >= 20, "the corpus went missing: {files:?}");
    let mut failures = Vec::new();
    for file in &files {
        let text = String::from_utf8_lossy(&std::fs::read(file).unwrap()).into_owned();
        let expects: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .collect();
        let nevers: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# never: "))
            .collect();
        assert!(
            !expects.is_empty(),
            "{} has no # expect: line",
            file.display()
        );
        let (code, stdout, stderr) = check_config(file);
        let name = file.file_name().unwrap().to_string_lossy();
        if code != 1 {
            failures.push(format!(
                "{name}: exit code {code}, want 1\n{stdout}{stderr}"
            ));
        }
        if stderr.contains("panicked") {
            failures.push(format!("{name}: panicked\n{stderr}"));
        }
        for e in &expects {
            if !stderr.contains(e) {
                failures.push(format!("{name}: missing {e:?} in:\n{stderr}"));
            }
        }
        for n in &nevers {
            if stderr.contains(n) || stdout.contains(n) {
                failures.push(format!("{name}: shows {n:?}:\n{stderr}"));
            }
        }
        // Every problem line names the file.
        for line in stderr.lines() {
            if !line.starts_with(&*file.to_string_lossy())
                && !line.starts_with("    ")
                && !line.starts_with('|')
                && !line.trim().is_empty()
            {
                failures.push(format!("{name}: a line does not name the file: {line:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn run_refuses_a_bad_config_the_same_way() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/bad/16-many-problems.toml");
    let (_, _, want) = check_config(&file);
    let out = Command::new(workspace_bin("faxi-watchdog"))
        .arg("run")
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for line in want.lines().filter(|l| !l.contains("problem(s) found")) {
        assert!(
            stderr.contains(line),
            "run did not report {line:?}:\n{stderr}"
        );
    }
    assert!(stderr.contains("not starting"), "{stderr}");
}

#[test]
fn a_missing_file_is_named() {
    let (code, _, stderr) = check_config(Path::new("/nonexistent/faxi.toml"));
    assert_eq!(code, 1);
    assert!(
        stderr.contains("/nonexistent/faxi.toml: (file): cannot read: No such file"),
        "{stderr}"
    );
}

#[test]
fn shipped_examples_and_good_configs_pass() {
    let mut files = configs("configs/good");
    files.extend(configs("../deploy/examples"));
    assert!(files.len() >= 3, "{files:?}");
    for file in files {
        let (code, stdout, stderr) = check_config(&file);
        assert_eq!(code, 0, "{}:\n{stderr}", file.display());
        assert!(stdout.contains(": ok: node "), "{stdout}");
        for secret in [
            "example-pg-password",
            "example-redis-password",
            "example-secret-key",
        ] {
            assert!(!stdout.contains(secret) && !stderr.contains(secret));
        }
    }
}
