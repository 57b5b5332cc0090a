//! The [`load`] entry point: format and layout detection, and the steps every reader shares (merging
//! duplicates, removing cross-split overlaps, holding out a split when the source has none).
//!
//! The per-format parsers live in `lightgcn.rs` (integer ids, parsed in parallel at the byte level) and
//! `delimited.rs` (string ids: CSV/TSV/`::` files and RecBole atomic `.inter` files).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::split::{self, SplitConfig};
use super::{Dataset, IdMap, Interactions, SplitOrigin, delimited, lightgcn};
use crate::error::{Error, Result};

/// An on-disk interaction format.
///
/// Parsed from (and serialised as) `lightgcn`, `delimited` (aliases `csv`, `tsv`) and `recbole` (alias
/// `inter`), case-insensitively.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Format {
    /// LightGCN/NGCF text: one line per user, `user item item ...`, whitespace separated, 0-based integer
    /// ids; a directory holds `train.txt`, optional `valid.txt`, `test.txt` and optional
    /// `user_list.txt`/`item_list.txt` (`org_id remap_id`).
    #[serde(rename = "lightgcn")]
    LightGcn,
    /// Delimited rows `user, item[, rating[, timestamp]]` (CSV, TSV, `::`, `;` or whitespace), with an
    /// optional header naming the columns; ids are arbitrary strings.
    #[serde(rename = "delimited", alias = "csv", alias = "tsv")]
    Delimited,
    /// RecBole atomic `.inter` files: tab separated, typed header such as `user_id:token\titem_id:token`.
    #[serde(rename = "recbole", alias = "inter")]
    RecBole,
}

impl Format {
    /// The canonical lowercase name (`lightgcn`, `delimited`, `recbole`).
    pub fn name(self) -> &'static str {
        match self {
            Format::LightGcn => "lightgcn",
            Format::Delimited => "delimited",
            Format::RecBole => "recbole",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "lightgcn" => Ok(Format::LightGcn),
            "delimited" | "csv" | "tsv" => Ok(Format::Delimited),
            "recbole" | "inter" => Ok(Format::RecBole),
            _ => Err(Error::config(
                "format",
                format!("unknown format {s:?}; expected lightgcn, delimited, csv, tsv, recbole or inter"),
            )),
        }
    }
}

/// How [`load`] reads a dataset.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoadOptions {
    /// The format; `None` detects it from the path (see [`load`]).
    pub format: Option<Format>,
    /// The column delimiter of delimited and RecBole files: any string, or one of the names `tab` (also
    /// `\t`), `comma`, `semicolon`, `space`/`whitespace` (runs of blanks). `None` detects it (delimited) or
    /// uses a tab (RecBole). Ignored for LightGCN.
    pub delimiter: Option<String>,
    /// Whether delimited files start with a header line; `None` detects it. RecBole files always have one;
    /// LightGCN files never do.
    pub header: Option<bool>,
    /// Keep only rows whose rating is at least this (binarises explicit ratings). An error when the
    /// source has no rating column.
    pub min_rating: Option<f64>,
    /// How to hold out validation/test interactions when the source does not carry them.
    pub split: SplitConfig,
}

impl LoadOptions {
    /// Checks the options before any file is read.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for an empty delimiter, a non-finite `min_rating` or a bad split config.
    pub fn validate(&self) -> Result<()> {
        if let Some(d) = &self.delimiter
            && d.is_empty()
        {
            return Err(Error::config("delimiter", "must not be empty"));
        }
        if let Some(r) = self.min_rating
            && !r.is_finite()
        {
            return Err(Error::config("min_rating", format!("must be a finite number, got {r}")));
        }
        self.split.validate()
    }
}

/// Reads a dataset from a file or directory.
///
/// Layout detection when `opts.format` is `None`:
/// - a directory with `train.txt`: LightGCN (`valid.txt`, `test.txt`, `user_list.txt`, `item_list.txt`
///   optional);
/// - a directory with `{name}.train.inter`: RecBole benchmark split (`{name}.valid.inter`,
///   `{name}.test.inter`), or with a single `{name}.inter`: one RecBole file;
/// - a directory with `train.csv` or `train.tsv` (and `valid`/`test` with the same extension): delimited;
/// - a file ending in `.inter`: RecBole; any other file: delimited, delimiter detected among `::`, tab,
///   comma, semicolon and whitespace.
///
/// A directory must carry its test split unless `opts.split.test_ratio` is set explicitly, in which case
/// the test split is held out of train. A single file never carries a split: it is split per user by
/// `opts.split` (temporal when the file has timestamps and the method is `Auto`). When a directory has no
/// validation split and `opts.split.valid_ratio` is set, one is carved out of train
/// ([`carve_validation`](super::carve_validation)).
///
/// Duplicate rows within a split are merged and counted in [`Dataset::duplicates`]. An interaction in
/// more than one split is kept only in the first of train, valid, test, and also counted there, so the
/// splits are always disjoint.
///
/// # Errors
/// [`Error::Io`] when a file cannot be read (including a missing test split), [`Error::Format`] naming
/// the file and 1-based line for malformed input (line 0 when a file as a whole is at fault, e.g. it has
/// no interactions), [`Error::InvalidConfig`] for bad options. Never panics on malformed input.
pub fn load(path: &Path, opts: &LoadOptions) -> Result<Dataset> {
    opts.validate()?;
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let parsed = if meta.is_dir() { load_dir(path, opts)? } else { load_file(path, opts)? };
    finish(parsed, opts)
}

fn load_dir(dir: &Path, opts: &LoadOptions) -> Result<Parsed> {
    let name = dir_name(dir);
    let format = match opts.format {
        Some(f) => f,
        None if dir.join("train.txt").is_file() => Format::LightGcn,
        None if recbole_layout(dir)?.is_some() => Format::RecBole,
        None if delimited_layout(dir).is_some() => Format::Delimited,
        None => {
            return Err(Error::io(
                dir,
                not_found("no train.txt, <name>.train.inter, <name>.inter, train.csv or train.tsv found"),
            ));
        }
    };
    match format {
        Format::LightGcn => lightgcn::load_dir(dir, name, opts),
        Format::RecBole => match recbole_layout(dir)? {
            Some(RecBoleLayout::Split(prefix)) => {
                let file = |part: &str| dir.join(format!("{prefix}.{part}.inter"));
                let files = SplitFiles::new(file("train"), file("valid"), file("test"));
                delimited::load(prefix, files, delimited::Dialect::RecBole, opts)
            }
            Some(RecBoleLayout::Single(file)) => {
                let name = file_stem(&file);
                delimited::load(name, SplitFiles::single(file), delimited::Dialect::RecBole, opts)
            }
            None => Err(Error::io(dir, not_found("no <name>.train.inter or <name>.inter found"))),
        },
        Format::Delimited => match delimited_layout(dir) {
            Some(ext) => {
                let file = |part: &str| dir.join(format!("{part}.{ext}"));
                let files = SplitFiles::new(file("train"), file("valid"), file("test"));
                delimited::load(name, files, delimited::Dialect::Delimited, opts)
            }
            None => Err(Error::io(dir, not_found("no train.csv or train.tsv found"))),
        },
    }
}

fn load_file(file: &Path, opts: &LoadOptions) -> Result<Parsed> {
    let format = opts.format.unwrap_or_else(|| {
        if file.extension().is_some_and(|e| e.eq_ignore_ascii_case("inter")) {
            Format::RecBole
        } else {
            Format::Delimited
        }
    });
    let name = file_stem(file);
    let files = SplitFiles::single(file.to_path_buf());
    match format {
        Format::LightGcn => lightgcn::load_files(name, files, opts),
        Format::Delimited => delimited::load(name, files, delimited::Dialect::Delimited, opts),
        Format::RecBole => delimited::load(name, files, delimited::Dialect::RecBole, opts),
    }
}

enum RecBoleLayout {
    /// `{prefix}.train.inter` and friends.
    Split(String),
    /// One `{name}.inter` holding everything.
    Single(PathBuf),
}

/// Finds `{prefix}.train.inter` in `dir`, preferring the prefix equal to the directory name when there
/// are several; else a single `{name}.inter`.
fn recbole_layout(dir: &Path) -> Result<Option<RecBoleLayout>> {
    let mut prefixes = Vec::new();
    let mut singles = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let Ok(file_name) = entry.file_name().into_string() else {
            continue;
        };
        if let Some(prefix) = file_name.strip_suffix(".train.inter") {
            prefixes.push(prefix.to_owned());
        } else if file_name.ends_with(".inter")
            && !file_name.ends_with(".valid.inter")
            && !file_name.ends_with(".test.inter")
        {
            singles.push(entry.path());
        }
    }
    prefixes.sort();
    singles.sort();
    let dir_name = dir_name(dir);
    let pick = prefixes.iter().find(|p| **p == dir_name).or(prefixes.first());
    Ok(match pick {
        Some(p) => Some(RecBoleLayout::Split(p.clone())),
        None => {
            let same = singles.iter().find(|s| file_stem(s) == dir_name);
            same.or(singles.first()).map(|s| RecBoleLayout::Single(s.clone()))
        }
    })
}

fn delimited_layout(dir: &Path) -> Option<&'static str> {
    ["csv", "tsv"].into_iter().find(|ext| dir.join(format!("train.{ext}")).is_file())
}

fn not_found(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::NotFound, msg.to_owned())
}

/// The last component of a directory path (resolving `.` and `..`), or `dataset`.
fn dir_name(dir: &Path) -> String {
    let named = |p: &Path| p.file_name().and_then(|n| n.to_str()).map(str::to_owned);
    named(dir).or_else(|| dir.canonicalize().ok().and_then(|p| named(&p))).unwrap_or_else(|| "dataset".into())
}

fn file_stem(file: &Path) -> String {
    file.file_stem().and_then(|n| n.to_str()).map_or_else(|| "dataset".into(), str::to_owned)
}

/// The files of one source: train always, valid and test when they exist (or always, for a directory
/// layout, so that the missing test file can be named).
pub(crate) struct SplitFiles {
    pub train: PathBuf,
    pub valid: Option<PathBuf>,
    /// `Ok(path)` when present, `Err(expected path)` when the directory lacks it.
    pub test: Option<Result<PathBuf, PathBuf>>,
}

impl SplitFiles {
    /// A directory layout: valid and test are optional.
    pub fn new(train: PathBuf, valid: PathBuf, test: PathBuf) -> Self {
        let valid = valid.is_file().then_some(valid);
        let test = Some(if test.is_file() { Ok(test) } else { Err(test) });
        Self { train, valid, test }
    }

    /// One file holding all interactions, to be split.
    pub fn single(file: PathBuf) -> Self {
        Self { train: file, valid: None, test: None }
    }
}

/// One parsed split file over internal ids.
pub(crate) struct Part {
    /// The file, for error messages.
    pub path: PathBuf,
    /// The (user, item) rows in file order, duplicates included.
    pub pairs: Vec<(u32, u32)>,
    /// Per-row timestamps, when the file has them.
    pub timestamps: Option<Vec<f64>>,
}

/// What a reader hands to [`finish`].
pub(crate) struct Parsed {
    pub name: String,
    pub users: IdMap,
    pub items: IdMap,
    pub train: Part,
    pub valid: Option<Part>,
    /// `None`: a single file, to be split. `Some(Err(path))`: a directory without its test file.
    pub test: Option<Result<Part, PathBuf>>,
}

/// Merges duplicates, holds out or carves splits as configured and removes cross-split overlaps.
fn finish(parsed: Parsed, opts: &LoadOptions) -> Result<Dataset> {
    let Parsed { name, users, items, train, valid, test } = parsed;
    let cfg = &opts.split;
    let non_empty = |part: &Part| {
        if part.pairs.is_empty() { Err(Error::format(&part.path, 0, "no interactions")) } else { Ok(()) }
    };
    non_empty(&train)?;
    let mut duplicates = 0;
    let (train_set, train_ts) = dedup_part(train, &mut duplicates);
    let valid_set = valid.map(|v| dedup_part(v, &mut duplicates).0);

    let (train_set, valid_set, test_set, origin) = match test {
        Some(Ok(test)) => {
            non_empty(&test)?;
            let test_set = dedup_part(test, &mut duplicates).0;
            (train_set, valid_set, test_set, SplitOrigin::Files)
        }
        Some(Err(missing)) if cfg.test_ratio.is_none() => {
            let file = missing.file_name().map_or_else(|| "test split".into(), |n| n.to_string_lossy());
            return Err(Error::io(
                missing.parent().unwrap_or(&missing),
                not_found(&format!("missing {file}; pass a --test-ratio to hold out a test split")),
            ));
        }
        _ => {
            // No test split in the source: hold one out of train (and a validation split unless the
            // source has one).
            let mut cfg = cfg.clone();
            if valid_set.is_some() {
                cfg.valid_ratio = Some(0.0);
            }
            let h = split::holdout(&train_set, train_ts.as_deref(), &cfg)?;
            (h.train, valid_set.or(h.valid), h.test, h.origin)
        }
    };

    // Splits are disjoint: an interaction stays in the first of train, valid, test.
    let valid_set = valid_set.map(|v| {
        let (v, removed) = v.difference(&train_set);
        duplicates += removed;
        v
    });
    let (mut test_set, removed) = test_set.difference(&train_set);
    duplicates += removed;
    if let Some(v) = &valid_set {
        let (t, removed) = test_set.difference(v);
        test_set = t;
        duplicates += removed;
    }

    let mut ds =
        Dataset { name, users, items, train: train_set, valid: valid_set, test: test_set, duplicates, split: origin };
    if ds.valid.is_none()
        && let Some(ratio) = cfg.valid_ratio
        && ratio > 0.0
    {
        ds = split::carve_validation(&ds, ratio, cfg.seed)?;
    }
    Ok(ds)
}

/// Sorts and merges one part; a merged duplicate keeps its latest timestamp.
fn dedup_part(part: Part, duplicates: &mut usize) -> (Interactions, Option<Vec<f64>>) {
    match part.timestamps {
        None => {
            let (set, dups) = sort_pairs(part.pairs);
            *duplicates += dups;
            (set, None)
        }
        Some(ts) => {
            use rayon::slice::ParallelSliceMut;
            let mut rows: Vec<(u32, u32, f64)> = part.pairs.into_iter().zip(ts).map(|((u, i), t)| (u, i, t)).collect();
            rows.par_sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)).then(a.2.total_cmp(&b.2)));
            let (mut users, mut items, mut times) = (Vec::new(), Vec::new(), Vec::new());
            for (k, &(u, i, t)) in rows.iter().enumerate() {
                // Rows are sorted by time within a pair, so the last of a run is the latest.
                if rows.get(k + 1).is_some_and(|n| (n.0, n.1) == (u, i)) {
                    *duplicates += 1;
                    continue;
                }
                users.push(u);
                items.push(i);
                times.push(t);
            }
            (Interactions::from_sorted(users, items), Some(times))
        }
    }
}

/// [`Interactions::from_pairs`], faster for the usual reader output where each user's rows are
/// contiguous and users ascend (LightGCN lines): then only each user's run is sorted, in place and in
/// parallel.
fn sort_pairs(mut pairs: Vec<(u32, u32)>) -> (Interactions, usize) {
    use rayon::prelude::*;
    if pairs.windows(2).any(|w| w[1].0 < w[0].0) {
        return Interactions::from_pairs(pairs);
    }
    pairs.par_chunk_by_mut(|a, b| a.0 == b.0).for_each(|run| run.sort_unstable());
    let before = pairs.len();
    pairs.dedup();
    let dups = before - pairs.len();
    let (users, items) = pairs.into_iter().unzip();
    (Interactions::from_sorted(users, items), dups)
}

/// The text of a file, checked to be UTF-8, without a leading byte-order mark.
pub(crate) fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    match String::from_utf8(bytes) {
        Ok(mut s) => {
            if s.starts_with('\u{feff}') {
                s.drain(..'\u{feff}'.len_utf8());
            }
            Ok(s)
        }
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            let line = line_of(e.as_bytes(), at);
            Err(Error::format(path, line, format!("invalid UTF-8 at byte {at}")))
        }
    }
}

/// The 1-based line number of byte offset `at`.
pub(crate) fn line_of(text: &[u8], at: usize) -> usize {
    1 + memchr::memchr_iter(b'\n', &text[..at.min(text.len())]).count()
}

/// A token quoted for an error message, shortened when long.
pub(crate) fn quote(token: &str) -> String {
    const MAX: usize = 40;
    if token.chars().count() <= MAX {
        format!("{token:?}")
    } else {
        let head: String = token.chars().take(MAX).collect();
        format!("{head:?}...")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{write_delimited, write_lightgcn, write_recbole};

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn err_text(r: Result<Dataset>) -> String {
        match r {
            Ok(ds) => panic!("expected an error, got a dataset with {} train rows", ds.train.len()),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn format_names_parse_and_round_trip_through_serde() {
        for (s, f) in [
            ("lightgcn", Format::LightGcn),
            ("LightGCN", Format::LightGcn),
            ("delimited", Format::Delimited),
            ("csv", Format::Delimited),
            ("tsv", Format::Delimited),
            ("recbole", Format::RecBole),
            ("inter", Format::RecBole),
        ] {
            assert_eq!(s.parse::<Format>().unwrap(), f, "{s}");
            let json = serde_json::to_string(&f).unwrap();
            assert_eq!(json, format!("\"{}\"", f.name()));
            assert_eq!(serde_json::from_str::<Format>(&json).unwrap(), f);
        }
        assert_eq!(serde_json::from_str::<Format>("\"csv\"").unwrap(), Format::Delimited);
        assert!("parquet".parse::<Format>().is_err());
    }

    #[test]
    fn load_options_deserialise_with_defaults() {
        let o: LoadOptions = serde_json::from_str(r#"{"format":"tsv","split":{"test_ratio":0.1}}"#).unwrap();
        assert_eq!(o.format, Some(Format::Delimited));
        assert_eq!(o.split.test_ratio, Some(0.1));
        assert_eq!(o.split.seed, SplitConfig::default().seed);
        assert!(serde_json::from_str::<LoadOptions>(r#"{"bogus":1}"#).is_err());
        let bad = LoadOptions { min_rating: Some(f64::NAN), ..Default::default() };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn detects_each_directory_layout() {
        let ds = crate::data::synthetic::generate(&crate::data::synthetic::SynthConfig {
            users: 30,
            items: 20,
            interactions: 200,
            ..Default::default()
        })
        .unwrap();
        let opts = LoadOptions::default();
        let tmp = tempfile::tempdir().unwrap();

        let lg = tmp.path().join("lg");
        write_lightgcn(&ds, &lg).unwrap();
        let csv = tmp.path().join("csv");
        write_delimited(&ds, &csv, b',').unwrap();
        let tsv = tmp.path().join("tsv");
        write_delimited(&ds, &tsv, b'\t').unwrap();
        let rb = tmp.path().join("rb");
        write_recbole(&ds, &rb).unwrap();
        for dir in [&lg, &csv, &tsv, &rb] {
            let back = load(dir, &opts).unwrap();
            assert_eq!(back.train, ds.train, "{dir:?}");
            assert_eq!(back.valid, ds.valid, "{dir:?}");
            assert_eq!(back.test, ds.test, "{dir:?}");
            assert_eq!(back.split, SplitOrigin::Files);
        }
        assert_eq!(load(&rb, &opts).unwrap().name, ds.name);
        assert_eq!(load(&csv, &opts).unwrap().name, "csv");

        let empty = tmp.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let e = err_text(load(&empty, &opts));
        assert!(e.contains("empty") && e.contains("train.txt"), "{e}");
    }

    #[test]
    fn missing_test_split_is_an_error_unless_a_ratio_is_given() {
        let tmp = tempfile::tempdir().unwrap();
        let text: String = (0..20).map(|u| format!("{u} {} {} {} {}\n", u, u + 1, u + 2, u + 3)).collect();
        write(tmp.path(), "train.txt", &text);
        let e = err_text(load(tmp.path(), &LoadOptions::default()));
        assert!(e.contains("missing test.txt") && e.contains("--test-ratio"), "{e}");

        let mut opts = LoadOptions::default();
        opts.split.test_ratio = Some(0.25);
        let ds = load(tmp.path(), &opts).unwrap();
        assert_eq!(ds.train.len() + ds.test.len(), 80);
        assert_eq!(ds.test.len(), 20, "one of four per user");
        assert!(matches!(ds.split, SplitOrigin::Random { test_ratio: 0.25, valid_ratio: 0.0, seed: 2024 }));
        assert!(ds.valid.is_none());

        opts.split.valid_ratio = Some(0.25);
        let ds = load(tmp.path(), &opts).unwrap();
        assert_eq!(ds.valid.as_ref().map(Interactions::len), Some(20));
        assert_eq!(ds.train.len(), 40);
    }

    #[test]
    fn overlaps_between_splits_are_removed_from_the_later_split_and_counted() {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), "train.txt", "0 1 2 2\n1 0\n");
        write(tmp.path(), "valid.txt", "0 3 1\n");
        write(tmp.path(), "test.txt", "0 3 4 2\n1 1\n");
        let ds = load(tmp.path(), &LoadOptions::default()).unwrap();
        assert_eq!(ds.train.iter().collect::<Vec<_>>(), [(0, 1), (0, 2), (1, 0)]);
        assert_eq!(ds.valid.unwrap().iter().collect::<Vec<_>>(), [(0, 3)]);
        assert_eq!(ds.test.iter().collect::<Vec<_>>(), [(0, 4), (1, 1)]);
        // (0,2) twice in train, (0,1) in valid and train, (0,3) in test and valid, (0,2) in test and train.
        assert_eq!(ds.duplicates, 4);
    }

    #[test]
    fn explicit_valid_ratio_carves_validation_from_a_file_split() {
        let tmp = tempfile::tempdir().unwrap();
        let text: String = (0..10).map(|u| format!("{u} 0 1 2 3 4 5 6 7 8 9\n")).collect();
        write(tmp.path(), "train.txt", &text);
        write(tmp.path(), "test.txt", "0 10\n");
        let mut opts = LoadOptions::default();
        opts.split.valid_ratio = Some(0.2);
        let ds = load(tmp.path(), &opts).unwrap();
        assert_eq!(ds.valid.as_ref().unwrap().len(), 20);
        assert_eq!(ds.train.len(), 80);
        assert_eq!(ds.split, SplitOrigin::Files);
    }

    #[test]
    fn single_files_are_split_temporally_when_they_have_timestamps() {
        let tmp = tempfile::tempdir().unwrap();
        // User a: items 1..=5 at times 50, 40, 30, 20, 10 (so item 1 is the latest).
        let rows: String = (1..=5).map(|i| format!("a,{i},5,{}\n", 60 - 10 * i)).collect();
        let file = write(tmp.path(), "r.csv", &rows);
        let ds = load(&file, &LoadOptions::default()).unwrap();
        assert!(matches!(ds.split, SplitOrigin::Temporal { .. }));
        assert_eq!(ds.test.iter().collect::<Vec<_>>(), [(0, 0)]);
        assert_eq!(ds.name, "r");

        let mut opts = LoadOptions::default();
        opts.split.method = split::SplitMethod::Random;
        assert!(matches!(load(&file, &opts).unwrap().split, SplitOrigin::Random { .. }));

        let no_time = write(tmp.path(), "p.csv", "a,1\na,2\n");
        opts.split.method = split::SplitMethod::Temporal;
        assert!(matches!(load(&no_time, &opts), Err(Error::InvalidConfig { .. })));
    }

    #[test]
    fn duplicate_rows_keep_their_latest_timestamp() {
        let tmp = tempfile::tempdir().unwrap();
        // Item 1 first seen at t=1 but seen again at t=100: it is the latest interaction.
        let file = write(tmp.path(), "d.csv", "u,1,1,1\nu,2,1,50\nu,3,1,60\nu,1,1,100\n");
        let ds = load(&file, &LoadOptions::default()).unwrap();
        assert_eq!(ds.duplicates, 1);
        assert_eq!(ds.test.iter().collect::<Vec<_>>(), [(0, 0)]);
        assert_eq!(ds.train.len(), 2);
    }

    #[test]
    fn empty_and_invalid_utf8_files_name_the_file_and_line() {
        let tmp = tempfile::tempdir().unwrap();
        let empty = write(tmp.path(), "empty.csv", "\n\n");
        let e = err_text(load(&empty, &LoadOptions::default()));
        assert!(e.contains("empty.csv: no interactions") && !e.contains(":0"), "{e}");

        let bad = tmp.path().join("bad.csv");
        std::fs::write(&bad, b"1,2\n3,4\n5,\xff\n").unwrap();
        let e = err_text(load(&bad, &LoadOptions::default()));
        assert!(e.contains("bad.csv:3:") && e.contains("UTF-8"), "{e}");

        let missing = tmp.path().join("nope.csv");
        assert!(matches!(load(&missing, &LoadOptions::default()), Err(Error::Io { .. })));
    }

    #[test]
    fn a_byte_order_mark_is_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        let file = write(tmp.path(), "bom.csv", "\u{feff}user,item\n1,2\n1,3\n2,3\n");
        let ds = load(&file, &LoadOptions::default()).unwrap();
        assert_eq!(ds.users.ids(), ["1", "2"]);
        assert_eq!(ds.train.len() + ds.test.len(), 3);
    }
}
