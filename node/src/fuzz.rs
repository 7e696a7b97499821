//! Test-only support for the byte-level fuzz campaigns (the raft edge in
//! `mesh::sim`, the API's requests in `api`): the kept corpus and random
//! mutations of it.
//!
//! The corpus lives in `node/fuzz/<name>.hex`, one input per line as hex
//! (`#` starts a comment): the seeds, and every input that once made a
//! campaign fail, kept so that it is tried again on every run. A failing
//! input is printed as a hex line to add there.

use rand::Rng;
use rand::rngs::StdRng;

/// Inputs a campaign tries: `FAXI_FUZZ_INPUTS`, default 3,000 (CI's bound).
pub fn inputs() -> usize {
    std::env::var("FAXI_FUZZ_INPUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000)
}

/// The kept inputs of corpus `name`.
pub fn corpus(name: &str) -> Vec<Vec<u8>> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(format!("{name}.hex"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("fuzz corpus {}: {e}", path.display()));
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(|l| from_hex(l).unwrap_or_else(|| panic!("{}: not hex: {l}", path.display())))
        .collect()
}

/// Hex of `bytes`, as a corpus line.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// One random mutation of `base`: flipped bits, bytes set to edge values,
/// bytes inserted or removed, a cut, a repeated run, or a splice of two
/// halves; sometimes several at once.
pub fn mutate(rng: &mut StdRng, base: &[u8]) -> Vec<u8> {
    let mut b = base.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        let len = b.len();
        match rng.random_range(0..7) {
            0 if len > 0 => {
                let i = rng.random_range(0..len);
                b[i] ^= 1 << rng.random_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.random_range(0..len);
                b[i] = [0x00, 0x01, 0x7f, 0x80, 0xff][rng.random_range(0..5)];
            }
            2 => {
                let i = rng.random_range(0..=len);
                b.insert(i, rng.random());
            }
            3 if len > 0 => {
                b.remove(rng.random_range(0..len));
            }
            4 if len > 0 => b.truncate(rng.random_range(0..len)),
            5 if len > 0 => {
                let i = rng.random_range(0..len);
                let n = rng.random_range(1..=(len - i).min(16));
                let run: Vec<u8> = b[i..i + n].to_vec();
                for _ in 0..rng.random_range(1..8) {
                    b.splice(i..i, run.iter().copied());
                }
            }
            _ if len > 1 => {
                let i = rng.random_range(1..len);
                b.rotate_left(i);
            }
            _ => b.push(rng.random()),
        }
    }
    b
}
