//! Fuzzes request files: the input is a `user,item` file (CSV, TSV, `;` or blank separated, as
//! `unlearn --request` and `audit --request` read it) and the JSON form of a request (one part or an array
//! of parts, [`Request::to_json`]), resolved against small id maps and a graph.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use unlearnrec_core::data::{IdMap, Interactions};
use unlearnrec_core::graph::Graph;
use unlearnrec_core::unlearn::request::{Part, Request, RequestSpec, read_pairs, resolve};

struct Maps {
    users: IdMap,
    items: IdMap,
    graph: Graph,
}

fn maps() -> &'static Maps {
    static M: OnceLock<Maps> = OnceLock::new();
    M.get_or_init(|| {
        let ids = |v: &[&str]| IdMap::from_ids(v.iter().map(|s| s.to_string()).collect()).expect("distinct ids");
        let users = ids(&["alice", "bob", "carol", "7", "user2"]);
        let items = ids(&["x", "y", "z", "1", "3"]);
        let (e, _) = Interactions::from_pairs(vec![(0, 0), (0, 1), (1, 1), (2, 2), (2, 0), (3, 3), (3, 4)]);
        let graph = Graph::from_interactions(5, 5, &e);
        Maps { users, items, graph }
    })
}

/// What the CLI and the service do with a request once read.
fn exercise(m: &Maps, req: &Request) {
    let _ = req.canonical();
    let _ = req.parts();
    let _ = req.to_json();
    let _ = req.id();
    let _ = req.present_in(&m.users, &m.items, &m.graph);
    for skip in [false, true] {
        let _ = req.resolve_in(&m.users, &m.items, &m.graph, skip);
    }
}

fuzz_target!(|data: &[u8]| {
    let m = maps();
    // The file form.
    if let Ok(dir) = tempfile::tempdir() {
        let path = dir.path().join("request.csv");
        if std::fs::write(&path, data).is_ok() {
            let _ = read_pairs(&path, &m.users, &m.items);
            let spec = RequestSpec { file: Some(path.clone()), users: vec!["carol".into()], items: vec!["3".into()] };
            for skip in [false, true] {
                let _ = resolve(&spec, &m.users, &m.items, &m.graph, skip);
            }
            if let Ok(req) =
                Request::read(&RequestSpec { file: Some(path), ..RequestSpec::default() }, &m.users, &m.items)
            {
                exercise(m, &req);
            }
        }
    }
    // The JSON form: one part, or an array of parts.
    if let Ok(part) = serde_json::from_slice::<Part>(data) {
        let _ = part.to_json();
        let _ = part.id();
        exercise(m, &Request::from(part.canonical()));
    }
    if let Ok(parts) = serde_json::from_slice::<Vec<Part>>(data) {
        let mut req = Request::default();
        for p in parts {
            let r = Request::from(p);
            req.pairs.extend(r.pairs);
            req.users.extend(r.users);
            req.items.extend(r.items);
        }
        exercise(m, &req);
    }
});
