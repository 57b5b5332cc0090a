//! Deletion requests in external ids: one [`Request`] type for the CLI (a file of `user,item` pairs, whole
//! users and whole items), the service (one [`Part`] per `POST /v1/forget`) and anything else that takes
//! requests from people, resolved against a checkpoint's id maps and interactions.
//!
//! A request's id ([`Request::id`]) is the first 16 hex digits of the SHA-256 of its canonical JSON
//! ([`Request::to_json`]): what was asked, not what it resolved to, so that a retried request gets the
//! same id however the model changed in between. The service keys its ledger by it and every receipt
//! records it as `request_id`; the resolved pairs are hashed separately (the receipt's `request_sha256`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpoint;
use crate::data::{IdMap, Interactions};
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::io::sha256_hex;

/// One part of a request, in external ids; the service takes one per `POST /v1/forget`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Part {
    /// These interactions of one user.
    Pairs {
        /// The user.
        user: String,
        /// The items (canonical: sorted, distinct).
        items: Vec<String>,
    },
    /// Every interaction of a user.
    User {
        /// The user.
        user: String,
    },
    /// Every interaction of an item.
    Item {
        /// The item.
        item: String,
    },
}

impl Part {
    /// The canonical form: items sorted and de-duplicated.
    pub fn canonical(self) -> Self {
        match self {
            Part::Pairs { user, mut items } => {
                items.sort_unstable();
                items.dedup();
                Part::Pairs { user, items }
            }
            other => other,
        }
    }

    /// Its JSON text, e.g. `{"kind":"pairs","user":"7","items":["1","3"]}`.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a request part always serialises")
    }

    /// The id of the request made of this part alone ([`Request::id`]).
    pub fn id(&self) -> String {
        Request::from(self.clone()).id()
    }
}

/// What to forget, in external ids: pairs, plus every interaction of `users` and of `items`.
///
/// The fields keep what was asked as it was asked (order and repeats, which [`Request::resolve`] counts);
/// [`Request::canonical`] sorts and de-duplicates them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Request {
    /// (user, item) pairs.
    pub pairs: Vec<(String, String)>,
    /// Users all of whose interactions go.
    pub users: Vec<String>,
    /// Items all of whose interactions go.
    pub items: Vec<String>,
}

impl From<Part> for Request {
    fn from(p: Part) -> Self {
        match p {
            Part::Pairs { user, items } => {
                Request { pairs: items.into_iter().map(|i| (user.clone(), i)).collect(), ..Request::default() }
            }
            Part::User { user } => Request { users: vec![user], ..Request::default() },
            Part::Item { item } => Request { items: vec![item], ..Request::default() },
        }
    }
}

impl Request {
    /// Whether it names nothing.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty() && self.users.is_empty() && self.items.is_empty()
    }

    /// Reads the request of `spec`: its file's pairs (checked against the id maps, errors naming the file
    /// and line), users and items.
    ///
    /// # Errors
    /// As [`read_pairs`].
    pub fn read(spec: &RequestSpec, users: &IdMap, items: &IdMap) -> Result<Self> {
        let pairs = match &spec.file {
            Some(p) => read_pairs(p, users, items)?
                .into_iter()
                .map(|(u, i)| (users.external(u).to_string(), items.external(i).to_string()))
                .collect(),
            None => Vec::new(),
        };
        Ok(Request { pairs, users: spec.users.clone(), items: spec.items.clone() })
    }

    /// The canonical form: every list sorted and de-duplicated.
    pub fn canonical(&self) -> Self {
        fn sorted<T: Ord + Clone>(v: &[T]) -> Vec<T> {
            let mut v = v.to_vec();
            v.sort_unstable();
            v.dedup();
            v
        }
        Request { pairs: sorted(&self.pairs), users: sorted(&self.users), items: sorted(&self.items) }
    }

    /// The canonical parts: one [`Part::Pairs`] per user of the pairs, then one [`Part::User`] per user,
    /// then one [`Part::Item`] per item, each group sorted.
    pub fn parts(&self) -> Vec<Part> {
        let c = self.canonical();
        let mut by_user: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (u, i) in c.pairs {
            by_user.entry(u).or_default().push(i);
        }
        let pairs = by_user.into_iter().map(|(user, items)| Part::Pairs { user, items }.canonical());
        let users = c.users.into_iter().map(|user| Part::User { user });
        pairs.chain(users).chain(c.items.into_iter().map(|item| Part::Item { item })).collect()
    }

    /// The canonical JSON text: a request of one part is that part's JSON ([`Part::to_json`]: the body the
    /// service's ledger stores), any other the JSON array of its [`Request::parts`].
    pub fn to_json(&self) -> String {
        match self.parts().as_slice() {
            [one] => one.to_json(),
            parts => serde_json::to_string(parts).expect("request parts always serialise"),
        }
    }

    /// The request id: the first 16 hex digits of the SHA-256 of [`Request::to_json`]. The same request
    /// gets the same id whatever its order and repeats, from the CLI or the service.
    pub fn id(&self) -> String {
        sha256_hex(self.to_json().as_bytes())[..16].to_string()
    }

    /// Resolves the request against `ckpt`: its pairs, plus every interaction (training or validation
    /// edge) of its users and items, de-duplicated, in internal ids.
    ///
    /// # Errors
    /// As [`Request::resolve_in`], over the checkpoint's id maps and training and validation edges.
    pub fn resolve(&self, ckpt: &Checkpoint, skip_missing: bool) -> Result<(Interactions, ResolveReport)> {
        let graph = Graph::from_interactions(ckpt.model().n_users(), ckpt.model().n_items(), &ckpt.seen());
        self.resolve_in(ckpt.users(), ckpt.items(), &graph, skip_missing)
    }

    /// Resolves the request against id maps and a graph of interactions: pairs, plus every interaction of
    /// the listed users and items, de-duplicated.
    ///
    /// # Errors
    /// Unknown ids; an empty request; pairs that are not interactions of `graph` (listing the first five)
    /// unless `skip_missing`, which drops and counts them instead.
    pub fn resolve_in(
        &self,
        users: &IdMap,
        items: &IdMap,
        graph: &Graph,
        skip_missing: bool,
    ) -> Result<(Interactions, ResolveReport)> {
        let (mut pairs, from_pairs) = self.named(users, items, graph)?;
        let mut report = ResolveReport::default();
        let missing: Vec<(u32, u32)> =
            pairs[..from_pairs].iter().copied().filter(|&(u, i)| !graph.contains(u, i)).collect();
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
            return Err(Error::InvalidRequest(if self.users.is_empty() && self.items.is_empty() {
                "the request file lists no training interactions".into()
            } else {
                "the request is empty (the listed users or items have no training interactions)".into()
            }));
        }
        Ok((req, report))
    }

    /// The interactions of `graph` the request still names, in internal ids and in the order asked (pairs
    /// first, then each user's items, then each item's users), without de-duplication; pairs that are not
    /// in `graph` are left out and an empty result is no error. What the service removes when it applies a
    /// request that an earlier one may have overlapped.
    ///
    /// # Errors
    /// [`Error::UnknownId`] for an id the maps do not know.
    pub fn present_in(&self, users: &IdMap, items: &IdMap, graph: &Graph) -> Result<Vec<(u32, u32)>> {
        let (mut pairs, _) = self.named(users, items, graph)?;
        pairs.retain(|&(u, i)| graph.contains(u, i));
        Ok(pairs)
    }

    /// The listed pairs (internal ids), then every interaction in `graph` of the listed users and items;
    /// and how many of them are listed pairs.
    fn named(&self, users: &IdMap, items: &IdMap, graph: &Graph) -> Result<(Vec<(u32, u32)>, usize)> {
        let user = |u: &String| users.get(u).ok_or_else(|| Error::UnknownId { kind: "user", id: u.clone() });
        let item = |i: &String| items.get(i).ok_or_else(|| Error::UnknownId { kind: "item", id: i.clone() });
        let mut pairs = self.pairs.iter().map(|(u, i)| Ok((user(u)?, item(i)?))).collect::<Result<Vec<_>>>()?;
        let from_pairs = pairs.len();
        for u in &self.users {
            let id = user(u)?;
            pairs.extend(graph.user_items().row(id as usize).iter().map(|&i| (id, i)));
        }
        for i in &self.items {
            let id = item(i)?;
            pairs.extend(graph.item_users().row(id as usize).iter().map(|&u| (u, id)));
        }
        Ok((pairs, from_pairs))
    }
}

/// What to forget as the CLI takes it, in external ids.
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
/// interaction of the listed users and items, de-duplicated ([`Request::read`], then
/// [`Request::resolve_in`]).
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
    Request::read(spec, users, items)?.resolve_in(users, items, graph, skip_missing)
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
    fn ids_are_of_the_canonical_request_and_one_part_ids_are_the_services() {
        let pairs = |u: &str, items: &[&str]| Part::Pairs {
            user: u.into(),
            items: items.iter().map(|s| s.to_string()).collect(),
        };
        // The service's ledger id of a part: the hash of its canonical JSON (unchanged since the ledger's
        // first version, so that stored ids and retries keep matching).
        let p = pairs("7", &["3", "1", "3"]);
        assert_eq!(p.clone().canonical().to_json(), r#"{"kind":"pairs","user":"7","items":["1","3"]}"#);
        assert_eq!(p.id(), sha256_hex(br#"{"kind":"pairs","user":"7","items":["1","3"]}"#)[..16]);
        assert_eq!(p.id(), pairs("7", &["1", "3"]).id());
        // The same request from the CLI (pairs in any order, repeated) has the same id.
        let cli = Request {
            pairs: vec![("7".into(), "3".into()), ("7".into(), "1".into()), ("7".into(), "3".into())],
            ..Request::default()
        };
        assert_eq!(cli.id(), p.id());
        let user = Request { users: vec!["7".into()], ..Request::default() };
        assert_eq!(user.id(), Part::User { user: "7".into() }.id());
        assert_eq!(user.to_json(), r#"{"kind":"user","user":"7"}"#);
        assert_ne!(Part::User { user: "1".into() }.id(), Part::Item { item: "1".into() }.id());
        // Several parts: the array of the canonical parts, whatever the order asked.
        let a = Request {
            pairs: vec![("b".into(), "x".into()), ("a".into(), "y".into())],
            users: vec!["c".into()],
            items: vec!["z".into(), "z".into()],
        };
        let b = Request {
            pairs: vec![("a".into(), "y".into()), ("b".into(), "x".into())],
            users: vec!["c".into()],
            items: vec!["z".into()],
        };
        assert_eq!(a.id(), b.id());
        assert_eq!(a.parts().len(), 4);
        assert!(a.to_json().starts_with(r#"[{"kind":"pairs","user":"a""#), "{}", a.to_json());
        assert_ne!(a.id(), Request { items: vec![], ..b }.id());
    }

    #[test]
    fn present_in_keeps_what_is_still_there_in_the_order_asked() {
        let (u, i, g) = setup();
        let r = Request::from(Part::Pairs { user: "alice".into(), items: vec!["z".into(), "y".into(), "x".into()] });
        assert_eq!(r.present_in(&u, &i, &g).unwrap(), vec![(0, 1), (0, 0)]);
        let r = Request { users: vec!["carol".into()], items: vec!["y".into()], ..Request::default() };
        assert_eq!(r.present_in(&u, &i, &g).unwrap(), vec![(2, 0), (2, 2), (0, 1), (1, 1)]);
        let r = Request { users: vec!["zed".into()], ..Request::default() };
        assert!(matches!(r.present_in(&u, &i, &g), Err(Error::UnknownId { kind: "user", .. })));
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
