//! Test helpers: the golden vectors of the reference implementation and a Gowalla reader for timing tests.

use std::path::PathBuf;

use serde_json::Value;

use crate::data::Interactions;

/// Whether a missing golden file is an error rather than a skip: `UNLEARNREC_GOLDEN` or `CI` is set.
pub(crate) fn golden_required() -> bool {
    std::env::var_os("UNLEARNREC_GOLDEN").is_some() || std::env::var_os("CI").is_some()
}

/// Where the golden file lies: `$UNLEARNREC_GOLDEN`, else the workspace's `shared/golden` copy.
pub(crate) fn golden_path() -> PathBuf {
    std::env::var_os("UNLEARNREC_GOLDEN").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/golden/unlearnrec_tiny.json"))
    })
}

/// The parsed `unlearnrec_tiny.json`.
pub(crate) struct Golden(Value);

impl Golden {
    /// Loads the golden file, or prints why it is skipped and returns `None` when it is absent (a panic
    /// when [`golden_required`]).
    pub(crate) fn load() -> Option<Golden> {
        let path = golden_path();
        match std::fs::read_to_string(&path) {
            Ok(text) => Some(Golden(serde_json::from_str(&text).expect("golden file is not valid JSON"))),
            Err(e) if golden_required() => {
                panic!("golden file {}: {e} (required: UNLEARNREC_GOLDEN or CI is set)", path.display())
            }
            Err(e) => {
                eprintln!("skipping golden test: cannot read {}: {e}", path.display());
                None
            }
        }
    }

    /// The value at a key path, if present.
    pub(crate) fn get(&self, keys: &[&str]) -> Option<&Value> {
        keys.iter().try_fold(&self.0, |v, k| v.get(k))
    }

    fn at(&self, keys: &[&str]) -> &Value {
        self.get(keys).unwrap_or_else(|| panic!("golden key {keys:?} missing"))
    }

    /// (`n_users`, `n_items`).
    pub(crate) fn sizes(&self) -> (usize, usize) {
        let n = |k| self.at(&["inputs", k]).as_u64().expect("size") as usize;
        (n("n_users"), n("n_items"))
    }

    /// An edge list `inputs.<key>` of `[user, item]` pairs.
    pub(crate) fn edges(&self, key: &str) -> Interactions {
        let pairs = self.at(&["inputs", key]).as_array().expect("edge list");
        let pairs = pairs
            .iter()
            .map(|p| {
                let p = p.as_array().expect("pair");
                (p[0].as_u64().expect("user") as u32, p[1].as_u64().expect("item") as u32)
            })
            .collect();
        Interactions::from_pairs(pairs).0
    }

    /// A tensor `{"shape", "data"}` at `keys`, flattened row-major.
    pub(crate) fn tensor(&self, keys: &[&str]) -> (Vec<usize>, Vec<f64>) {
        tensor_of(self.at(keys))
    }

    /// The `index`-th tensor of the list at `keys`.
    pub(crate) fn tensor_in_list(&self, keys: &[&str], index: usize) -> (Vec<usize>, Vec<f64>) {
        tensor_of(&self.at(keys).as_array().expect("tensor list")[index])
    }
}

fn tensor_of(v: &Value) -> (Vec<usize>, Vec<f64>) {
    let shape: Vec<usize> =
        v["shape"].as_array().expect("shape").iter().map(|d| d.as_u64().expect("dim") as usize).collect();
    let mut data = Vec::with_capacity(shape.iter().product());
    fn flatten(v: &Value, out: &mut Vec<f64>) {
        match v {
            Value::Array(xs) => xs.iter().for_each(|x| flatten(x, out)),
            x => out.push(x.as_f64().expect("number")),
        }
    }
    flatten(&v["data"], &mut data);
    assert_eq!(data.len(), shape.iter().product::<usize>(), "tensor data does not match its shape");
    (shape, data)
}

/// The Gowalla training edges with the user and item counts, read by the data module from
/// `$UNLEARNREC_DATA/gowalla` (default: the workspace's `shared/data/gowalla`); `None` (with a printed
/// reason) when absent.
pub(crate) fn gowalla_train() -> Option<(usize, usize, Interactions)> {
    let root = std::env::var_os("UNLEARNREC_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data")));
    let dir = root.join("gowalla");
    match crate::data::load(&dir, &crate::data::LoadOptions::default()) {
        Ok(ds) => Some((ds.n_users(), ds.n_items(), ds.train)),
        Err(e) => {
            eprintln!("skipping: cannot read {}: {e}", dir.display());
            None
        }
    }
}
