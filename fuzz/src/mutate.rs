//! Mutations: byte-level ones for any input, and structure-aware ones for
//! JSON, which byte flips alone rarely keep parseable (so they would never
//! get past the parser into the validator).

use serde_json::Value;

use crate::rng::Rng;

/// Inputs are kept below this size: the parsers' limits are tested, not
/// the machine's memory.
pub const MAX_INPUT: usize = 64 << 10;

/// Integers at the edges of the types the parsers use.
const INTERESTING: &[i64] = &[0, 1, -1, 127, 128, 255, 256, 4095, 4096, 65535, 65536, i32::MAX as i64, i32::MIN as i64, u32::MAX as i64, i64::MAX, i64::MIN];

/// Strings that have broken runtimes: traversal, special files, NULs,
/// separators, empty, long.
const STRINGS: &[&str] = &[
    "",
    "/",
    "..",
    "../../../../../etc/shadow",
    "/../../x",
    "/proc/self/fd/0",
    "/proc/sys/kernel/hostname",
    "/sys/fs/cgroup",
    "/dev/sda",
    "/dev/zero",
    "a\u{0}b",
    "kernel.hostname",
    "net/../kernel/hostname",
    "fs.mqueue.msg_max",
    "system.slice:rsv2:x",
    ":::",
    "-1",
    "rshared",
    "CAP_SYS_ADMIN",
    "SCMP_ACT_ALLOW",
    "\u{202e}\u{fffd}",
    "x=y",
    "%s%n",
];

/// Spec keys the structured mutation adds where they do not belong.
const KEYS: &[&str] = &[
    "path", "destination", "source", "type", "options", "uid", "gid", "args", "env", "cwd", "linux", "namespaces", "sysctl", "cgroupsPath", "devices", "resources", "maskedPaths",
    "readonlyPaths", "hooks", "seccomp", "rlimits", "capabilities", "uidMappings", "gidMappings", "hostname", "mounts", "root", "process", "major", "minor", "limit",
];

/// One byte-level mutation of `input`; `other` is another corpus entry to
/// splice from.
pub fn bytes(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        let len = v.len();
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                v[i] = rng.next() as u8;
            }
            2 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let fill: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                v.splice(i..i, fill);
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(64));
                v.drain(i..i + n);
            }
            4 if len > 0 => {
                // Duplicate a range in place (repeated fields, frames).
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(256));
                let chunk = v[i..i + n].to_vec();
                let at = rng.below(len + 1);
                v.splice(at..at, chunk);
            }
            5 if len >= 4 => {
                // An interesting integer over 1, 2, 4 or 8 bytes, either order.
                let x = *rng.pick(INTERESTING);
                let width = *rng.pick(&[1usize, 2, 4, 8]);
                let bytes = if rng.chance(2) { x.to_le_bytes() } else { x.to_be_bytes() };
                let i = rng.below(len);
                for (k, b) in bytes.iter().take(width).enumerate() {
                    if let Some(slot) = v.get_mut(i + k) {
                        *slot = *b;
                    }
                }
            }
            6 if !other.is_empty() => {
                let i = rng.below(len + 1);
                let j = rng.below(other.len());
                let n = 1 + rng.below((other.len() - j).min(512));
                v.splice(i..i, other[j..j + n].iter().copied());
            }
            7 if len > 0 => v.truncate(rng.below(len)),
            _ => {
                let s = rng.pick(STRINGS).as_bytes();
                let i = rng.below(len + 1);
                v.splice(i..i, s.iter().copied());
            }
        }
    }
    v.truncate(MAX_INPUT);
    v
}

fn random_value(rng: &mut Rng) -> Value {
    match rng.below(8) {
        0 => Value::Null,
        1 => Value::Bool(rng.chance(2)),
        2 => Value::from(*rng.pick(INTERESTING)),
        3 => serde_json::Number::from_f64(*rng.pick(&[-0.5, 1e308, -1e308, 0.1, 4294967296.0])).map(Value::Number).unwrap_or(Value::Null),
        4 => Value::from(*rng.pick(STRINGS)),
        5 => Value::Array(vec![Value::from(*rng.pick(STRINGS))]),
        6 => Value::Object(serde_json::Map::new()),
        _ => Value::from("x".repeat(1 << rng.below(13))),
    }
}

/// Every node of `v`, as a path of keys and indexes.
fn node_count(v: &Value) -> usize {
    1 + match v {
        Value::Array(a) => a.iter().map(node_count).sum(),
        Value::Object(o) => o.values().map(node_count).sum(),
        _ => 0,
    }
}

/// The `n`th node, depth first.
fn nth_node<'a>(v: &'a mut Value, n: &mut usize) -> Option<&'a mut Value> {
    if *n == 0 {
        return Some(v);
    }
    *n -= 1;
    match v {
        Value::Array(a) => a.iter_mut().find_map(|c| nth_node(c, n)),
        Value::Object(o) => o.values_mut().find_map(|c| nth_node(c, n)),
        _ => None,
    }
}

/// A random node of `other` (a JSON document), when it is one.
fn graft(rng: &mut Rng, other: &[u8]) -> Option<Value> {
    let mut o = serde_json::from_slice::<Value>(other).ok()?;
    let mut m = rng.below(node_count(&o));
    nth_node(&mut o, &mut m).map(|p| p.clone())
}

/// One structured mutation of a JSON document; falls back to bytes when
/// `input` is not JSON.
pub fn json(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let Ok(mut doc) = serde_json::from_slice::<Value>(input) else { return bytes(rng, input, other) };
    let rounds = 1 + rng.below(3);
    for _ in 0..rounds {
        let mut n = rng.below(node_count(&doc));
        let op = rng.below(7);
        // Drawn before the node is borrowed.
        let replacement = if op == 6 { graft(rng, other).unwrap_or_else(|| random_value(rng)) } else { random_value(rng) };
        let key = rng.pick(KEYS).to_string();
        let (pick, int, string) = (rng.next() as usize, *rng.pick(INTERESTING), *rng.pick(STRINGS));
        let Some(node) = nth_node(&mut doc, &mut n) else { continue };
        match (op, node) {
            (0, Value::Object(o)) if !o.is_empty() => {
                let k = o.keys().nth(pick % o.len()).cloned().unwrap_or_default();
                o.remove(&k);
            }
            (1, Value::Object(o)) => {
                o.insert(key, replacement);
            }
            (2, Value::Array(a)) if !a.is_empty() => {
                let dup = a[pick % a.len()].clone();
                a.push(dup);
            }
            (3, Value::Array(a)) if !a.is_empty() => {
                a.remove(pick % a.len());
            }
            (4, node @ Value::Number(_)) => *node = Value::from(int),
            (4, node @ Value::String(_)) => *node = Value::from(string),
            (_, node) => *node = replacement,
        }
    }
    let mut out = serde_json::to_vec(&doc).unwrap_or_default();
    out.truncate(MAX_INPUT);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_are_deterministic_and_bounded() {
        let seed = br#"{"a":[1,"x"],"b":{"c":true}}"#;
        let run = |s| {
            let mut rng = Rng::new(s);
            (0..200).map(|_| json(&mut rng, seed, b"{}")).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert!(run(7).iter().all(|v| v.len() <= MAX_INPUT));
        assert!(run(7).iter().any(|v| v.as_slice() != seed));
    }
}
