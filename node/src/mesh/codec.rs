//! How replicated data is written to the log and to snapshots: commands,
//! the member records inside conf changes, and the state machine's
//! snapshots.
//!
//! Every record starts with a version byte. Version 1 ([`V1`]) is
//! postcard (serde's compact binary form: varints, fields in declaration
//! order, no names). Before it, records were JSON, which always starts with
//! `{`: such a record still decodes, so a log and snapshots written by an
//! older node read after the upgrade. Nothing here writes JSON any more;
//! JSON stays where people read it (the API's answers, faxictl, logs).
//!
//! Compatibility rules for the types encoded here, since postcard names no
//! field: a field is never removed, renamed in meaning or reordered; a new
//! enum variant goes last; a change that cannot follow these rules is a new
//! version byte, with the old decoder kept.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The version byte of postcard-encoded records.
pub const V1: u8 = 1;

/// Encodes `value` as a version-1 record.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, String> {
    let out = vec![V1];
    postcard::to_extend(value, out).map_err(|e| format!("cannot encode: {e}"))
}

/// Decodes a record written by [`encode`], or by a node from before it
/// (JSON). A record must be read whole: trailing bytes are an error.
pub fn decode<T: DeserializeOwned>(data: &[u8]) -> Result<T, String> {
    match data.first() {
        None => Err("empty record".into()),
        Some(&V1) => {
            let (value, rest) = postcard::take_from_bytes::<T>(&data[1..])
                .map_err(|e| format!("corrupt record: {e}"))?;
            if rest.is_empty() {
                Ok(value)
            } else {
                Err(format!("corrupt record: {} bytes past its end", rest.len()))
            }
        }
        Some(b) if *b == b'{' || b.is_ascii_whitespace() => {
            serde_json::from_slice(data).map_err(|e| format!("corrupt JSON record: {e}"))
        }
        Some(b) => Err(format!(
            "unknown record version {b} (written by a newer faxi-watchdog?)"
        )),
    }
}

/// Whether a record is in the JSON form nodes wrote before version 1.
pub fn is_legacy_json(data: &[u8]) -> bool {
    data.first()
        .is_some_and(|b| *b == b'{' || b.is_ascii_whitespace())
}
