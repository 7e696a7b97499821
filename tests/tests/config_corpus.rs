//! `faxi-watchdog check-config` and `run` against a corpus of bad files,
//! and the shipped example configs, which must pass.
//!
//! Each file in tests/configs/bad says what check-config must report:
//! - `# problems: N`: exactly N problems (the "N problem(s) found" line, and
//!   N lines naming the file);
//! - `# expect: TEXT`: one per problem; each problem line, after
//!   "FILE: ", must begin with its own expectation (so "cluster.join:"
//!   alone, which "unknown key" would also satisfy, is not precise enough:
//!   the reason is part of it);
//! - `# detail: TEXT`: text that must appear somewhere in the report (the
//!   indented lines under a problem);
//! - `# never: TEXT`: text that must appear nowhere (a secret).

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

/// What a corpus file says about itself.
#[derive(Debug, Default)]
struct Spec {
    problems: Option<usize>,
    expects: Vec<String>,
    details: Vec<String>,
    nevers: Vec<String>,
}

fn spec(text: &str) -> Result<Spec, String> {
    let mut s = Spec::default();
    for line in text.lines() {
        if let Some(n) = line.strip_prefix("# problems: ") {
            let n = n.trim().parse().map_err(|e| format!("{line:?}: {e}"))?;
            if s.problems.replace(n).is_some() {
                return Err("two # problems: lines".into());
            }
        } else if let Some(e) = line.strip_prefix("# expect: ") {
            s.expects.push(e.to_owned());
        } else if let Some(d) = line.strip_prefix("# detail: ") {
            s.details.push(d.to_owned());
        } else if let Some(n) = line.strip_prefix("# never: ") {
            s.nevers.push(n.to_owned());
        }
    }
    match s.problems {
        None => Err("no # problems: line".into()),
        Some(_) if s.expects.is_empty() => Err("no # expect: line".into()),
        Some(n) if n != s.expects.len() => Err(format!(
            "{n} problems but {} # expect: lines: expect each problem",
            s.expects.len()
        )),
        Some(_) => Ok(s),
    }
}

/// Everything wrong with check-config's report on `file` against `spec`.
fn judge(
    name: &str,
    file: &str,
    spec: &Spec,
    code: i32,
    stdout: &str,
    stderr: &str,
) -> Vec<String> {
    let mut failures = Vec::new();
    let mut fail = |what: String| failures.push(format!("{name}: {what}\n{stderr}"));
    if code != 1 {
        fail(format!("exit code {code}, want 1 {stdout}"));
    }
    if stderr.contains("panicked") {
        fail("panicked".into());
    }
    let prefix = format!("{file}: ");
    let summary = stderr
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|l| l.strip_suffix(" problem(s) found"))
        .collect::<Vec<_>>();
    let mut problems: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter(|l| !l.ends_with(" problem(s) found"))
        .collect();
    let want = spec.problems.unwrap_or_default();
    if summary != [want.to_string()] {
        fail(format!(
            "summary {summary:?}, want \"{want} problem(s) found\""
        ));
    }
    if problems.len() != want {
        fail(format!("{} problem lines, want {want}", problems.len()));
    }
    // Each expectation takes the first problem line it begins, once.
    for e in &spec.expects {
        match problems.iter().position(|p| p.starts_with(e.as_str())) {
            Some(i) => {
                problems.remove(i);
            }
            None => fail(format!("no problem begins with {e:?}")),
        }
    }
    for d in &spec.details {
        if !stderr.contains(d.as_str()) {
            fail(format!("missing detail {d:?}"));
        }
    }
    for n in &spec.nevers {
        if stderr.contains(n.as_str()) || stdout.contains(n.as_str()) {
            fail(format!("shows {n:?}"));
        }
    }
    // Every line names the file, or continues the problem above it.
    for line in stderr.lines() {
        if !line.starts_with(&prefix)
            && !line.starts_with("    ")
            && !line.starts_with('|')
            && !line.trim().is_empty()
        {
            fail(format!("a line does not name the file: {line:?}"));
        }
    }
    failures
}

#[test]
fn every_bad_config_is_refused_with_its_reasons() {
    let files = configs("configs/bad");
    assert!(files.len() >= 20, "the corpus went missing: {files:?}");
    let mut failures = Vec::new();
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy();
        let text = String::from_utf8_lossy(&std::fs::read(file).unwrap()).into_owned();
        let spec = match spec(&text) {
            Ok(s) => s,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        let (code, stdout, stderr) = check_config(file);
        failures.extend(judge(
            &name,
            &file.to_string_lossy(),
            &spec,
            code,
            &stdout,
            &stderr,
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn the_corpus_runner_itself_can_fail() {
    // A file that expects nothing, or leaves a problem unexpected, is refused.
    assert!(spec("# problems: 1\n").is_err());
    assert!(spec("# expect: a: b\n").is_err());
    assert!(spec("# problems: 2\n# expect: a: b\n").is_err());
    let s = spec("# problems: 1\n# expect: cluster.join: expected true or false\n").unwrap();
    let ok =
        "f.toml: cluster.join: expected true or false, found string\nf.toml: 1 problem(s) found\n";
    assert!(judge("f", "f.toml", &s, 1, "", ok).is_empty());
    // "unknown key" does not pass for a precise expectation.
    let other = "f.toml: cluster.join: unknown key\nf.toml: 1 problem(s) found\n";
    assert_eq!(judge("f", "f.toml", &s, 1, "", other).len(), 1);
    // One problem more than declared: both the summary and the lines say so.
    let more = "f.toml: cluster.join: expected true or false, found string\nf.toml: x: y\nf.toml: 2 problem(s) found\n";
    assert_eq!(judge("f", "f.toml", &s, 1, "", more).len(), 2);
    // The same problem twice does not satisfy two expectations.
    let s = spec("# problems: 2\n# expect: a: b\n# expect: a: b\n").unwrap();
    let once = "f.toml: a: b\nf.toml: c: d\nf.toml: 2 problem(s) found\n";
    assert_eq!(judge("f", "f.toml", &s, 1, "", once).len(), 1);
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
