//! Where faxictl connects and how it proves who it is: a client config
//! file (endpoints, the cluster CA, a client certificate and key), as
//! kubectl and talosctl have. Found at `--config`, else `$FAXICTL_CONFIG`,
//! else `$XDG_CONFIG_HOME/faxictl/config.toml` (`~/.config/...`); flags
//! override what it says. `faxi-watchdog dev` writes one.
//!
//! ```toml
//! endpoints = ["10.0.1.5:7400", "10.0.2.5:7400"]
//! ca = "ca.pem"                 # relative paths: from this file's directory
//! cert = "client-alice.pem"
//! key = "client-alice.key"
//! # or, for automation, a token instead of the certificate and key:
//! # token_file = "/run/secrets/faxi-token"
//! ```

use std::path::{Path, PathBuf};

/// The default config file, if a home is known.
pub use faxi_proto::client::default_config_path as default_path;

/// What a client config file says.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Nodes to ask.
    pub endpoints: Vec<String>,
    /// The cluster CA.
    pub ca: Option<PathBuf>,
    /// The client certificate.
    pub cert: Option<PathBuf>,
    /// Its key.
    pub key: Option<PathBuf>,
    /// A file holding an automation token (instead of a certificate).
    pub token_file: Option<PathBuf>,
}

/// Reads a client config; every problem names the file and the key.
pub fn load(path: &Path) -> Result<ClientConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("client config {}: {e}", path.display()))?;
    parse(&text, path.parent().unwrap_or(Path::new(".")))
        .map_err(|e| format!("client config {}: {e}", path.display()))
}

fn parse(text: &str, dir: &Path) -> Result<ClientConfig, String> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| e.to_string().trim_end().replace('\n', " "))?;
    let mut out = ClientConfig::default();
    for (key, value) in &table {
        match (key.as_str(), value) {
            ("endpoints", toml::Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    match item {
                        toml::Value::String(s) => out.endpoints.push(s.clone()),
                        _ => return Err(format!("endpoints[{i}]: expected a string")),
                    }
                }
            }
            ("endpoints", _) => return Err("endpoints: expected an array of strings".into()),
            ("ca" | "cert" | "key" | "token_file", toml::Value::String(s)) if !s.is_empty() => {
                let p = dir.join(s);
                match key.as_str() {
                    "ca" => out.ca = Some(p),
                    "cert" => out.cert = Some(p),
                    "key" => out.key = Some(p),
                    _ => out.token_file = Some(p),
                }
            }
            ("ca" | "cert" | "key" | "token_file", _) => {
                return Err(format!("{key}: expected a file path"));
            }
            (other, _) => {
                return Err(format!(
                    "{other}: unknown key (known keys: endpoints, ca, cert, key, token_file)"
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn relative_paths_are_read_from_the_files_directory_and_unknown_keys_named() {
        let c = parse(
            "endpoints = [\"a:1\", \"b:2\"]\nca = \"ca.pem\"\ncert = \"/abs/c.pem\"\n",
            Path::new("/etc/faxi"),
        )
        .unwrap();
        assert_eq!(c.endpoints, vec!["a:1", "b:2"]);
        assert_eq!(c.ca, Some(PathBuf::from("/etc/faxi/ca.pem")));
        assert_eq!(c.cert, Some(PathBuf::from("/abs/c.pem")));
        assert!(
            parse("token = \"x\"\n", Path::new("/"))
                .unwrap_err()
                .contains("token: unknown key")
        );
        assert!(
            parse("endpoints = \"a:1\"\n", Path::new("/"))
                .unwrap_err()
                .contains("array")
        );
    }
}
