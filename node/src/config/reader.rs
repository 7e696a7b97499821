//! A reader over one TOML table that records every problem it meets (wrong
//! type, bad duration, unknown key) under the key's full path, instead of
//! stopping at the first one as serde would.

use std::collections::BTreeSet;
use std::time::Duration;

use toml::{Table, Value};

use super::Problem;

/// Reads typed keys out of one table, collecting problems.
pub(crate) struct Section<'a> {
    table: &'a Table,
    /// The table's path, like `node` or `targets[2]`.
    path: String,
    /// Keys read so far; anything else in the table is unknown.
    used: BTreeSet<&'static str>,
}

impl<'a> Section<'a> {
    pub(crate) fn new(table: &'a Table, path: impl Into<String>) -> Self {
        Self {
            table,
            path: path.into(),
            used: BTreeSet::new(),
        }
    }

    /// The full path of `key` in this table.
    pub(crate) fn key(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// Whether `key` is present (marks it as known).
    pub(crate) fn has(&mut self, key: &'static str) -> bool {
        self.used.insert(key);
        self.table.contains_key(key)
    }

    fn raw(&mut self, key: &'static str) -> Option<&'a Value> {
        self.used.insert(key);
        self.table.get(key)
    }

    fn wrong_type(&self, key: &str, want: &str, got: &Value, problems: &mut Vec<Problem>) {
        problems.push(Problem::new(
            self.key(key),
            format!("expected {want}, found {}", got.type_str()),
        ));
    }

    pub(crate) fn string(&mut self, key: &'static str, p: &mut Vec<Problem>) -> Option<String> {
        match self.raw(key)? {
            Value::String(s) => Some(s.clone()),
            other => {
                self.wrong_type(key, "a string", other, p);
                None
            }
        }
    }

    pub(crate) fn boolean(&mut self, key: &'static str, p: &mut Vec<Problem>) -> Option<bool> {
        match self.raw(key)? {
            Value::Boolean(b) => Some(*b),
            other => {
                self.wrong_type(key, "true or false", other, p);
                None
            }
        }
    }

    /// An integer within `min..=max`.
    pub(crate) fn int(
        &mut self,
        key: &'static str,
        min: i64,
        max: i64,
        p: &mut Vec<Problem>,
    ) -> Option<i64> {
        match self.raw(key)? {
            Value::Integer(i) if (min..=max).contains(i) => Some(*i),
            Value::Integer(i) => {
                p.push(Problem::new(
                    self.key(key),
                    format!("{i} is out of range: must be between {min} and {max}"),
                ));
                None
            }
            other => {
                self.wrong_type(key, "an integer", other, p);
                None
            }
        }
    }

    /// A duration written like `250ms`, `30s`, `2h` or `1h 30m`; never zero.
    pub(crate) fn duration(&mut self, key: &'static str, p: &mut Vec<Problem>) -> Option<Duration> {
        let v = self.raw(key)?;
        let Value::String(s) = v else {
            self.wrong_type(key, "a duration string like \"250ms\" or \"2h\"", v, p);
            return None;
        };
        match parse_duration(s) {
            Ok(d) => Some(d),
            Err(reason) => {
                p.push(Problem::new(self.key(key), reason));
                None
            }
        }
    }

    /// A size in bytes: an integer, or a string like `"16MiB"`, `"512 KB"`
    /// (units B, KB, MB, GB, TB, powers of 1000; KiB, MiB, GiB, TiB, powers
    /// of 1024), from `min` to `max` bytes.
    pub(crate) fn size(
        &mut self,
        key: &'static str,
        min: u64,
        max: u64,
        p: &mut Vec<Problem>,
    ) -> Option<u64> {
        let v = self.raw(key)?;
        let bytes = match v {
            Value::Integer(i) => u64::try_from(*i).map_err(|_| format!("{i} is negative")),
            Value::String(s) => parse_size(s),
            other => {
                self.wrong_type(key, "a size like \"16MiB\" or a number of bytes", other, p);
                return None;
            }
        };
        match bytes {
            Ok(b) if (min..=max).contains(&b) => Some(b),
            Ok(b) => {
                p.push(Problem::new(
                    self.key(key),
                    format!(
                        "{b} bytes is out of range: must be between {} and {}",
                        show_size(min),
                        show_size(max)
                    ),
                ));
                None
            }
            Err(reason) => {
                p.push(Problem::new(self.key(key), reason));
                None
            }
        }
    }

    /// An array of strings.
    pub(crate) fn strings(
        &mut self,
        key: &'static str,
        p: &mut Vec<Problem>,
    ) -> Option<Vec<String>> {
        let v = self.raw(key)?;
        let Value::Array(items) = v else {
            self.wrong_type(key, "an array of strings", v, p);
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match item {
                Value::String(s) => out.push(s.clone()),
                other => p.push(Problem::new(
                    format!("{}[{i}]", self.key(key)),
                    format!("expected a string, found {}", other.type_str()),
                )),
            }
        }
        Some(out)
    }

    /// A sub-table.
    pub(crate) fn table(&mut self, key: &'static str, p: &mut Vec<Problem>) -> Option<&'a Table> {
        match self.raw(key)? {
            Value::Table(t) => Some(t),
            other => {
                self.wrong_type(key, "a table", other, p);
                None
            }
        }
    }

    /// An array of tables (`[[targets]]` or an inline array of `{ ... }`).
    pub(crate) fn tables(
        &mut self,
        key: &'static str,
        p: &mut Vec<Problem>,
    ) -> Option<Vec<Option<&'a Table>>> {
        let v = self.raw(key)?;
        let Value::Array(items) = v else {
            self.wrong_type(key, "an array of tables", v, p);
            return None;
        };
        Some(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::Table(t) => Some(t),
                    other => {
                        p.push(Problem::new(
                            format!("{}[{i}]", self.key(key)),
                            format!("expected a table, found {}", other.type_str()),
                        ));
                        None
                    }
                })
                .collect(),
        )
    }

    /// Reports every key of the table that was never asked for.
    pub(crate) fn finish(self, p: &mut Vec<Problem>) {
        for k in self.table.keys() {
            if !self.used.contains(k.as_str()) {
                let known: Vec<&str> = self.used.iter().copied().collect();
                p.push(Problem::new(
                    self.key(k),
                    format!("unknown key (known keys here: {})", known.join(", ")),
                ));
            }
        }
    }
}

/// Parses `250ms`, `30s`, `2h`, `1h 30m`. Zero is refused: every duration in
/// the config is an interval, a timeout or a budget, and zero means a typo.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim()).map_err(|e| {
        format!("invalid duration \"{s}\" ({e}); write it like \"250ms\", \"30s\" or \"2h\"")
    })?;
    if d.is_zero() {
        return Err(format!("duration \"{s}\" must be greater than zero"));
    }
    Ok(d)
}

/// Parses `"16MiB"`, `"512 KB"`, `"1000"` (bytes) into bytes.
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let bad = || {
        format!("{text:?} is not a size: write a number and a unit, like \"16MiB\" or \"512KB\"")
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => return Err(bad()),
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// `16MiB` for a whole number of MiB, else the bytes.
pub(crate) fn show_size(bytes: u64) -> String {
    for (unit, scale) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if bytes >= scale && bytes.is_multiple_of(scale) {
            return format!("{}{unit}", bytes / scale);
        }
    }
    format!("{bytes} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert!(
            parse_duration("0s")
                .unwrap_err()
                .contains("greater than zero")
        );
        assert!(
            parse_duration("2 hours please")
                .unwrap_err()
                .contains("invalid duration")
        );
        assert!(
            parse_duration("10")
                .unwrap_err()
                .contains("invalid duration")
        );
    }
}
