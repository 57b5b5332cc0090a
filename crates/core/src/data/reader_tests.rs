//! Reader tests across formats: robustness on arbitrary input and the benchmark datasets.
//!
//! The real-data tests read `UNLEARNREC_DATA` (default `../../../shared/data` from the crate root) and
//! skip, saying why, when a dataset directory is missing.

use std::path::{Path, PathBuf};

use proptest::prelude::*;

use super::format::Format;
use super::{Dataset, Interactions, LoadOptions, SplitConfig, SplitMethod, SplitOrigin, load};

const FORMATS: [Option<Format>; 4] = [None, Some(Format::LightGcn), Some(Format::Delimited), Some(Format::RecBole)];

/// Loads `bytes` as a file and as every file of each directory layout with every format; only checks
/// that each call returns.
fn load_everything(bytes: &[u8], opts: &LoadOptions) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let root = tmp.path();
    for name in ["input.txt", "input.inter", "input.csv"] {
        std::fs::write(root.join(name), bytes).expect("write");
    }
    let layouts: [&[&str]; 4] = [
        &["train.txt", "test.txt", "user_list.txt", "item_list.txt"],
        &["train.txt", "valid.txt"],
        &["d.train.inter", "d.valid.inter", "d.test.inter"],
        &["train.csv", "test.csv"],
    ];
    for (k, files) in layouts.iter().enumerate() {
        let dir = root.join(format!("layout{k}"));
        std::fs::create_dir(&dir).expect("mkdir");
        for f in *files {
            std::fs::write(dir.join(f), bytes).expect("write");
        }
    }
    for format in FORMATS {
        let opts = LoadOptions { format, ..opts.clone() };
        for name in ["input.txt", "input.inter", "input.csv", "layout0", "layout1", "layout2", "layout3"] {
            let _ = load(&root.join(name), &opts);
        }
    }
}

fn option_sets() -> impl Strategy<Value = LoadOptions> {
    (
        proptest::option::of(prop_oneof![Just(","), Just("\t"), Just("::"), Just("space"), Just("x")]),
        proptest::option::of(any::<bool>()),
        proptest::option::of(-1.0f64..6.0),
        proptest::option::of(0.0f64..0.9),
        any::<bool>(),
    )
        .prop_map(|(delimiter, header, min_rating, test_ratio, temporal)| LoadOptions {
            format: None,
            delimiter: delimiter.map(str::to_owned),
            header,
            min_rating,
            split: SplitConfig {
                test_ratio,
                valid_ratio: Some(0.05),
                method: if temporal { SplitMethod::Temporal } else { SplitMethod::Auto },
                seed: 1,
            },
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn readers_never_panic_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        load_everything(&bytes, &LoadOptions::default());
    }

    #[test]
    fn readers_never_panic_on_plausible_lines(
        lines in proptest::collection::vec("[0-9 ]{0,12}|[0-9a-z:;,\t. \"+-]{0,24}|user_id:token\titem_id:token|org_id remap_id", 0..24),
        opts in option_sets(),
    ) {
        load_everything(lines.join("\n").as_bytes(), &opts);
    }
}

fn data_root() -> PathBuf {
    std::env::var_os("UNLEARNREC_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"))
}

/// The path of a benchmark file or directory, or `None` (with the reason printed) when it is missing.
fn real(rel: &str) -> Option<PathBuf> {
    let path = data_root().join(rel);
    if path.exists() {
        Some(path)
    } else {
        eprintln!("skipping: {} not found (set UNLEARNREC_DATA to the benchmark data directory)", path.display());
        None
    }
}

fn counts(ds: &Dataset) -> (usize, usize, usize, Option<usize>, usize) {
    (ds.n_users(), ds.n_items(), ds.train.len(), ds.valid.as_ref().map(Interactions::len), ds.test.len())
}

/// Published sizes of the benchmark splits (shared/data/README.md, the LightGCN and RecEraser papers).
#[test]
fn benchmark_lightgcn_directories_have_their_published_sizes() {
    let expected = [
        ("gowalla", (29_858, 40_981, 810_128, None, 217_242)),
        ("ml-1m", (6040, 3706, 720_152, None, 200_041)),
        ("ml-100k", (943, 1682, 80_367, None, 19_633)),
        ("yelp", (42_712, 26_822, 182_357, Some(13_025), 65_128)),
    ];
    for (name, sizes) in expected {
        let Some(dir) = real(name) else { continue };
        let ds = load(&dir, &LoadOptions::default()).unwrap();
        assert_eq!(counts(&ds), sizes, "{name}");
        assert_eq!(ds.split, SplitOrigin::Files);
        assert_eq!(ds.duplicates, 0, "{name}: the README says the splits are disjoint");
        assert_eq!(ds.name, name);
    }
}

#[test]
fn gowalla_external_ids_come_from_the_id_lists() {
    let Some(dir) = real("gowalla") else { return };
    let ds = load(&dir, &LoadOptions::default()).unwrap();
    // Compare with an independent reading of the lists: the second line holds remap id 0.
    for (file, map) in [("user_list.txt", &ds.users), ("item_list.txt", &ds.items)] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        let rows: Vec<&str> = text.lines().skip(1).map(|l| l.split(' ').next().unwrap()).collect();
        assert_eq!(map.ids(), rows.as_slice(), "{file}");
    }
    assert!(!ds.users.is_identity());
}

/// Independent reference: the rows of `ratings.tsv`, split on tabs by hand.
fn ml100k_reference(min_rating: f64) -> Option<Vec<(String, String)>> {
    let path = real("ml-100k/ratings.tsv")?;
    let text = std::fs::read_to_string(path).unwrap();
    let mut rows: Vec<(String, String)> = text
        .lines()
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .filter(|f| f[2].parse::<f64>().unwrap() >= min_rating)
        .map(|f| (f[0].to_owned(), f[1].to_owned()))
        .collect();
    rows.sort();
    Some(rows)
}

fn external_pairs(ds: &Dataset) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = [Some(&ds.train), ds.valid.as_ref(), Some(&ds.test)]
        .into_iter()
        .flatten()
        .flat_map(Interactions::iter)
        .map(|(u, i)| (ds.users.external(u).to_owned(), ds.items.external(i).to_owned()))
        .collect();
    v.sort();
    v
}

#[test]
fn ml100k_ratings_and_recbole_files_hold_the_same_interactions() {
    let Some(reference) = ml100k_reference(f64::NEG_INFINITY) else {
        return;
    };
    for file in ["ml-100k/ratings.tsv", "ml-100k/ml-100k.inter"] {
        let Some(path) = real(file) else { continue };
        let ds = load(&path, &LoadOptions::default()).unwrap();
        assert_eq!((ds.n_users(), ds.n_items()), (943, 1682), "{file}");
        assert_eq!(ds.train.len() + ds.test.len(), 100_000, "{file}");
        assert!(matches!(ds.split, SplitOrigin::Temporal { .. }), "{file} has timestamps");
        assert_eq!(external_pairs(&ds), reference, "{file}");
        // Numeric ids: internal id k is the k-th smallest external id, here 1-based MovieLens ids.
        assert_eq!(ds.users.external(0), "1");
        assert_eq!(ds.items.external(1681), "1682");
    }
    // The LightGCN ml-100k split holds the same rows with 0-based ids.
    let Some(dir) = real("ml-100k") else { return };
    let lg = load(&dir, &LoadOptions::default()).unwrap();
    let mut shifted: Vec<(String, String)> = external_pairs(&lg)
        .into_iter()
        .map(|(u, i)| ((u.parse::<u32>().unwrap() + 1).to_string(), (i.parse::<u32>().unwrap() + 1).to_string()))
        .collect();
    shifted.sort();
    assert_eq!(shifted, reference);
}

#[test]
fn ml100k_min_rating_binarises() {
    let Some(reference) = ml100k_reference(4.0) else {
        return;
    };
    let Some(path) = real("ml-100k/ratings.tsv") else {
        return;
    };
    let opts = LoadOptions {
        min_rating: Some(4.0),
        split: SplitConfig { test_ratio: Some(0.1), method: SplitMethod::Random, ..SplitConfig::default() },
        ..LoadOptions::default()
    };
    let ds = load(&path, &opts).unwrap();
    assert_eq!(external_pairs(&ds), reference);
    assert!(matches!(ds.split, SplitOrigin::Random { test_ratio: 0.1, .. }));
}

#[test]
#[ignore = "timing; run with `cargo test --release -p unlearnrec-core -- --ignored --nocapture load_time`"]
fn load_time_gowalla() {
    let Some(dir) = real("gowalla") else { return };
    let opts = LoadOptions::default();
    let _ = load(&dir, &opts).unwrap(); // warm the page cache
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t = std::time::Instant::now();
        let ds = load(&dir, &opts).unwrap();
        best = best.min(t.elapsed().as_secs_f64());
        assert_eq!(ds.train.len(), 810_128);
    }
    eprintln!("gowalla load: best of 5 {:.1} ms ({} threads)", best * 1e3, rayon::current_num_threads());
}
