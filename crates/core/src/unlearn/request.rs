//! Deletion requests in external ids: a file of `user,item` pairs (CSV, TSV or whitespace), whole users
//! and whole items, resolved against a model's id maps and training graph.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::{IdMap, Interactions};
use crate::error::{Error, Result};
use crate::graph::Graph;

/// What to forget, in external ids.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestSpec {
    /// A file of (user, item) pairs, one per line; a header line `user,item` is allowed.
    pub file: Option<PathBuf>,
    /// Users all of whose interactions go.
    pub users: Vec<String>,
    /// Items all of whose interactions go.
    pub items: Vec<String>,
}

/// How a request was resolved.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolveReport {
    /// Pairs listed more than once (merged).
    pub duplicates: usize,
    /// Pairs that are not training interactions (only counted with `skip_missing`).
    pub missing: usize,
}

fn split_fields(line: &str) -> Vec<&str> {
    if line.contains(',') {
        line.split(',').map(str::trim).collect()
    } else if line.contains(';') {
        line.split(';').map(str::trim).collect()
    } else if line.contains('\t') {
        line.split('\t').map(str::trim).collect()
    } else {
        line.split_whitespace().collect()
    }
}

/// Reads the pairs of a request file as internal ids.
///
/// # Errors
/// A line without exactly two fields, or an id unknown to the maps, names the file and line.
pub fn read_pairs(path: &Path, users: &IdMap, items: &IdMap) -> Result<Vec<(u32, u32)>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let text = std::str::from_utf8(&bytes).map_err(|e| Error::format(path, 0, format!("not UTF-8 text: {e}")))?;
    let mut out = Vec::new();
    let mut first = true;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f = split_fields(line);
        if f.len() != 2 {
            return Err(Error::format(path, n + 1, format!("expected 2 fields `user,item`, found {}", f.len())));
        }
        let is_header = first && users.get(f[0]).is_none() && f[0].to_ascii_lowercase().starts_with("user");
        first = false;
        if is_header {
            continue;
        }
        let u = users.get(f[0]).ok_or_else(|| Error::format(path, n + 1, format!("unknown user id {:?}", f[0])))?;
        let i = items.get(f[1]).ok_or_else(|| Error::format(path, n + 1, format!("unknown item id {:?}", f[1])))?;
        out.push((u, i));
    }
    Ok(out)
}

/// Resolves a request against a model's id maps and its training graph: file pairs, plus every training
/// interaction of the listed users and items, de-duplicated.
///
/// # Errors
/// Unknown ids; an empty request; pairs that are not training interactions (listing the first five) unless
/// `skip_missing`, which drops and counts them instead.
pub fn resolve(
    spec: &RequestSpec,
    users: &IdMap,
    items: &IdMap,
    graph: &Graph,
    skip_missing: bool,
) -> Result<(Interactions, ResolveReport)> {
    let mut pairs = match &spec.file {
        Some(p) => read_pairs(p, users, items)?,
        None => Vec::new(),
    };
    let from_file = pairs.len();
    for u in &spec.users {
        let id = users.get(u).ok_or_else(|| Error::UnknownId { kind: "user", id: u.clone() })?;
        pairs.extend(graph.user_items().row(id as usize).iter().map(|&i| (id, i)));
    }
    for i in &spec.items {
        let id = items.get(i).ok_or_else(|| Error::UnknownId { kind: "item", id: i.clone() })?;
        pairs.extend(graph.item_users().row(id as usize).iter().map(|&u| (u, id)));
    }
    let mut report = ResolveReport::default();
    let missing: Vec<(u32, u32)> = pairs[..from_file].iter().copied().filter(|&(u, i)| !graph.contains(u, i)).collect();
    if !missing.is_empty() {
        if !skip_missing {
            let mut m = missing.clone();
            m.sort_unstable();
            m.dedup();
            let show: Vec<String> =
                m.iter().take(5).map(|&(u, i)| format!("({}, {})", users.external(u), items.external(i))).collect();
            return Err(Error::InvalidRequest(format!(
                "{} pair(s) are not training interactions, e.g. {} (use --skip-missing to ignore them)",
                m.len(),
                show.join(", ")
            )));
        }
        pairs.retain(|&(u, i)| graph.contains(u, i));
    }
    let (req, dups) = Interactions::from_pairs(pairs);
    report.duplicates = dups;
    report.missing = {
        let mut m = missing;
        m.sort_unstable();
        m.dedup();
        m.len()
    };
    if req.is_empty() {
        return Err(Error::InvalidRequest(if spec.users.is_empty() && spec.items.is_empty() && spec.file.is_some() {
            "the request file lists no training interactions".into()
        } else {
            "the request is empty (the listed users or items have no training interactions)".into()
        }));
    }
    Ok((req, report))
}

/// Writes a request as `user,item` lines in external ids (sorted), with a header.
pub fn format_pairs(req: &Interactions, users: &IdMap, items: &IdMap) -> String {
    let mut s = String::from("user,item\n");
    for (u, i) in req.iter() {
        s.push_str(users.external(u));
        s.push(',');
        s.push_str(items.external(i));
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (IdMap, IdMap, Graph) {
        let users = IdMap::from_ids(vec!["alice".into(), "bob".into(), "carol".into()]).unwrap();
        let items = IdMap::from_ids(vec!["x".into(), "y".into(), "z".into()]).unwrap();
        let (e, _) = Interactions::from_pairs(vec![(0, 0), (0, 1), (1, 1), (2, 2), (2, 0)]);
        (users, items, Graph::from_interactions(3, 3, &e))
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn resolves_pairs_users_and_items_with_dedup() {
        let (u, i, g) = setup();
        let f = file("user,item\nalice,y\nalice\ty\n");
        let spec = RequestSpec { file: Some(f.path().into()), users: vec!["carol".into()], items: vec!["y".into()] };
        let (req, rep) = resolve(&spec, &u, &i, &g, false).unwrap();
        let got: Vec<_> = req.iter().collect();
        assert_eq!(got, vec![(0, 1), (1, 1), (2, 0), (2, 2)]);
        assert_eq!(rep.duplicates, 2);
    }

    #[test]
    fn request_files_may_use_semicolons_tabs_or_spaces() {
        let (u, i, _) = setup();
        for text in ["user;item\nalice;y\nbob ; y\n", "user\titem\nalice\ty\nbob\ty\n", "alice y\nbob   y\n"] {
            let f = file(text);
            assert_eq!(read_pairs(f.path(), &u, &i).unwrap(), vec![(0, 1), (1, 1)], "{text:?}");
        }
    }

    #[test]
    fn unknown_ids_name_the_line() {
        let (u, i, g) = setup();
        let f = file("alice,x\nmallory,x\n");
        let err =
            resolve(&RequestSpec { file: Some(f.path().into()), ..Default::default() }, &u, &i, &g, false).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(":2:") && msg.contains("mallory"), "{msg}");
        let err =
            resolve(&RequestSpec { users: vec!["zed".into()], ..Default::default() }, &u, &i, &g, false).unwrap_err();
        assert!(err.to_string().contains("zed"));
    }

    #[test]
    fn missing_pairs_are_errors_unless_skipped() {
        let (u, i, g) = setup();
        let f = file("alice,z\nalice,x\n");
        let spec = RequestSpec { file: Some(f.path().into()), ..Default::default() };
        let err = resolve(&spec, &u, &i, &g, false).unwrap_err().to_string();
        assert!(err.contains("(alice, z)"), "{err}");
        let (req, rep) = resolve(&spec, &u, &i, &g, true).unwrap();
        assert_eq!(req.iter().collect::<Vec<_>>(), vec![(0, 0)]);
        assert_eq!(rep.missing, 1);
    }

    #[test]
    fn empty_requests_are_errors() {
        let (u, i, g) = setup();
        let f = file("user,item\n");
        assert!(
            resolve(&RequestSpec { file: Some(f.path().into()), ..Default::default() }, &u, &i, &g, false).is_err()
        );
        assert!(resolve(&RequestSpec::default(), &u, &i, &g, false).is_err());
    }

    #[test]
    fn format_round_trips() {
        let (u, i, g) = setup();
        let (req, _) = Interactions::from_pairs(vec![(0, 1), (2, 2)]);
        let f = file(&format_pairs(&req, &u, &i));
        let (back, _) =
            resolve(&RequestSpec { file: Some(f.path().into()), ..Default::default() }, &u, &i, &g, false).unwrap();
        assert_eq!(back, req);
    }
}
