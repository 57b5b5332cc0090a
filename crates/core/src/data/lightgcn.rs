//! The LightGCN/NGCF text reader: `user item item ...` per line, integer ids.
//!
//! Files are read whole and cut into newline-aligned chunks that rayon parses in parallel with a
//! byte-level integer parser; errors carry byte offsets that become line numbers only when reported.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::IdMap;
use super::format::{LoadOptions, Parsed, Part, SplitFiles, line_of, quote, read_text};
use crate::error::{Error, Result};

/// Ids at or above this cannot be dense `u32` internal ids (the count must fit too).
const ID_CAP: u64 = u32::MAX as u64;

/// Without `user_list.txt`/`item_list.txt`, `n = max id + 1`; an id far beyond the number of lines or
/// pairs seen is rejected rather than allocating an id map for it (ids are meant to be dense).
const SLACK_FACTOR: u64 = 16;
const SLACK_CONST: u64 = 1 << 16;

/// A declared id list (`user_list.txt` / `item_list.txt`).
struct Declared {
    map: IdMap,
    path: PathBuf,
}

/// Reads a LightGCN directory: `train.txt`, optional `valid.txt`, `test.txt`, `user_list.txt`,
/// `item_list.txt`.
pub(crate) fn load_dir(dir: &Path, name: String, opts: &LoadOptions) -> Result<Parsed> {
    let files = SplitFiles::new(dir.join("train.txt"), dir.join("valid.txt"), dir.join("test.txt"));
    check_no_rating(&files.train, opts)?;
    let users = read_list(&dir.join("user_list.txt"))?;
    let items = read_list(&dir.join("item_list.txt"))?;
    parse(name, files, [users, items])
}

/// Reads LightGCN files without id lists (a single file, when `files.test` is `None`).
pub(crate) fn load_files(name: String, files: SplitFiles, opts: &LoadOptions) -> Result<Parsed> {
    check_no_rating(&files.train, opts)?;
    parse(name, files, [None, None])
}

fn check_no_rating(train: &Path, opts: &LoadOptions) -> Result<()> {
    match opts.min_rating {
        Some(_) => Err(Error::format(train, 0, "min_rating is set but LightGCN files have no rating column")),
        None => Ok(()),
    }
}

/// Reads an `org_id remap_id` list; `remap_id` must equal the row index. `None` when the file is absent.
fn read_list(path: &Path) -> Result<Option<Declared>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = read_text(path)?;
    // (line number, org_id) per data row.
    let mut rows: Vec<(usize, &str)> = Vec::new();
    let mut seen_first = false;
    for (k, line) in text.lines().enumerate() {
        let lineno = k + 1;
        let mut fields = line.split_ascii_whitespace();
        let Some(org) = fields.next() else { continue };
        let remap = fields.next();
        // The first line is the `org_id remap_id` header unless it already looks like data.
        let first = !std::mem::replace(&mut seen_first, true);
        if first && remap.is_none_or(|r| r.parse::<u64>().is_err()) {
            continue;
        }
        let Some(remap) = remap else {
            return Err(Error::format(path, lineno, "expected `org_id remap_id`, found one field"));
        };
        if remap.parse::<u64>().ok() != Some(rows.len() as u64) {
            let msg = format!("expected remap_id {} (the row index), found {}", rows.len(), quote(remap));
            return Err(Error::format(path, lineno, msg));
        }
        if rows.len() as u64 >= ID_CAP {
            return Err(Error::format(path, lineno, "too many ids for 32-bit internal ids"));
        }
        rows.push((lineno, org));
    }
    let map = IdMap::from_ids(rows.iter().map(|r| r.1.to_owned()).collect()).map_err(|dup| {
        // Report the second occurrence of the duplicate.
        let mut at = rows.iter().filter(|r| r.1 == dup).map(|r| r.0);
        let (first, second) = (at.next().unwrap_or(0), at.next().unwrap_or(0));
        Error::format(path, second, format!("duplicate org_id {} (first on line {first})", quote(&dup)))
    })?;
    Ok(Some(Declared { map, path: path.to_path_buf() }))
}

/// The bound an id is checked against while parsing.
#[derive(Clone, Copy)]
struct Limit<'a> {
    kind: &'static str,
    n: u64,
    /// The list that declared `n`, if any.
    list: Option<&'a Path>,
}

impl Limit<'_> {
    /// The message for an id token (its digits) at or beyond the limit.
    fn message(&self, digits: &str) -> String {
        match (digits.parse::<u64>(), self.list) {
            (Ok(id), Some(list)) if id <= ID_CAP => {
                let file = list.file_name().map_or_else(|| list.to_string_lossy(), |f| f.to_string_lossy());
                format!("{} id {id} is out of range: {file} declares {} {}s", self.kind, self.n, self.kind)
            }
            _ => format!("{} id {} is too large (ids must be below {ID_CAP})", self.kind, quote(digits)),
        }
    }
}

/// A parse error at a byte offset of the file.
struct ParseError {
    at: usize,
    msg: String,
}

/// The largest id of a kind seen so far and the byte offset of its first occurrence.
type Max = Option<(u32, usize)>;

fn bump(max: &mut Max, id: u32, at: usize) {
    if max.is_none_or(|(m, _)| id > m) {
        *max = Some((id, at));
    }
}

/// What one file or chunk yields.
#[derive(Default)]
struct Chunk {
    pairs: Vec<(u32, u32)>,
    /// Non-blank lines (each names one user).
    lines: usize,
    max_user: Max,
    max_item: Max,
}

fn parse(name: String, files: SplitFiles, lists: [Option<Declared>; 2]) -> Result<Parsed> {
    let [users, items] = lists;
    fn limit<'a>(kind: &'static str, d: &'a Option<Declared>) -> Limit<'a> {
        match d {
            Some(d) => Limit { kind, n: d.map.len() as u64, list: Some(&d.path) },
            None => Limit { kind, n: ID_CAP, list: None },
        }
    }
    let limits = [limit("user", &users), limit("item", &items)];

    let mut parts = Vec::new();
    let mut outs = Vec::new();
    for path in [Some(&files.train), files.valid.as_ref(), files.test.as_ref().and_then(|t| t.as_ref().ok())]
        .into_iter()
        .flatten()
    {
        let text = read_text(path)?;
        let chunk = parse_text(text.as_bytes(), &limits)
            .map_err(|e| Error::format(path, line_of(text.as_bytes(), e.at), e.msg))?;
        outs.push((path.clone(), text, chunk.lines, chunk.max_user, chunk.max_item));
        parts.push(Part { path: path.clone(), pairs: chunk.pairs, timestamps: None });
    }

    let lines: u64 = outs.iter().map(|o| o.2 as u64).sum();
    let pairs: u64 = parts.iter().map(|p| p.pairs.len() as u64).sum();
    let n_users = match users {
        Some(d) => d.map,
        None => IdMap::identity(inferred_count("user", lines, &outs, |o| o.3)?),
    };
    let n_items = match items {
        Some(d) => d.map,
        None => IdMap::identity(inferred_count("item", pairs, &outs, |o| o.4)?),
    };

    let mut parts = parts.into_iter();
    let train = parts.next().expect("train is always parsed");
    let valid = files.valid.as_ref().map(|_| parts.next().expect("valid was parsed"));
    let test = files.test.map(|t| t.map(|_| parts.next().expect("test was parsed")));
    Ok(Parsed { name, users: n_users, items: n_items, train, valid, test })
}

type Out = (PathBuf, String, usize, Max, Max);

/// `max id + 1` over all files, refusing ids far beyond what the files could densely hold.
fn inferred_count(kind: &str, seen: u64, outs: &[Out], max_of: impl Fn(&Out) -> Max) -> Result<usize> {
    let mut best: Option<(u32, &Out, usize)> = None;
    for o in outs {
        if let Some((id, at)) = max_of(o)
            && best.is_none_or(|(b, _, _)| id > b)
        {
            best = Some((id, o, at));
        }
    }
    let Some((id, out, at)) = best else {
        return Ok(0);
    };
    if u64::from(id) + 1 > SLACK_FACTOR * seen + SLACK_CONST {
        let msg = format!(
            "{kind} id {id} is far beyond the {seen} {kind} entries in the files; LightGCN ids must be dense \
             0-based integers (read sparse ids as a delimited file, or add {kind}_list.txt)"
        );
        return Err(Error::format(&out.0, line_of(out.1.as_bytes(), at), msg));
    }
    Ok(id as usize + 1)
}

/// Parses a whole file in parallel, newline-aligned chunks; the first error in file order wins.
fn parse_text(text: &[u8], limits: &[Limit<'_>; 2]) -> Result<Chunk, ParseError> {
    let target = (text.len() / (rayon::current_num_threads() * 4).max(1)).max(1 << 16);
    let mut bounds = Vec::new();
    let mut start = 0;
    while start < text.len() {
        let mut end = (start + target).min(text.len());
        if end < text.len() {
            end = memchr::memchr(b'\n', &text[end..]).map_or(text.len(), |k| end + k + 1);
        }
        bounds.push((start, end));
        start = end;
    }
    let chunks: Vec<Result<Chunk, ParseError>> =
        bounds.into_par_iter().map(|(s, e)| parse_chunk(text, s, e, limits)).collect();
    let mut total = Chunk::default();
    let mut ok = Vec::with_capacity(chunks.len());
    for c in chunks {
        ok.push(c?);
    }
    total.pairs.reserve_exact(ok.iter().map(|c| c.pairs.len()).sum());
    for c in ok {
        total.pairs.extend_from_slice(&c.pairs);
        total.lines += c.lines;
        if let Some((id, at)) = c.max_user {
            bump(&mut total.max_user, id, at);
        }
        if let Some((id, at)) = c.max_item {
            bump(&mut total.max_item, id, at);
        }
    }
    Ok(total)
}

fn is_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | 0x0b | 0x0c)
}

/// Parses the lines in `text[start..end]` (which ends at a line boundary).
fn parse_chunk(text: &[u8], start: usize, end: usize, limits: &[Limit<'_>; 2]) -> Result<Chunk, ParseError> {
    let mut out = Chunk { pairs: Vec::with_capacity((end - start) / 6), ..Chunk::default() };
    let mut pos = start;
    while pos < end {
        let line_end = memchr::memchr(b'\n', &text[pos..end]).map_or(end, |k| pos + k);
        let line = &text[pos..line_end];
        let mut user = None;
        let mut i = 0;
        loop {
            while i < line.len() && is_blank(line[i]) {
                i += 1;
            }
            if i == line.len() {
                break;
            }
            let tok_start = i;
            let mut value: u64 = 0;
            while i < line.len() {
                let d = line[i].wrapping_sub(b'0');
                if d > 9 {
                    break;
                }
                // Saturates just above the cap so that long digit strings cannot overflow.
                value = (value * 10 + u64::from(d)).min(ID_CAP + 1);
                i += 1;
            }
            let at = pos + tok_start;
            let limit = &limits[usize::from(user.is_some())];
            if i < line.len() && !is_blank(line[i]) {
                let tok_end = line[i..].iter().position(|&b| is_blank(b)).map_or(line.len(), |k| i + k);
                let tok = String::from_utf8_lossy(&line[tok_start..tok_end]);
                let msg = format!("expected a non-negative integer {} id, found {}", limit.kind, quote(&tok));
                return Err(ParseError { at, msg });
            }
            if value >= limit.n {
                let digits = String::from_utf8_lossy(&line[tok_start..i]);
                return Err(ParseError { at, msg: limit.message(&digits) });
            }
            let id = value as u32;
            match user {
                None => {
                    user = Some(id);
                    out.lines += 1;
                    bump(&mut out.max_user, id, at);
                }
                Some(u) => {
                    out.pairs.push((u, id));
                    bump(&mut out.max_item, id, at);
                }
            }
        }
        pos = line_end + 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::format::Format;
    use crate::data::{Interactions, load};

    fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(tmp.path().join(name), text).unwrap();
        }
        tmp
    }

    fn load_err(dir: &Path) -> String {
        match load(dir, &LoadOptions::default()) {
            Ok(_) => panic!("expected an error for {dir:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn pairs(set: &Interactions) -> Vec<(u32, u32)> {
        set.iter().collect()
    }

    #[test]
    fn parses_users_items_blank_lines_and_item_less_users() {
        let tmp = dir_with(&[("train.txt", "0 3 1\r\n\n  \n2\n1 0\t2  \n"), ("test.txt", "0 2\n1 1\n4\n")]);
        let ds = load(tmp.path(), &LoadOptions::default()).unwrap();
        assert_eq!(pairs(&ds.train), [(0, 1), (0, 3), (1, 0), (1, 2)]);
        assert_eq!(pairs(&ds.test), [(0, 2), (1, 1)]);
        assert_eq!(ds.n_users(), 5, "user 4 has a line of its own in test.txt");
        assert_eq!(ds.n_items(), 4);
        assert!(ds.users.is_identity() && ds.items.is_identity());
        assert!(ds.valid.is_none());
    }

    #[test]
    fn parallel_chunks_agree_with_a_naive_parse() {
        // Several chunks' worth of lines (the chunk target is at least 64 KiB).
        let mut text = String::new();
        let mut expect = Vec::new();
        for u in 0..30_000u32 {
            text.push_str(&u.to_string());
            for k in 0..(u % 13) {
                let i = (u * 7 + k * 31) % 997;
                text.push_str(&format!(" {i}"));
                expect.push((u, i));
            }
            text.push('\n');
        }
        assert!(text.len() > 4 << 16, "several chunks");
        let limits = [Limit { kind: "user", n: ID_CAP, list: None }, Limit { kind: "item", n: ID_CAP, list: None }];
        let Ok(chunk) = parse_text(text.as_bytes(), &limits) else { panic!("parse failed") };
        assert_eq!(chunk.pairs, expect);
        assert_eq!(chunk.lines, 30_000);
        assert_eq!(chunk.max_user.map(|m| m.0), Some(29_999));
        assert_eq!(chunk.max_item.map(|m| m.0), expect.iter().map(|p| p.1).max());
    }

    #[test]
    fn bad_tokens_name_the_file_and_line() {
        let cases: &[(&str, usize, &str)] = &[
            ("0 1 2\n1 2\n2 x3\n", 3, "non-negative integer item id"),
            ("0 1\n\n-1 2\n", 3, "non-negative integer user id"),
            ("0 1\n1 2.5\n", 2, "\"2.5\""),
            ("0 1\n1 99999999999999999999\n", 2, "too large"),
            ("0 1\n1 4294967295\n", 2, "too large"),
        ];
        for &(train, line, what) in cases {
            let tmp = dir_with(&[("train.txt", train), ("test.txt", "0 0\n")]);
            let e = load_err(tmp.path());
            assert!(e.contains(&format!("train.txt:{line}:")) && e.contains(what), "{train:?}: {e}");
        }
        // The first error in file order wins even when later chunks also fail.
        let mut big: String = (0..30000).map(|u| format!("{u} 1 2 3\n")).collect();
        big.push_str("bad\n");
        big.insert_str(0, "0 1\n7 y\n");
        let tmp = dir_with(&[("train.txt", &big), ("test.txt", "0 0\n")]);
        let e = load_err(tmp.path());
        assert!(e.contains("train.txt:2:") && e.contains("\"y\""), "{e}");
    }

    #[test]
    fn errors_in_test_files_name_the_test_file() {
        let tmp = dir_with(&[("train.txt", "0 1\n"), ("test.txt", "0 2\n0 1 ;\n")]);
        let e = load_err(tmp.path());
        assert!(e.contains("test.txt:2:"), "{e}");
        let tmp = dir_with(&[("train.txt", "0 1\n"), ("valid.txt", "\n\n\nz\n"), ("test.txt", "0 2\n")]);
        let e = load_err(tmp.path());
        assert!(e.contains("valid.txt:4:"), "{e}");
    }

    #[test]
    fn sparse_ids_without_lists_are_refused_not_allocated() {
        let tmp = dir_with(&[("train.txt", "0 1\n1 2\n"), ("test.txt", "0 3\n4000000000 1\n")]);
        let e = load_err(tmp.path());
        assert!(e.contains("test.txt:2:") && e.contains("dense"), "{e}");
        let tmp = dir_with(&[("train.txt", "0 1\n1 2 3\n1 90000000\n"), ("test.txt", "0 3\n")]);
        let e = load_err(tmp.path());
        assert!(e.contains("train.txt:3:") && e.contains("item id 90000000"), "{e}");
    }

    #[test]
    fn id_lists_declare_counts_and_external_ids() {
        let users = "org_id remap_id\nalice 0\nbob 1\ncarol 2\n";
        let items = "org_id remap_id freebase_id\n100 0 m.1\n200 1 m.2\n";
        let tmp = dir_with(&[
            ("train.txt", "0 0\n1 1\n"),
            ("test.txt", "0 1\n"),
            ("user_list.txt", users),
            ("item_list.txt", items),
        ]);
        let ds = load(tmp.path(), &LoadOptions::default()).unwrap();
        assert_eq!(ds.users.ids(), ["alice", "bob", "carol"]);
        assert_eq!(ds.items.ids(), ["100", "200"]);
        assert_eq!(ds.n_users(), 3, "carol has no interactions but is declared");

        std::fs::write(tmp.path().join("test.txt"), "0 1\n\n1 2\n").unwrap();
        let e = load_err(tmp.path());
        assert!(e.contains("test.txt:3:") && e.contains("item_list.txt declares 2 items"), "{e}");
        std::fs::write(tmp.path().join("test.txt"), "0 1\n3 0\n").unwrap();
        let e = load_err(tmp.path());
        assert!(e.contains("test.txt:2:") && e.contains("user id 3 is out of range"), "{e}");
    }

    #[test]
    fn malformed_id_lists_name_the_line() {
        let cases: &[(&str, usize, &str)] = &[
            ("org_id remap_id\na 0\nb 2\n", 3, "expected remap_id 1"),
            ("org_id remap_id\na 0\nb\n", 3, "one field"),
            ("org_id remap_id\na 0\nb 1\na 2\n", 4, "duplicate org_id \"a\" (first on line 2)"),
        ];
        for &(list, line, what) in cases {
            let tmp = dir_with(&[("train.txt", "0 0\n"), ("test.txt", "0 0\n"), ("user_list.txt", list)]);
            let e = load_err(tmp.path());
            assert!(e.contains(&format!("user_list.txt:{line}:")) && e.contains(what), "{list:?}: {e}");
        }
    }

    #[test]
    fn a_single_file_in_lightgcn_format_is_split() {
        let tmp = dir_with(&[("all.txt", "0 1 2 3 4\n1 1 2 3 4 5\n")]);
        let opts = LoadOptions { format: Some(Format::LightGcn), ..Default::default() };
        let ds = load(&tmp.path().join("all.txt"), &opts).unwrap();
        assert_eq!(ds.train.len() + ds.test.len(), 9);
        assert_eq!(ds.test.len(), 2, "round(4 * 0.2) and round(5 * 0.2) are both 1");
        let opts = LoadOptions { min_rating: Some(3.0), ..opts };
        assert!(load(&tmp.path().join("all.txt"), &opts).is_err());
    }
}
