//! Secrets: read once from the environment or a file, never printed.

use std::fmt;

/// A secret value (a password or a key).
///
/// It has no `Display`, and its `Debug` prints `***`, so it cannot reach a
/// log line, a status answer or an error message by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value read from a `*_env` or `*_file` key.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the one call that needs it (a driver's config).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Replaces every occurrence of a set of secrets in a text with `***`: the
/// last line of defence for text from elsewhere (a driver's error, a
/// dependency's log line) that could quote a credential.
///
/// Each secret is matched as written and as JSON and Rust's `Debug` escape
/// it (so a log line in either format is covered); longer secrets first,
/// so one that contains another is hidden whole.
#[derive(Clone, Default)]
pub struct Redactor {
    needles: std::sync::Arc<Vec<String>>,
}

impl Redactor {
    /// A redactor for `secrets`.
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a Secret>) -> Self {
        let mut needles = Vec::new();
        for s in secrets {
            let raw = s.expose();
            needles.push(raw.to_owned());
            if let Ok(json) = serde_json::to_string(raw) {
                needles.push(json[1..json.len() - 1].to_owned());
            }
            let debug = format!("{raw:?}");
            needles.push(debug[1..debug.len() - 1].to_owned());
        }
        needles.retain(|n| !n.is_empty());
        needles.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        needles.dedup();
        Self {
            needles: std::sync::Arc::new(needles),
        }
    }

    /// Whether there is nothing to hide.
    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// `text` with every secret replaced by `***` (borrowed when none occurs).
    pub fn redact<'t>(&self, text: &'t str) -> std::borrow::Cow<'t, str> {
        let mut out = std::borrow::Cow::Borrowed(text);
        for n in self.needles.iter() {
            if out.contains(n.as_str()) {
                out = std::borrow::Cow::Owned(out.replace(n.as_str(), "***"));
            }
        }
        out
    }
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redactor({} patterns)", self.needles.len())
    }
}

/// Where a secret comes from, as named in the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// `*_env = "NAME"`: the environment variable NAME.
    Env(String),
    /// `*_file = "/path"`: the file's contents, less one trailing newline.
    File(std::path::PathBuf),
}

impl SecretSource {
    /// Reads the secret. The error names the variable or file, never a value.
    pub fn resolve(&self) -> Result<Secret, String> {
        match self {
            SecretSource::Env(name) => match std::env::var(name) {
                Ok(v) if v.is_empty() => Err(format!("environment variable {name} is empty")),
                Ok(v) => Ok(Secret(v)),
                Err(std::env::VarError::NotPresent) => {
                    Err(format!("environment variable {name} is not set"))
                }
                Err(std::env::VarError::NotUnicode(_)) => {
                    Err(format!("environment variable {name} is not valid UTF-8"))
                }
            },
            SecretSource::File(path) => match std::fs::read_to_string(path) {
                Ok(v) => {
                    let v = v.strip_suffix('\n').unwrap_or(&v);
                    let v = v.strip_suffix('\r').unwrap_or(v);
                    if v.is_empty() {
                        Err(format!("secret file {} is empty", path.display()))
                    } else {
                        Ok(Secret(v.to_owned()))
                    }
                }
                Err(e) => Err(format!("cannot read secret file {}: {e}", path.display())),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert!(!format!("{:?}", Some(&s)).contains("hunter2"));
    }

    #[test]
    fn the_redactor_hides_each_secret_as_written_and_as_escaped() {
        let (a, b, c) = (
            Secret::new("hunter2"),
            Secret::new("hunter2-longer"),
            Secret::new("q\"uote\\d"),
        );
        let r = Redactor::new([&a, &b, &c]);
        assert_eq!(
            r.redact("pw=hunter2-longer, old=hunter2, not hunter"),
            "pw=***, old=***, not hunter"
        );
        // As JSON and Debug print it: q\"uote\\d.
        assert_eq!(r.redact(r#"{"e":"q\"uote\\d"}"#), r#"{"e":"***"}"#);
        assert_eq!(r.redact("raw q\"uote\\d"), "raw ***");
        assert!(matches!(
            r.redact("nothing here"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert!(Redactor::new([]).is_empty());
        assert!(!format!("{r:?}").contains("hunter2"));
    }

    #[test]
    fn file_secret_strips_one_newline_and_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "s3cret\n").unwrap();
        assert_eq!(
            SecretSource::File(p.clone()).resolve().unwrap().expose(),
            "s3cret"
        );
        let missing = dir.path().join("nope");
        let err = SecretSource::File(missing).resolve().unwrap_err();
        assert!(err.contains("nope"), "{err}");
        let err = SecretSource::Env("FAXI_TEST_SURELY_UNSET_VAR".into())
            .resolve()
            .unwrap_err();
        assert_eq!(
            err,
            "environment variable FAXI_TEST_SURELY_UNSET_VAR is not set"
        );
    }
}
