//! End-to-end detection over the corpus of real client first flights
//! (`tests/corpus`, re-created by `tests/corpus/capture.py`): what
//! `refractium detect` prints for every capture is what its manifest says,
//! and no built-in detector claims a capture of another protocol or random
//! bytes.

use crate::support::{bin, cache_dir, run_cmd};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The built-in detectors (DESIGN.md §7): the protocol names a user routes on.
const BUILTINS: &[&str] = &[
    "tls",
    "http",
    "http2",
    "ssh",
    "dns",
    "socks4",
    "socks5",
    "postgres",
    "redis",
    "mqtt",
    "openvpn",
    "wireguard",
    "quic",
    "xmpp",
    "rdp",
    "pattern",
];

/// Time limit for one `refractium detect` run (a cold plugin cache compiles
/// every built-in first).
const DETECT_SECS: u64 = 300;

/// Random inputs for the cross matrix: count, and lengths 1..=MAX_RANDOM_LEN.
const RANDOM_INPUTS: usize = 64;
const MAX_RANDOM_LEN: u64 = 2048;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus")
}

/// What `refractium detect` should print for an entry.
#[derive(Debug, Clone)]
struct Expect {
    protocol: Option<String>,
    sni: Option<String>,
    alpn: Vec<String>,
    /// Keys that must be present with these values (others may be too).
    attributes: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
struct Entry {
    case: String,
    transport: String,
    files: Vec<PathBuf>,
    flight: bool,
    expect: Expect,
}

fn string_list(value: &Value, what: &str) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("{what}: expected a list, got {value}"))
        .iter()
        .map(|v| v.as_str().unwrap_or_else(|| panic!("{what}: expected strings, got {v}")).to_string())
        .collect()
}

/// The manifest's entries, checked for shape (every file exists).
fn manifest() -> Vec<Entry> {
    let path = corpus_dir().join("manifest.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let doc: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    let entries = doc["entries"].as_array().expect("manifest.json has an `entries` list");
    assert!(!entries.is_empty(), "manifest.json lists no entries");
    entries
        .iter()
        .map(|e| {
            let case = e["case"].as_str().unwrap_or_else(|| panic!("entry without `case`: {e}")).to_string();
            let transport = e["transport"].as_str().unwrap_or_else(|| panic!("{case}: no `transport`")).to_string();
            assert!(transport == "tcp" || transport == "udp", "{case}: transport {transport:?}");
            let files: Vec<PathBuf> =
                string_list(&e["files"], &format!("{case}: files")).iter().map(|f| corpus_dir().join(f)).collect();
            assert!(!files.is_empty(), "{case}: no files");
            for f in &files {
                assert!(f.is_file(), "{case}: file {} is missing", f.display());
            }
            let flight = e["flight"].as_bool().unwrap_or(files.len() > 1);
            assert!(flight || files.len() == 1, "{case}: several files but not a flight");
            let x = &e["expect"];
            let attributes = x["attributes"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| {
                            let v = v.as_str().unwrap_or_else(|| panic!("{case}: attribute {k} is not a string"));
                            (k.clone(), v.to_string())
                        })
                        .collect()
                })
                .unwrap_or_default();
            let expect = Expect {
                protocol: x["protocol"].as_str().map(str::to_string),
                sni: x["sni"].as_str().map(str::to_string),
                alpn: if x["alpn"].is_null() { Vec::new() } else { string_list(&x["alpn"], &format!("{case}: alpn")) },
                attributes,
            };
            Entry { case, transport, files, flight, expect }
        })
        .collect()
}

/// Run `refractium detect` the way a user would (cwd without a config, so
/// only the built-ins run) and return its JSON lines, one per input file (or
/// one for a flight).
fn detect(transport: &str, flight: bool, files: &[PathBuf]) -> Vec<Value> {
    let cwd = tempfile::tempdir().expect("temp dir for detect");
    let mut cmd = Command::new(bin());
    cmd.arg("detect").args(["--transport", transport]);
    if flight {
        cmd.arg("--flight");
    }
    cmd.args(files).current_dir(cwd.path()).env("REFRACTIUM_CACHE_DIR", cache_dir()).env_remove("RUST_LOG");
    let (ok, stdout, stderr) = run_cmd(&mut cmd, DETECT_SECS);
    assert!(ok, "`refractium detect --transport {transport}` over {} file(s) failed:\n{stderr}\n{stdout}", files.len());
    let lines: Vec<Value> = stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("detect printed a line that is not JSON ({e}): {l}"))
        })
        .collect();
    let want = if flight { 1 } else { files.len() };
    assert_eq!(lines.len(), want, "detect printed {} objects for {want} expected:\n{stdout}\n{stderr}", lines.len());
    lines
}

/// `protocol sni=… alpn=[…] {k=v}` — how a table cell shows a result.
fn show(protocol: Option<&str>, sni: Option<&str>, alpn: &[String], attrs: &BTreeMap<String, String>) -> String {
    let mut s = protocol.unwrap_or("null").to_string();
    if let Some(sni) = sni {
        let _ = write!(s, " sni={sni}");
    }
    if !alpn.is_empty() {
        let _ = write!(s, " alpn=[{}]", alpn.join(","));
    }
    if !attrs.is_empty() {
        let kv: Vec<String> = attrs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = write!(s, " {{{}}}", kv.join(" "));
    }
    s
}

fn got_attributes(v: &Value) -> BTreeMap<String, String> {
    v["attributes"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_string))).collect())
        .unwrap_or_default()
}

/// Compare one detect result with its entry; `None` when it is as expected.
fn mismatch(entry: &Entry, got: &Value) -> Option<String> {
    let protocol = got["protocol"].as_str();
    let sni = got["sni"].as_str();
    let alpn: Vec<String> = got["alpn"].as_array().map_or_else(Vec::new, |a| {
        a.iter().map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string)).collect()
    });
    let attrs = got_attributes(got);
    let x = &entry.expect;
    let ok = protocol == x.protocol.as_deref()
        && (x.protocol.is_none()
            || (sni == x.sni.as_deref()
                && alpn == x.alpn
                && x.attributes.iter().all(|(k, v)| attrs.get(k) == Some(v))));
    (!ok).then(|| {
        let missing: Vec<String> =
            x.attributes.iter().filter(|(k, v)| attrs.get(*k) != Some(*v)).map(|(k, v)| format!("{k}={v}")).collect();
        let mut got_text = show(protocol, sni, &alpn, &attrs);
        if protocol.is_some() && !missing.is_empty() {
            let _ = write!(got_text, " (missing {})", missing.join(" "));
        }
        format!(
            "| {} | {} | {} |",
            entry.case,
            show(x.protocol.as_deref(), x.sni.as_deref(), &x.alpn, &x.attributes),
            got_text
        )
    })
}

/// Every corpus entry is detected as its manifest says: protocol, SNI, ALPN
/// and the listed attributes. All mismatches are reported in one table.
#[test]
fn corpus_entries_are_detected_as_expected() {
    let entries = manifest();
    let mut failures = Vec::new();
    let mut checked = 0;
    for transport in ["tcp", "udp"] {
        let of_transport: Vec<&Entry> = entries.iter().filter(|e| e.transport == transport).collect();
        // Single reads in one batch; each flight in its own run.
        let singles: Vec<&Entry> = of_transport.iter().copied().filter(|e| !e.flight).collect();
        if !singles.is_empty() {
            let files: Vec<PathBuf> = singles.iter().map(|e| e.files[0].clone()).collect();
            let results = detect(transport, false, &files);
            for (entry, got) in singles.iter().zip(&results) {
                assert_eq!(
                    got["file"].as_str(),
                    Some(entry.files[0].display().to_string().as_str()),
                    "detect's output is not in input order"
                );
                failures.extend(mismatch(entry, got));
                checked += 1;
            }
        }
        for entry in of_transport.iter().filter(|e| e.flight) {
            let results = detect(transport, true, &entry.files);
            let names: Vec<String> = entry.files.iter().map(|f| f.display().to_string()).collect();
            assert_eq!(results[0]["file"], serde_json::json!(names), "{}: a flight's `file` is its list", entry.case);
            failures.extend(mismatch(entry, &results[0]));
            checked += 1;
        }
    }
    assert_eq!(checked, entries.len(), "every manifest entry was checked");
    assert!(
        failures.is_empty(),
        "{} of {} corpus entries are not detected as expected:\n| case | expected | got |\n|---|---|---|\n{}\n",
        failures.len(),
        entries.len(),
        failures.join("\n")
    );
}

/// A tiny xorshift64 so the random inputs are the same on every run.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// The built-in detectors `refractium plugins` lists, so the cross matrix
/// knows it ran every one of them.
fn listed_builtins() -> BTreeSet<String> {
    let cwd = tempfile::tempdir().expect("temp dir for plugins");
    let mut cmd = Command::new(bin());
    cmd.arg("plugins").current_dir(cwd.path()).env("REFRACTIUM_CACHE_DIR", cache_dir()).env_remove("RUST_LOG");
    let (ok, stdout, stderr) = run_cmd(&mut cmd, DETECT_SECS);
    assert!(ok, "`refractium plugins` failed:\n{stderr}\n{stdout}");
    stdout
        .lines()
        .filter(|l| l.contains("detector") && l.contains("builtin"))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// No detector claims what is not its own: every file of every entry (each
/// read or datagram alone), and 64 random byte strings, run through all the
/// built-ins of each transport (UDP captures through the TCP detectors too,
/// and the other way round); a file may be claimed only by its entry's
/// protocol (nothing at all for junk and random bytes). Every false match is
/// reported with the input, the transport and the protocol claimed.
#[test]
fn no_detector_claims_another_protocols_flight_or_random_bytes() {
    let listed = listed_builtins();
    let missing: Vec<&str> = BUILTINS.iter().copied().filter(|d| !listed.contains(*d)).collect();
    assert!(missing.is_empty(), "`refractium plugins` does not list the built-in detectors {missing:?}: {listed:?}");

    let entries = manifest();
    let random_dir = tempfile::tempdir().expect("temp dir for random inputs");
    let mut rng = XorShift(0x5eed_c0de_1234_5678);
    // input → (label, the protocols allowed to claim it: its entries' expected ones)
    let mut owner: BTreeMap<PathBuf, (String, BTreeSet<Option<String>>)> = BTreeMap::new();
    for i in 0..RANDOM_INPUTS {
        let len = usize::try_from(1 + rng.next() % MAX_RANDOM_LEN).expect("small length");
        let bytes: Vec<u8> = (0..len).map(|_| rng.next().to_le_bytes()[0]).collect();
        let name = format!("random-{i:02}-{len}.bin");
        let path = random_dir.path().join(&name);
        std::fs::write(&path, bytes).expect("write random input");
        owner.insert(path, (format!("random/{name}"), BTreeSet::from([None])));
    }
    for entry in &entries {
        for (i, file) in entry.files.iter().enumerate() {
            let label = if entry.flight { format!("{} (part {})", entry.case, i + 1) } else { entry.case.clone() };
            let slot = owner.entry(file.clone()).or_insert_with(|| (label, BTreeSet::new()));
            slot.1.insert(entry.expect.protocol.clone());
        }
    }
    let files: Vec<PathBuf> = owner.keys().cloned().collect();

    let mut false_matches = Vec::new();
    let mut per_detector: BTreeMap<String, usize> = BTreeMap::new();
    for transport in ["tcp", "udp"] {
        let results = detect(transport, false, &files);
        for (file, got) in files.iter().zip(&results) {
            assert_eq!(got["file"].as_str(), Some(file.display().to_string().as_str()), "output in input order");
            let Some(claimed) = got["protocol"].as_str() else { continue };
            let (label, allowed) = owner.get(file).expect("every input has an owner");
            if !allowed.contains(&Some(claimed.to_string())) {
                *per_detector.entry(claimed.to_string()).or_default() += 1;
                let allowed: Vec<&str> = allowed.iter().map(|p| p.as_deref().unwrap_or("null")).collect();
                false_matches.push(format!("| {label} | {transport} | {} | {claimed} |", allowed.join(" or ")));
            }
        }
    }
    let unknown: BTreeSet<&str> = per_detector.keys().map(String::as_str).filter(|p| !BUILTINS.contains(p)).collect();
    assert!(
        false_matches.is_empty(),
        "{} false matches over {} inputs (claims by detector: {per_detector:?}{}):\n\
         | input | transport | expected | claimed |\n|---|---|---|---|\n{}\n",
        false_matches.len(),
        files.len(),
        if unknown.is_empty() { String::new() } else { format!("; not built-in names: {unknown:?}") },
        false_matches.join("\n")
    );
}
