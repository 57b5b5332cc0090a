//! Readers for delimited interaction files (CSV, TSV, `::`, `;`, whitespace) and RecBole atomic `.inter`
//! files, whose ids are arbitrary strings.
//!
//! Internal ids are assigned after all split files are read: when every external id of a kind parses as
//! an integer they are ordered numerically, otherwise lexicographically (byte order), so the mapping does
//! not depend on row order.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::IdMap;
use super::format::{LoadOptions, Parsed, Part, SplitFiles, quote, read_text};
use crate::error::{Error, Result};

/// Which flavour of delimited text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// Optional header, columns by name or position, delimiter detected.
    Delimited,
    /// Mandatory typed header (`user_id:token ...`), tab separated unless told otherwise.
    RecBole,
}

const USER_NAMES: &[&str] = &["user", "user_id", "userid", "uid", "users"];
const ITEM_NAMES: &[&str] =
    &["item", "item_id", "itemid", "iid", "items", "movie", "movie_id", "movieid", "business_id", "product_id"];
const RATING_NAMES: &[&str] = &["rating", "ratings", "score", "stars"];
const TIME_NAMES: &[&str] = &["timestamp", "time", "ts"];

/// How fields are separated.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Delim {
    Str(String),
    /// Runs of ASCII blanks.
    Blank,
}

impl Delim {
    fn from_option(s: &str) -> Self {
        match s {
            "tab" | "\\t" | "\t" => Delim::Str("\t".into()),
            "comma" => Delim::Str(",".into()),
            "semicolon" => Delim::Str(";".into()),
            "space" | "whitespace" | " " => Delim::Blank,
            other => Delim::Str(other.into()),
        }
    }

    fn split_into<'a>(&self, line: &'a str, out: &mut Vec<&'a str>) {
        out.clear();
        match self {
            Delim::Blank => out.extend(line.split_ascii_whitespace()),
            Delim::Str(d) => out.extend(line.split(d.as_str()).map(clean_field)),
        }
    }
}

/// Trims blanks and one pair of surrounding double quotes (quoted delimiters are not supported).
fn clean_field(field: &str) -> &str {
    let f = field.trim_ascii();
    f.strip_prefix('"').and_then(|g| g.strip_suffix('"')).unwrap_or(f)
}

/// Where the fields of a row are.
#[derive(Clone, Debug)]
struct Columns {
    n: usize,
    user: usize,
    item: usize,
    rating: Option<usize>,
    time: Option<usize>,
}

/// One parsed row, borrowing its ids from the file text.
struct Row<'a> {
    user: &'a str,
    item: &'a str,
    time: Option<f64>,
}

struct Table<'a> {
    rows: Vec<Row<'a>>,
    has_time: bool,
}

/// Reads the files of one source.
pub(crate) fn load(name: String, files: SplitFiles, dialect: Dialect, opts: &LoadOptions) -> Result<Parsed> {
    let test_path = files.test.as_ref().and_then(|t| t.as_ref().ok());
    let paths: Vec<PathBuf> =
        [Some(&files.train), files.valid.as_ref(), test_path].into_iter().flatten().cloned().collect();
    let texts = paths.iter().map(|p| read_text(p)).collect::<Result<Vec<_>>>()?;
    let tables = paths
        .iter()
        .zip(&texts)
        .map(|(path, text)| parse_table(path, text, dialect, opts))
        .collect::<Result<Vec<_>>>()?;

    let (users, user_ids) = id_map(&tables, |r| r.user, "user", &paths[0])?;
    let (items, item_ids) = id_map(&tables, |r| r.item, "item", &paths[0])?;
    let mut parts = paths.iter().zip(&tables).map(|(path, table)| {
        let pairs = table.rows.iter().map(|r| (user_ids[r.user], item_ids[r.item])).collect();
        let timestamps = table.has_time.then(|| table.rows.iter().map(|r| r.time.unwrap_or(0.0)).collect());
        Part { path: path.clone(), pairs, timestamps }
    });
    let train = parts.next().expect("train is always read");
    let valid = files.valid.as_ref().map(|_| parts.next().expect("valid was read"));
    let test = files.test.map(|t| t.map(|_| parts.next().expect("test was read")));
    Ok(Parsed { name, users, items, train, valid, test })
}

/// Builds the id map of one kind over all tables and the lookup from external id to internal id.
fn id_map<'a>(
    tables: &[Table<'a>],
    get: impl Fn(&Row<'a>) -> &'a str,
    kind: &str,
    path: &Path,
) -> Result<(IdMap, HashMap<&'a str, u32>)> {
    let mut distinct: Vec<&'a str> = {
        let mut seen: HashMap<&'a str, ()> = HashMap::new();
        tables.iter().flat_map(|t| &t.rows).map(&get).filter(|id| seen.insert(id, ()).is_none()).collect()
    };
    if u32::try_from(distinct.len()).is_err() {
        return Err(Error::format(path, 0, format!("too many distinct {kind} ids for 32-bit internal ids")));
    }
    let numeric: Option<Vec<i64>> = distinct.iter().map(|s| s.parse::<i64>().ok()).collect();
    match numeric {
        Some(values) => {
            // Ties ("7" and "007") are broken by the string, so the order is still total.
            let mut keyed: Vec<(i64, &'a str)> = values.into_iter().zip(distinct).collect();
            keyed.sort_unstable();
            distinct = keyed.into_iter().map(|(_, s)| s).collect();
        }
        None => distinct.sort_unstable(),
    }
    let lookup: HashMap<&'a str, u32> = distinct.iter().enumerate().map(|(i, &s)| (s, i as u32)).collect();
    let map = IdMap::from_ids(distinct.into_iter().map(str::to_owned).collect())
        .map_err(|dup| Error::format(path, 0, format!("duplicate {kind} id {dup:?}")))?;
    Ok((map, lookup))
}

fn is_number(field: &str) -> bool {
    field.parse::<f64>().is_ok_and(f64::is_finite)
}

/// A header field's name: lowercase, without a RecBole `:type` suffix.
fn field_name(field: &str) -> String {
    field.split(':').next().unwrap_or(field).trim_ascii().to_ascii_lowercase()
}

fn parse_table<'a>(path: &Path, text: &'a str, dialect: Dialect, opts: &LoadOptions) -> Result<Table<'a>> {
    let lines: Vec<(usize, &'a str)> =
        text.lines().enumerate().filter(|(_, l)| !l.trim_ascii().is_empty()).map(|(k, l)| (k + 1, l)).collect();
    let Some(&(first_no, first)) = lines.first() else {
        return Ok(Table { rows: Vec::new(), has_time: false });
    };
    let delim = match (&opts.delimiter, dialect) {
        (Some(d), _) => Delim::from_option(d),
        (None, Dialect::RecBole) => Delim::Str("\t".into()),
        (None, Dialect::Delimited) => detect_delim(&lines).ok_or_else(|| {
            Error::format(
                path,
                first_no,
                "expected at least two columns (user, item) separated by `::`, tab, comma, semicolon or blanks",
            )
        })?,
    };
    let mut fields = Vec::new();
    delim.split_into(first, &mut fields);
    let header_fields: Vec<String> = fields.iter().map(|f| field_name(f)).collect();
    let header = match dialect {
        Dialect::RecBole => {
            if !fields.iter().all(|f| f.contains(':')) {
                let msg = "expected a RecBole header of typed fields such as `user_id:token\\titem_id:token`";
                return Err(Error::format(path, first_no, msg));
            }
            true
        }
        Dialect::Delimited => opts.header.unwrap_or_else(|| {
            let mut second = Vec::new();
            if let Some(&(_, l)) = lines.get(1) {
                delim.split_into(l, &mut second);
            }
            looks_like_header(&header_fields, &fields, lines.get(1).map(|_| second.as_slice()))
        }),
    };
    let cols = if header {
        columns_by_name(&header_fields, dialect).map_err(|msg| Error::format(path, first_no, msg))?
    } else {
        let n = fields.len();
        Columns { n, user: 0, item: 1, rating: (n > 2).then_some(2), time: (n > 3).then_some(3) }
    };
    if cols.n < 2 {
        return Err(Error::format(path, first_no, format!("expected at least two columns, found {}", cols.n)));
    }
    if opts.min_rating.is_some() && cols.rating.is_none() {
        return Err(Error::format(path, first_no, "min_rating is set but there is no rating column"));
    }
    let data = if header { &lines[1..] } else { &lines[..] };
    let chunks: Vec<Result<Vec<Row<'a>>>> = data
        .par_chunks(8192)
        .map(|chunk| {
            let mut fields = Vec::with_capacity(cols.n);
            let mut rows = Vec::with_capacity(chunk.len());
            for &(no, line) in chunk {
                if let Some(row) = parse_row(line, &delim, &cols, opts.min_rating, &mut fields)
                    .map_err(|msg| Error::format(path, no, msg))?
                {
                    rows.push(row);
                }
            }
            Ok(rows)
        })
        .collect();
    let mut rows = Vec::with_capacity(data.len());
    for chunk in chunks {
        rows.extend(chunk?);
    }
    Ok(Table { rows, has_time: cols.time.is_some() })
}

/// Picks the candidate delimiter that splits the first line into at least two fields and gives the same
/// field count on the most sampled lines (earlier candidates win ties).
fn detect_delim(lines: &[(usize, &str)]) -> Option<Delim> {
    let sample: Vec<&str> = lines.iter().take(20).map(|&(_, l)| l).collect();
    let candidates = ["::", "\t", ",", ";"].map(|d| Delim::Str(d.into()));
    let mut best: Option<(usize, Delim)> = None;
    let mut fields = Vec::new();
    for delim in candidates.into_iter().chain([Delim::Blank]) {
        delim.split_into(sample[0], &mut fields);
        let n = fields.len();
        if n < 2 {
            continue;
        }
        let agree = sample
            .iter()
            .filter(|l| {
                delim.split_into(l, &mut fields);
                fields.len() == n
            })
            .count();
        if best.as_ref().is_none_or(|(b, _)| agree > *b) {
            best = Some((agree, delim));
        }
    }
    best.map(|(_, d)| d)
}

/// A header when a field has a known column name, or when the rating/timestamp columns of the first line
/// are not numbers while those of the second line are.
fn looks_like_header(names: &[String], first: &[&str], second: Option<&[&str]>) -> bool {
    let known = |n: &String| [USER_NAMES, ITEM_NAMES, RATING_NAMES, TIME_NAMES].iter().any(|k| k.contains(&n.as_str()));
    let numeric_tail = |f: &[&str]| f.iter().skip(2).take(2).all(|x| is_number(x));
    names.iter().any(known) || (!numeric_tail(first) && second.is_none_or(numeric_tail))
}

fn columns_by_name(names: &[String], dialect: Dialect) -> Result<Columns, String> {
    let (user_names, item_names, rating_names, time_names) = match dialect {
        Dialect::RecBole => (&["user_id"][..], &["item_id"][..], &["rating"][..], &["timestamp"][..]),
        Dialect::Delimited => (USER_NAMES, ITEM_NAMES, RATING_NAMES, TIME_NAMES),
    };
    let find = |wanted: &[&str]| names.iter().position(|n| wanted.contains(&n.as_str()));
    let (rating, time) = (find(rating_names), find(time_names));
    let (mut user, mut item) = (find(user_names), find(item_names));
    if dialect == Dialect::RecBole {
        if user.is_none() || item.is_none() {
            let missing = if user.is_none() { "user_id" } else { "item_id" };
            return Err(format!("the RecBole header has no {missing} field"));
        }
    } else {
        // Unnamed user/item columns are the first columns not otherwise claimed.
        let claimed = [user, item, rating, time];
        let mut free = (0..names.len()).filter(move |c| !claimed.contains(&Some(*c)));
        if user.is_none() {
            user = free.next();
        }
        if item.is_none() {
            item = free.next();
        }
    }
    match (user, item) {
        (Some(user), Some(item)) => Ok(Columns { n: names.len(), user, item, rating, time }),
        _ => Err(format!("expected user and item columns in the header, found {} fields", names.len())),
    }
}

/// Parses one data line; `Ok(None)` when `min_rating` filters it out.
fn parse_row<'a>(
    line: &'a str,
    delim: &Delim,
    cols: &Columns,
    min_rating: Option<f64>,
    fields: &mut Vec<&'a str>,
) -> Result<Option<Row<'a>>, String> {
    delim.split_into(line, fields);
    if fields.len() != cols.n {
        let mut msg = format!("expected {} columns, found {}", cols.n, fields.len());
        // Ragged rows of integers: a LightGCN `user item item …` file read as a table.
        if fields.len() > 2 && fields.iter().all(|f| f.parse::<u64>().is_ok()) {
            msg.push_str(
                "; this looks like a LightGCN file (`user item item …` per line): give its directory, or add \
                 --format lightgcn",
            );
        }
        return Err(msg);
    }
    let (user, item) = (fields[cols.user], fields[cols.item]);
    if user.is_empty() || item.is_empty() {
        return Err(format!("empty {} id", if user.is_empty() { "user" } else { "item" }));
    }
    let number = |col: usize, what: &str| {
        let f = fields[col];
        f.parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .ok_or_else(|| format!("expected a number in the {what} column, found {}", quote(f)))
    };
    if let Some(c) = cols.rating {
        let rating = number(c, "rating")?;
        if min_rating.is_some_and(|m| rating < m) {
            return Ok(None);
        }
    }
    let time = cols.time.map(|c| number(c, "timestamp")).transpose()?;
    Ok(Some(Row { user, item, time }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::format::Format;
    use crate::data::{Dataset, load};

    fn file_with(name: &str, text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(name);
        std::fs::write(&path, text).unwrap();
        (tmp, path)
    }

    fn load_text(name: &str, text: &str, opts: &LoadOptions) -> Result<Dataset> {
        let (_tmp, path) = file_with(name, text);
        load(&path, opts)
    }

    fn all_pairs(ds: &Dataset) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = [Some(&ds.train), ds.valid.as_ref(), Some(&ds.test)]
            .into_iter()
            .flatten()
            .flat_map(|s| s.iter())
            .map(|(u, i)| (ds.users.external(u).to_owned(), ds.items.external(i).to_owned()))
            .collect();
        v.sort();
        v
    }

    fn strs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut v: Vec<_> = pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        v.sort();
        v
    }

    #[test]
    fn detects_each_delimiter() {
        let rows = [("1", "10"), ("1", "20"), ("2", "10"), ("3", "30")];
        for sep in ["::", "\t", ",", ";", " ", "  \t "] {
            let text: String = rows.iter().map(|(u, i)| format!("{u}{sep}{i}{sep}4{sep}100\n")).collect();
            let ds = load_text("r.dat", &text, &LoadOptions::default()).unwrap();
            assert_eq!(all_pairs(&ds), strs(&rows), "{sep:?}");
        }
    }

    #[test]
    fn header_maps_columns_by_name_in_any_order() {
        let text = "timestamp,rating,item_id,user_id\n5,4,a,x\n6,1,b,x\n7,5,b,y\n";
        let ds = load_text("h.csv", text, &LoadOptions::default()).unwrap();
        assert_eq!(all_pairs(&ds), strs(&[("x", "a"), ("x", "b"), ("y", "b")]));
        assert!(matches!(ds.split, crate::data::SplitOrigin::Temporal { .. }));
        let opts = LoadOptions { min_rating: Some(4.0), ..Default::default() };
        let ds = load_text("h.csv", text, &opts).unwrap();
        assert_eq!(all_pairs(&ds), strs(&[("x", "a"), ("y", "b")]));
    }

    #[test]
    fn header_is_detected_from_non_numeric_rating_columns() {
        let text = "u,i,r,t\n1,2,3,4\n1,3,3,5\n";
        let ds = load_text("h.csv", text, &LoadOptions::default()).unwrap();
        assert_eq!(all_pairs(&ds), strs(&[("1", "2"), ("1", "3")]));
        // Without the hint the same first line is data: its rating is not a number.
        let opts = LoadOptions { header: Some(false), ..Default::default() };
        let e = load_text("h.csv", text, &opts).unwrap_err().to_string();
        assert!(e.contains("h.csv:1:") && e.contains("rating"), "{e}");
        // Two string columns without names are data, not a header.
        let ds = load_text("s.csv", "alice,book\nbob,film\n", &LoadOptions::default()).unwrap();
        assert_eq!(ds.users.ids(), ["alice", "bob"]);
    }

    #[test]
    fn internal_ids_are_numeric_or_lexicographic_order() {
        let ds = load_text("n.csv", "10,b\n9,a\n100,c\n007,a\n7,c\n", &LoadOptions::default()).unwrap();
        assert_eq!(ds.users.ids(), ["007", "7", "9", "10", "100"]);
        assert_eq!(ds.items.ids(), ["a", "b", "c"]);
        let ds = load_text("m.csv", "10,x\n9,x\nz,y\n", &LoadOptions::default()).unwrap();
        assert_eq!(ds.users.ids(), ["10", "9", "z"]);
    }

    #[test]
    fn explicit_delimiter_names_and_quotes() {
        let opts = LoadOptions { delimiter: Some("\\t".into()), ..Default::default() };
        let ds = load_text("q.txt", "\"a b\"\t 1\n\"c\"\t2 \n", &opts).unwrap();
        assert_eq!(all_pairs(&ds), strs(&[("a b", "1"), ("c", "2")]));
        let opts = LoadOptions { delimiter: Some("|".into()), ..Default::default() };
        let ds = load_text("p.txt", "a|1\nb|2\n", &opts).unwrap();
        assert_eq!(all_pairs(&ds), strs(&[("a", "1"), ("b", "2")]));
    }

    #[test]
    fn bad_rows_name_the_file_and_line() {
        let cases: &[(&str, &str, usize, &str)] = &[
            ("c.csv", "1,2,3\n1,3,4\n\n1,4\n", 4, "expected 3 columns, found 2"),
            ("c.csv", "user,item\n1,2\n1,2,3\n", 3, "expected 2 columns, found 3"),
            ("c.csv", "1,2,5,10\n1,3,x,11\n", 2, "rating column, found \"x\""),
            ("c.csv", "1,2,5,10\n1,3,4,1e999\n", 2, "timestamp column"),
            ("c.csv", "1,2,5,10\n2,3,4,nan\n", 2, "timestamp column"),
            ("c.csv", "1,2\n,3\n", 2, "empty user id"),
            ("c.csv", "\n\nsingle\n", 3, "at least two columns"),
            ("c.csv", "user\n1\n", 1, "at least two columns"),
        ];
        for &(name, text, line, what) in cases {
            let e = load_text(name, text, &LoadOptions::default()).unwrap_err().to_string();
            assert!(e.contains(&format!("{name}:{line}:")) && e.contains(what), "{text:?}: {e}");
        }
        let opts = LoadOptions { min_rating: Some(3.0), ..Default::default() };
        let e = load_text("c.csv", "\n1,2\n", &opts).unwrap_err().to_string();
        assert!(e.contains("c.csv:2:") && e.contains("no rating column"), "{e}");
        let e = load_text("c.csv", "1,2,1\n1,3,2\n", &opts).unwrap_err().to_string();
        assert!(e.contains("c.csv: no interactions") && !e.contains(":0"), "{e}");
    }

    #[test]
    fn errors_deep_in_a_large_file_report_the_right_line() {
        let mut text: String = (0..50_000).map(|k| format!("{},{}\n", k % 97, k % 89)).collect();
        text.push_str("1,2,3\n");
        let e = load_text("big.csv", &text, &LoadOptions::default()).unwrap_err().to_string();
        assert!(e.contains("big.csv:50001:"), "{e}");
    }

    #[test]
    fn recbole_files_need_a_typed_header_and_find_fields_by_name() {
        let text = "item_id:token\ttimestamp:float\tuser_id:token\trating:float\ni1\t3\tu1\t5\ni2\t4\tu1\t2\n";
        let ds = load_text("x.inter", text, &LoadOptions::default()).unwrap();
        assert_eq!(all_pairs(&ds), strs(&[("u1", "i1"), ("u1", "i2")]));
        let opts = LoadOptions { min_rating: Some(3.0), ..Default::default() };
        let ds = load_text("x.inter", text, &opts).unwrap();
        assert_eq!(all_pairs(&ds), strs(&[("u1", "i1")]), "only the rating-5 row survives");
        assert_eq!(ds.items.ids(), ["i1"], "filtered rows contribute no ids");

        let e = load_text("y.inter", "1\t2\n", &LoadOptions::default()).unwrap_err().to_string();
        assert!(e.contains("y.inter:1:") && e.contains("typed"), "{e}");
        let e =
            load_text("y.inter", "user_id:token\tfoo:token\n1\t2\n", &LoadOptions::default()).unwrap_err().to_string();
        assert!(e.contains("y.inter:1:") && e.contains("item_id"), "{e}");
        let e = load_text("y.inter", "user_id:token\titem_id:token\n1\t2\n1\t2\t3\n", &LoadOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("y.inter:3:") && e.contains("columns"), "{e}");
        // An explicit format reads a file whatever its extension.
        let opts = LoadOptions { format: Some(Format::RecBole), ..Default::default() };
        let ds = load_text("z.txt", "user_id:token\titem_id:token\na\tb\na\tc\n", &opts).unwrap();
        assert_eq!(all_pairs(&ds), strs(&[("a", "b"), ("a", "c")]));
    }
}
