//! Writers for the three formats [`load`](super::load) reads.
//!
//! Every file is first written to a temporary file in the target directory and renamed into place only
//! after all files were written, so an error leaves no partial output. Files of the same layout that
//! the dataset does not need (a stale `valid.txt`, id lists) are removed so that the directory loads
//! back as the dataset written.
//!
//! Round trips: LightGCN keeps everything (every user gets a line in every file; the id lists are
//! written when the ids are not the identity or trailing items have no interactions). Delimited and
//! RecBole files only hold interactions, so users and items without any are lost, and internal ids come
//! back in the readers' order (numeric or lexicographic), which is the order of any dataset they read.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

use super::{Dataset, IdMap, Interactions};
use crate::error::{Error, Result};

/// A temporary file in `dir` for an atomic write (write, then `persist` over the target). Created with mode
/// 0644 minus the umask, as an ordinary file would be (`tempfile`'s default 0600 would leave results, data and
/// checkpoints unreadable to other users after the rename).
pub fn temp_file_in(dir: &Path) -> std::io::Result<NamedTempFile> {
    let mut b = tempfile::Builder::new();
    b.prefix(".unlearnrec-");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        b.permissions(std::fs::Permissions::from_mode(0o644));
    }
    b.tempfile_in(dir)
}

/// Files written to temporary names, waiting to be renamed into place.
struct Staged<'a> {
    dir: &'a Path,
    files: Vec<(NamedTempFile, PathBuf)>,
}

impl<'a> Staged<'a> {
    fn new(dir: &'a Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        Ok(Self { dir, files: Vec::new() })
    }

    /// Writes `name` to a temporary file with `body`.
    fn add(&mut self, name: &str, body: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> Result<()> {
        let target = self.dir.join(name);
        let mut tmp = temp_file_in(self.dir).map_err(|e| Error::io(self.dir, e))?;
        let mut w = BufWriter::with_capacity(1 << 16, tmp.as_file_mut());
        body(&mut w).and_then(|()| w.flush()).map_err(|e| Error::io(&target, e))?;
        drop(w);
        tmp.as_file().sync_all().map_err(|e| Error::io(&target, e))?;
        self.files.push((tmp, target));
        Ok(())
    }

    /// Renames every file (each synced when written) into place, then removes `stale` files if present,
    /// then syncs the directory: once this returns, the dataset survives a power loss.
    fn commit(self, stale: &[String]) -> Result<()> {
        for (tmp, target) in self.files {
            tmp.persist(&target).map_err(|e| Error::io(&target, e.error))?;
        }
        for name in stale {
            let path = self.dir.join(name);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::io(path, e));
                }
                _ => {}
            }
        }
        crate::io::sync_dir(self.dir)
    }
}

/// The parts of a dataset with their file stems.
fn parts(ds: &Dataset) -> Vec<(&'static str, &Interactions)> {
    let mut v = vec![("train", &ds.train)];
    if let Some(valid) = &ds.valid {
        v.push(("valid", valid));
    }
    v.push(("test", &ds.test));
    v
}

/// Checks that every interaction's ids are inside the id maps.
fn check_ids(ds: &Dataset) -> Result<()> {
    for (_, part) in parts(ds) {
        let (nu, ni) = part.id_bounds();
        if nu > ds.n_users() {
            return Err(Error::IdOutOfRange { kind: "user", id: nu as u64 - 1, n: ds.n_users() });
        }
        if ni > ds.n_items() {
            return Err(Error::IdOutOfRange { kind: "item", id: ni as u64 - 1, n: ds.n_items() });
        }
    }
    Ok(())
}

/// Checks that an external id survives a reader's field splitting and trimming.
fn check_external(ids: &IdMap, kind: &str, file: &Path, forbidden: impl Fn(char) -> bool) -> Result<()> {
    for (k, id) in ids.ids().iter().enumerate() {
        let quoted = id.len() >= 2 && id.starts_with('"') && id.ends_with('"');
        if id.is_empty()
            || id.trim_ascii() != id
            || quoted
            || id.chars().any(|c| c == '\n' || c == '\r' || forbidden(c))
        {
            let msg = format!("{kind} id {id:?} (internal {k}) cannot be written in this format");
            return Err(Error::format(file, 0, msg));
        }
    }
    Ok(())
}

/// Writes `train.txt`, `valid.txt` (when the dataset has a validation split) and `test.txt` in the
/// LightGCN/NGCF text format with internal ids: one line per user, `user item item ...`, users without
/// items written alone. Adds `user_list.txt`/`item_list.txt` (`org_id remap_id`) when the external ids
/// are not the identity or when trailing items have no interactions (so that the count survives).
///
/// # Errors
/// [`Error::Io`] on write failure, [`Error::IdOutOfRange`] for interactions outside the id maps,
/// [`Error::Format`] for external ids containing whitespace (they cannot go in an id list).
pub fn write_lightgcn(ds: &Dataset, dir: &Path) -> Result<()> {
    check_ids(ds)?;
    let mut staged = Staged::new(dir)?;
    let mut stale = Vec::new();
    for (stem, part) in parts(ds) {
        let n_users = ds.n_users();
        staged.add(&format!("{stem}.txt"), |w| {
            let (users, items) = (part.users(), part.items());
            let mut k = 0;
            for u in 0..n_users as u32 {
                write!(w, "{u}")?;
                while k < users.len() && users[k] == u {
                    write!(w, " {}", items[k])?;
                    k += 1;
                }
                writeln!(w)?;
            }
            Ok(())
        })?;
    }
    if ds.valid.is_none() {
        stale.push("valid.txt".to_owned());
    }
    let max_item = parts(ds).iter().map(|(_, p)| p.id_bounds().1).max().unwrap_or(0);
    for (name, ids, needed) in [
        ("user_list.txt", &ds.users, !ds.users.is_identity()),
        ("item_list.txt", &ds.items, !ds.items.is_identity() || max_item < ds.n_items()),
    ] {
        if !needed {
            stale.push(name.to_owned());
            continue;
        }
        check_external(ids, &name[..4], &dir.join(name), |c| c.is_ascii_whitespace())?;
        staged.add(name, |w| {
            writeln!(w, "org_id remap_id")?;
            for (k, id) in ids.ids().iter().enumerate() {
                writeln!(w, "{id} {k}")?;
            }
            Ok(())
        })?;
    }
    staged.commit(&stale)
}

/// Writes `train`, `valid` (when present) and `test` files with header `user<delim>item` and external ids,
/// named `.tsv` for a tab delimiter and `.csv` otherwise.
///
/// # Errors
/// [`Error::InvalidConfig`] unless `delim` is one of `,` `\t` `;` and space (the delimiters the reader
/// detects); [`Error::Format`] for ids the reader would split or trim differently (empty, containing the
/// delimiter or a line break, with leading/trailing blanks, in quotes); [`Error::Io`];
/// [`Error::IdOutOfRange`].
pub fn write_delimited(ds: &Dataset, dir: &Path, delim: u8) -> Result<()> {
    if !matches!(delim, b',' | b'\t' | b';' | b' ') {
        return Err(Error::config(
            "delimiter",
            format!("must be one of ',', '\\t', ';', ' ', got {:?}", delim as char),
        ));
    }
    let ext = if delim == b'\t' { "tsv" } else { "csv" };
    let d = delim as char;
    write_rows(
        ds,
        dir,
        |stem| format!("{stem}.{ext}"),
        &format!("user{d}item"),
        d,
        move |c| c == d || (d == ' ' && c.is_ascii_whitespace()),
    )
}

/// Writes RecBole benchmark files `{name}.train.inter`, `{name}.valid.inter` (when present) and
/// `{name}.test.inter` with header `user_id:token\titem_id:token` and external ids; `name` is the dataset
/// name with path separators replaced.
///
/// # Errors
/// As [`write_delimited`], for ids containing a tab or a line break.
pub fn write_recbole(ds: &Dataset, dir: &Path) -> Result<()> {
    let name = recbole_prefix(&ds.name);
    write_rows(ds, dir, |stem| format!("{name}.{stem}.inter"), "user_id:token\titem_id:token", '\t', |c| c == '\t')
}

/// The file prefix [`write_recbole`] uses for a dataset name.
pub(crate) fn recbole_prefix(name: &str) -> String {
    let clean: String = name.chars().map(|c| if matches!(c, '/' | '\\' | '\0') { '_' } else { c }).collect();
    if clean.is_empty() || clean == "." || clean == ".." { "dataset".into() } else { clean }
}

fn write_rows(
    ds: &Dataset,
    dir: &Path,
    file_name: impl Fn(&str) -> String,
    header: &str,
    delim: char,
    forbidden: impl Fn(char) -> bool + Copy,
) -> Result<()> {
    check_ids(ds)?;
    let first = dir.join(file_name("train"));
    check_external(&ds.users, "user", &first, forbidden)?;
    check_external(&ds.items, "item", &first, forbidden)?;
    let mut staged = Staged::new(dir)?;
    for (stem, part) in parts(ds) {
        staged.add(&file_name(stem), |w| {
            writeln!(w, "{header}")?;
            for (u, i) in part.iter() {
                writeln!(w, "{}{delim}{}", ds.users.external(u), ds.items.external(i))?;
            }
            Ok(())
        })?;
    }
    let stale = if ds.valid.is_none() { vec![file_name("valid")] } else { Vec::new() };
    staged.commit(&stale)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::data::synthetic::{SynthConfig, generate};
    use crate::data::{LoadOptions, SplitOrigin, load};

    fn external_pairs(ds: &Dataset, part: &Interactions) -> Vec<(String, String)> {
        let mut v: Vec<_> =
            part.iter().map(|(u, i)| (ds.users.external(u).to_owned(), ds.items.external(i).to_owned())).collect();
        v.sort();
        v
    }

    /// Same external ids (when `ids_too`) and the same interactions in every split.
    fn assert_same(a: &Dataset, b: &Dataset, ids_too: bool) {
        if ids_too {
            assert_eq!(a.users, b.users);
            assert_eq!(a.items, b.items);
            assert_eq!((&a.train, &a.valid, &a.test), (&b.train, &b.valid, &b.test));
        }
        assert_eq!(external_pairs(a, &a.train), external_pairs(b, &b.train));
        assert_eq!(external_pairs(a, &a.test), external_pairs(b, &b.test));
        assert_eq!(a.valid.is_some(), b.valid.is_some());
        if let (Some(va), Some(vb)) = (&a.valid, &b.valid) {
            assert_eq!(external_pairs(a, va), external_pairs(b, vb));
        }
        assert_eq!(b.split, SplitOrigin::Files);
    }

    /// A dataset with string ids in lexicographic order (the delimited readers' order).
    fn string_ids(ds: &Dataset) -> Dataset {
        let names = |n: usize, p: &str| IdMap::from_ids((0..n).map(|k| format!("{p}{k:05}")).collect()).unwrap();
        Dataset { users: names(ds.n_users(), "u"), items: names(ds.n_items(), "i"), ..ds.clone() }
    }

    fn small() -> Dataset {
        generate(&SynthConfig { users: 40, items: 30, interactions: 400, ..Default::default() }).unwrap()
    }

    #[test]
    fn every_format_round_trips() {
        let tmp = tempfile::tempdir().unwrap();
        for ds in [small(), string_ids(&small())] {
            let lg = tmp.path().join("lg");
            write_lightgcn(&ds, &lg).unwrap();
            assert_same(&ds, &load(&lg, &LoadOptions::default()).unwrap(), true);
            // Delimited files keep the id maps exactly when every id has an interaction.
            let (nu, ni) = [Some(&ds.train), ds.valid.as_ref(), Some(&ds.test)]
                .into_iter()
                .flatten()
                .map(Interactions::id_bounds)
                .fold((0, 0), |a, b| (a.0.max(b.0), a.1.max(b.1)));
            let mut seen_items = vec![false; ds.n_items()];
            for (_, i) in ds.train.iter().chain(ds.test.iter()).chain(ds.valid.iter().flat_map(|v| v.iter())) {
                seen_items[i as usize] = true;
            }
            let complete = nu == ds.n_users() && ni == ds.n_items() && seen_items.iter().all(|&s| s);
            for delim in [b',', b'\t', b';', b' '] {
                let dir = tmp.path().join(format!("d{delim}"));
                write_delimited(&ds, &dir, delim).unwrap();
                assert_same(&ds, &load(&dir, &LoadOptions::default()).unwrap(), complete);
            }
            let rb = tmp.path().join("rb");
            write_recbole(&ds, &rb).unwrap();
            assert_same(&ds, &load(&rb, &LoadOptions::default()).unwrap(), complete);
        }
    }

    #[test]
    fn lightgcn_keeps_users_and_items_without_interactions() {
        let mut ds = small();
        // Drop every interaction of the last user and of the last two items.
        let keep = |s: &Interactions| {
            let pairs = s.iter().filter(|&(u, i)| u != 39 && i < 28).collect();
            Interactions::from_pairs(pairs).0
        };
        ds.train = keep(&ds.train);
        ds.test = keep(&ds.test);
        ds.valid = None;
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("valid.txt"), "0 1\n").unwrap();
        write_lightgcn(&ds, tmp.path()).unwrap();
        assert!(!tmp.path().join("valid.txt").exists(), "stale valid.txt is removed");
        assert!(!tmp.path().join("user_list.txt").exists());
        assert!(tmp.path().join("item_list.txt").exists(), "needed to declare 30 items");
        let back = load(tmp.path(), &LoadOptions::default()).unwrap();
        assert_eq!((back.n_users(), back.n_items()), (40, 30));
        assert_same(&ds, &back, true);
        let text = std::fs::read_to_string(tmp.path().join("train.txt")).unwrap();
        assert_eq!(text.lines().last(), Some("39"));
    }

    #[test]
    fn unwritable_ids_and_bad_delimiters_are_errors_and_write_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let mut ds = string_ids(&small());
        let mut ids = ds.items.ids().to_vec();
        ids[3] = "a,b".into();
        ds.items = IdMap::from_ids(ids).unwrap();
        let out = tmp.path().join("out");
        let e = write_delimited(&ds, &out, b',').unwrap_err().to_string();
        assert!(e.contains("train.csv") && e.contains("\"a,b\""), "{e}");
        assert!(!out.join("train.csv").exists() && !out.join("test.csv").exists(), "nothing written");
        write_delimited(&ds, &out, b'\t').unwrap();
        assert!(write_delimited(&ds, &out, b'|').is_err());
        let mut ids = ds.users.ids().to_vec();
        ids[0] = "has space".into();
        ds.users = IdMap::from_ids(ids).unwrap();
        assert!(write_lightgcn(&ds, &tmp.path().join("lg")).is_err());
        assert!(!tmp.path().join("lg").join("train.txt").exists());
        ds.train = Interactions::from_pairs(vec![(0, 999)]).0;
        assert!(matches!(write_recbole(&ds, tmp.path()), Err(Error::IdOutOfRange { kind: "item", .. })));
    }

    #[test]
    fn recbole_prefix_is_a_plain_file_name() {
        assert_eq!(recbole_prefix("ml-100k"), "ml-100k");
        assert_eq!(recbole_prefix("a/b"), "a_b");
        assert_eq!(recbole_prefix(""), "dataset");
    }

    fn arb_dataset() -> impl Strategy<Value = Dataset> {
        (1usize..12, 1usize..12, any::<bool>(), any::<u64>()).prop_flat_map(|(nu, ni, with_valid, seed)| {
            let pair = (0..nu as u32, 0..ni as u32);
            (
                proptest::collection::vec(pair.clone(), 1..40),
                proptest::collection::vec(pair.clone(), 0..10),
                proptest::collection::vec(pair, 1..20),
            )
                .prop_map(move |(train, valid, test)| {
                    let (train, _) = Interactions::from_pairs(train);
                    let (valid, _) = Interactions::from_pairs(valid);
                    let (valid, _) = valid.difference(&train);
                    let (test, _) = Interactions::from_pairs(test);
                    let (test, _) = test.difference(&train);
                    let (test, _) = test.difference(&valid);
                    let ids = |n: usize, p: &str| {
                        // Seeded choice between integer ids and string ids.
                        let v = (0..n).map(|k| if seed % 2 == 0 { format!("{}", k * 3) } else { format!("{p}{k:02}") });
                        IdMap::from_ids(v.collect()).unwrap()
                    };
                    Dataset {
                        name: "prop".into(),
                        users: ids(nu, "u"),
                        items: ids(ni, "i"),
                        train,
                        valid: with_valid.then_some(valid),
                        test,
                        duplicates: 0,
                        split: SplitOrigin::Files,
                    }
                })
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn random_datasets_round_trip(ds in arb_dataset()) {
            prop_assume!(!ds.test.is_empty());
            let tmp = tempfile::tempdir().unwrap();
            let lg = tmp.path().join("lg");
            write_lightgcn(&ds, &lg).unwrap();
            assert_same(&ds, &load(&lg, &LoadOptions::default()).unwrap(), true);
            let rb = tmp.path().join("rb");
            write_recbole(&ds, &rb).unwrap();
            // Users and items without interactions do not survive a delimited file.
            assert_same(&ds, &load(&rb, &LoadOptions::default()).unwrap(), false);
            let csv = tmp.path().join("csv");
            write_delimited(&ds, &csv, b',').unwrap();
            assert_same(&ds, &load(&csv, &LoadOptions::default()).unwrap(), false);
        }
    }
}
