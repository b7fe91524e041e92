//! Replays the fuzz corpora on stable, without libFuzzer.
//!
//! Every file in `fuzz/corpus/<target>/` (the seeds) and `fuzz/regressions/<target>/` (inputs
//! that once failed, if any) goes through the same check function as the fuzz target, included
//! (`doxm_gate::testing::fuzz`). An empty or missing corpus directory fails the test, so that a renamed
//! target cannot silently replay nothing. To run a real campaign, see `.ci/fuzz-smoke`.

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use doxm_gate::testing::fuzz::{coap_parse, engine, ocf_encode, query};

#[test]
fn coap_parse_corpus() {
    replay("coap_parse", coap_parse::check);
}

#[test]
fn query_corpus() {
    replay("query", query::check);
}

#[test]
fn ocf_encode_corpus() {
    replay("ocf_encode", |data| ocf_encode::check(&ocf_encode::OcfCase::from_bytes(data)));
}

#[test]
fn engine_corpus() {
    replay("engine", engine::check);
}

/// Runs every corpus and regression file of `target` through `check`; reports all failures.
fn replay(target: &str, check: impl Fn(&[u8])) {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let corpus = files(&fuzz.join("corpus").join(target));
    assert!(!corpus.is_empty(), "fuzz/corpus/{target}/ is missing or empty");
    let regressions = fuzz.join("regressions").join(target);
    let inputs = corpus.into_iter().chain(files(&regressions));

    let mut failed = Vec::new();
    let mut count = 0;
    for path in inputs {
        let data = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        count += 1;
        if panic::catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
            failed.push(format!("{} ({})", path.display(), hex(&data)));
        }
    }
    assert!(failed.is_empty(), "{target}: {} of {count} inputs failed:\n{}", failed.len(), {
        failed.join("\n")
    });
}

/// The files of `dir`, sorted; none when it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

fn hex(data: &[u8]) -> String {
    data.iter().take(512).map(|b| format!("{b:02x}")).collect()
}

/// The seeds that are real datagrams are the fixtures of `doxm_gate::wire::fixtures`, byte for
/// byte (one definition; the seed files are its copies on disk for libFuzzer).
#[test]
fn real_datagram_seeds_are_the_fixtures() {
    use doxm_gate::wire::fixtures::{OBT_REQUEST, OBT_RES_REQUEST, REAL_DOXM_PAYLOAD};
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/coap_parse");
    let seed = |name: &str| fs::read(corpus.join(name)).expect("seed exists");
    assert_eq!(seed("obt-request-doxm-owned-false"), OBT_REQUEST);
    assert_eq!(seed("get-res-rt-doxm"), OBT_RES_REQUEST);
    assert!(seed("doxm-response-180-byte-payload").ends_with(&REAL_DOXM_PAYLOAD));
}
