//! Fuzzes every reader: the input becomes a single file and every file of each directory layout.
#![no_main]

use libfuzzer_sys::fuzz_target;
use unlearnrec_core::data::{Format, LoadOptions, SplitConfig, load};

const FORMATS: [Option<Format>; 4] = [None, Some(Format::LightGcn), Some(Format::Delimited), Some(Format::RecBole)];

/// Directory layouts, each file holding the input.
const LAYOUTS: [&[&str]; 3] = [
    &["train.txt", "valid.txt", "test.txt", "user_list.txt", "item_list.txt"],
    &["x.train.inter", "x.test.inter"],
    &["train.csv", "test.csv"],
];

fuzz_target!(|data: &[u8]| {
    let Ok(tmp) = tempfile::tempdir() else { return };
    let mut paths = Vec::new();
    for name in ["input", "input.inter"] {
        let path = tmp.path().join(name);
        if std::fs::write(&path, data).is_err() {
            return;
        }
        paths.push(path);
    }
    for (k, files) in LAYOUTS.iter().enumerate() {
        let dir = tmp.path().join(format!("layout{k}"));
        if std::fs::create_dir(&dir).is_err() {
            return;
        }
        for f in *files {
            if std::fs::write(dir.join(f), data).is_err() {
                return;
            }
        }
        paths.push(dir);
    }
    // Defaults, and an explicit split so that sources without a test split get past the check.
    let split = SplitConfig { test_ratio: Some(0.3), valid_ratio: Some(0.1), ..SplitConfig::default() };
    for format in FORMATS {
        for opts in [
            LoadOptions { format, ..LoadOptions::default() },
            LoadOptions { format, split: split.clone(), ..LoadOptions::default() },
        ] {
            for path in &paths {
                let _ = load(path, &opts);
            }
        }
    }
});
