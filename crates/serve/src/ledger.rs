//! The ledger: a SQLite database (WAL, `synchronous=FULL`) that is the single source of truth of the
//! service.
//!
//! Two tables:
//! - `requests`: one row per distinct forget request, keyed by [`Forget::id`] (a content hash, so a repeated
//!   request finds its row again), with its status (`queued` → `applied` | `failed`), the edges it removed and
//!   its receipt once applied.
//! - `versions`: one row per model version. Version 0 is the checkpoint the service was first started with;
//!   each applied batch adds one, recording the checkpoint's path and SHA-256 and the remaining-data
//!   directory. The current version is the largest. A version with `retrain = 1` is a consolidation
//!   ([`Ledger::commit_retrain`]): an exact retrain of an earlier version, plus the edges removed since then
//!   applied on top; same removed edges as the version before it, no request. A consolidation records the
//!   unlearner pre-trained for its retrained backbone (`unlearner`, `unlearner_sha256`); the unlearner of a
//!   version is that of the latest version at or before it that records one ([`Ledger::unlearner_of`]), the
//!   service's `--unlearner` when none does.
//!
//! Garbage collection keeps the files of the current and the previous version and the unlearner in use;
//! before it deletes older files it records them collected in their row (`collected_utc` for the checkpoint
//! and remaining data, `unlearner_collected_utc` for a consolidation's unlearner), in a transaction of its
//! own: a row never names a deleted file without saying so ([`Ledger::dangling`]).
//!
//! Requests record when they were committed and done as Unix seconds (`created_unix`, `done_unix`) besides
//! the UTC text, so that the time from the `202` to the transaction that applied a request can be measured
//! across batches and restarts ([`Ledger::commit_batch`], [`Ledger::recent_latencies`]).
//!
//! [`Ledger::commit_batch`] marks a batch applied and records the new version in **one** transaction: a
//! crash leaves either both or neither, which is what makes application exactly-once.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::{Deserialize, Serialize};

use crate::error::{Result, ServeError};

/// What a forget request asks for, in external ids: one part of the core request type
/// ([`unlearnrec_core::unlearn::request::Part`]), stored in canonical form (items sorted and de-duplicated)
/// as its JSON, and keyed by its id ([`Forget::id`], the core [`Request::id`] of the one-part request, which
/// every receipt of it records as `request_id`).
///
/// [`Request::id`]: unlearnrec_core::unlearn::request::Request::id
pub use unlearnrec_core::unlearn::request::Part as Forget;

/// Where a request stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Committed to the ledger, waiting for the worker.
    Queued,
    /// Applied to the model; see its version and receipt.
    Applied,
    /// Could not be applied; see the reason.
    Failed,
}

impl Status {
    fn parse(s: &str) -> Result<Self> {
        match s {
            "queued" => Ok(Status::Queued),
            "applied" => Ok(Status::Applied),
            "failed" => Ok(Status::Failed),
            other => Err(ServeError::Corrupt(format!("unknown request status {other:?}"))),
        }
    }
}

/// A row of `requests`.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestRow {
    /// The content-hash id.
    pub id: String,
    /// Arrival order.
    pub seq: i64,
    /// What to forget.
    pub forget: Forget,
    /// Status.
    pub status: Status,
    /// Why it failed.
    pub reason: Option<String>,
    /// UTC time it was committed, RFC 3339.
    pub created_utc: String,
    /// UTC time it was applied or failed.
    pub done_utc: Option<String>,
    /// The model version that applied it.
    pub version: Option<u64>,
    /// Unix seconds of the commit (`None` for rows written before it was recorded).
    pub created_unix: Option<f64>,
    /// Unix seconds of the transaction that applied it or marked it failed.
    pub done_unix: Option<f64>,
    /// The `(user, item)` pairs (external ids) this request removed, once applied.
    pub edges: Option<Vec<(String, String)>>,
    /// The receipt (JSON text), once applied with a model change.
    pub receipt: Option<String>,
}

/// A row of `versions`.
#[derive(Clone, Debug, PartialEq)]
pub struct VersionRow {
    /// The version (0: the checkpoint the service started from).
    pub version: u64,
    /// The checkpoint file.
    pub checkpoint: PathBuf,
    /// SHA-256 of the checkpoint file.
    pub sha256: String,
    /// The remaining-data directory (LightGCN format); `None` for version 0 (the original dataset).
    pub data_dir: Option<PathBuf>,
    /// Edges removed by this version's batch.
    pub edges: usize,
    /// UTC time of the commit.
    pub created_utc: String,
    /// True when this version is a consolidation (the retrain schedule: an exact retrain, with the edges
    /// removed while it ran applied on top), not a batch.
    pub retrain: bool,
    /// The unlearner pre-trained for this version's backbone and its SHA-256 (consolidations only).
    pub unlearner: Option<(PathBuf, String)>,
}

/// One applied request of a batch.
#[derive(Clone, Debug, PartialEq)]
pub struct Applied {
    /// The request id.
    pub id: String,
    /// The pairs it removed (external ids).
    pub edges: Vec<(String, String)>,
    /// Its receipt (JSON text), when the model changed.
    pub receipt: Option<String>,
}

/// The outcome of [`Ledger::submit`].
#[derive(Clone, Debug, PartialEq)]
pub struct Submitted {
    /// The request's row (existing or new).
    pub row: RequestRow,
    /// True when the same request was already in the ledger.
    pub duplicate: bool,
}

/// A connection to the ledger. Each thread opens its own; SQLite serialises writers.
pub struct Ledger {
    conn: Connection,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS requests (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('queued', 'applied', 'failed')),
    reason TEXT,
    created_utc TEXT NOT NULL,
    done_utc TEXT,
    version INTEGER REFERENCES versions(version),
    edges TEXT,
    receipt TEXT,
    created_unix REAL,
    done_unix REAL
);
CREATE INDEX IF NOT EXISTS requests_status ON requests(status, seq);
CREATE TABLE IF NOT EXISTS versions (
    version INTEGER PRIMARY KEY,
    checkpoint TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    data_dir TEXT,
    edges INTEGER NOT NULL,
    created_utc TEXT NOT NULL,
    retrain INTEGER NOT NULL DEFAULT 0,
    unlearner TEXT,
    unlearner_sha256 TEXT,
    collected_utc TEXT,
    unlearner_collected_utc TEXT
);
";

/// Columns added since the first schema, with their definitions: ledgers written before them get them on
/// open (`NULL` or the default in existing rows).
const ADDED_COLUMNS: [(&str, &str, &str); 7] = [
    ("versions", "retrain", "INTEGER NOT NULL DEFAULT 0"),
    ("versions", "unlearner", "TEXT"),
    ("versions", "unlearner_sha256", "TEXT"),
    ("requests", "created_unix", "REAL"),
    ("requests", "done_unix", "REAL"),
    ("versions", "collected_utc", "TEXT"),
    ("versions", "unlearner_collected_utc", "TEXT"),
];

const VERSION_COLUMNS: &str =
    "version, checkpoint, sha256, data_dir, edges, created_utc, retrain, unlearner, unlearner_sha256";

/// Now as RFC 3339 UTC.
pub(crate) fn now_utc() -> String {
    unlearnrec_core::unlearn::receipt::rfc3339(now_unix() as u64)
}

/// Now as Unix seconds.
pub(crate) fn now_unix() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

fn path_text(p: &Path) -> Result<String> {
    p.to_str().map(str::to_owned).ok_or_else(|| ServeError::Config(format!("path {} is not UTF-8", p.display())))
}

impl Ledger {
    /// Opens (creating if needed) the ledger at `path`, in WAL mode with `synchronous=FULL`.
    ///
    /// # Errors
    /// [`ServeError::Ledger`] when the file cannot be opened or is not a ledger.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(ServeError::Config(format!("{}: could not switch the ledger to WAL mode", path.display())));
        }
        conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")?;
        conn.execute_batch(SCHEMA)?;
        for (table, column, def) in ADDED_COLUMNS {
            let has: bool = conn.query_row(
                &format!("SELECT COUNT(*) > 0 FROM pragma_table_info('{table}') WHERE name = ?1"),
                [column],
                |r| r.get(0),
            )?;
            if !has {
                conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {def};"))?;
            }
        }
        Ok(Self { conn })
    }

    /// Records the first version (the checkpoint the service starts from) unless a version exists, and
    /// returns the current version.
    pub fn init_base(&mut self, checkpoint: &Path, sha256: &str) -> Result<VersionRow> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT OR IGNORE INTO versions (version, checkpoint, sha256, data_dir, edges, created_utc)
             VALUES (0, ?1, ?2, NULL, 0, ?3)",
            params![path_text(checkpoint)?, sha256, now_utc()],
        )?;
        tx.commit()?;
        self.current()
    }

    /// The version row `version`.
    pub fn version(&self, version: u64) -> Result<Option<VersionRow>> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {VERSION_COLUMNS} FROM versions WHERE version = ?1"),
                [version as i64],
                version_row,
            )
            .optional()?)
    }

    /// The current (largest) version.
    ///
    /// # Errors
    /// [`ServeError::Corrupt`] when the ledger has no version (never initialised).
    pub fn current(&self) -> Result<VersionRow> {
        self.conn
            .query_row(
                &format!("SELECT {VERSION_COLUMNS} FROM versions ORDER BY version DESC LIMIT 1"),
                [],
                version_row,
            )
            .optional()?
            .ok_or_else(|| ServeError::Corrupt("the ledger has no model version".into()))
    }

    /// Every version, oldest first.
    pub fn versions(&self) -> Result<Vec<VersionRow>> {
        let mut st = self.conn.prepare(&format!("SELECT {VERSION_COLUMNS} FROM versions ORDER BY version"))?;
        let rows = st.query_map([], version_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// The unlearner of `version`: that of the latest version at or before it that records one, with that
    /// version's number; `None` when none does (the service's `--unlearner` then).
    pub fn unlearner_of(&self, version: u64) -> Result<Option<(u64, PathBuf, String)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT version, unlearner, unlearner_sha256 FROM versions
                 WHERE version <= ?1 AND unlearner IS NOT NULL ORDER BY version DESC LIMIT 1",
                [version as i64],
                |r| Ok((r.get::<_, i64>(0)? as u64, PathBuf::from(r.get::<_, String>(1)?), r.get(2)?)),
            )
            .optional()?)
    }

    /// Records `unlearner` (path, SHA-256) for `version` when it records none: the unlearner the service
    /// pre-trained on start for a consolidation written before consolidations recorded theirs.
    ///
    /// # Errors
    /// [`ServeError::Conflict`] when the version does not exist or already records one.
    pub fn set_unlearner(&mut self, version: u64, unlearner: &(PathBuf, String)) -> Result<()> {
        let n = self.conn.execute(
            "UPDATE versions SET unlearner = ?1, unlearner_sha256 = ?2 WHERE version = ?3 AND unlearner IS NULL",
            params![path_text(&unlearner.0)?, unlearner.1, version as i64],
        )?;
        if n != 1 {
            return Err(ServeError::Conflict(format!("version {version} is missing or already has an unlearner")));
        }
        Ok(())
    }

    /// Commits a request (idempotent by content: a request already present is returned as it is).
    pub fn submit(&mut self, forget: &Forget) -> Result<Submitted> {
        Ok(self.submit_bounded(forget, None)?.expect("an unbounded queue is never full"))
    }

    /// [`Ledger::submit`] with at most `max_queued` requests queued: a new request that would exceed it is
    /// not recorded, and `Ok(Err(queued))` says how many are queued. A request already present is returned
    /// as it is, full or not.
    pub fn submit_bounded(
        &mut self,
        forget: &Forget,
        max_queued: Option<u64>,
    ) -> Result<std::result::Result<Submitted, u64>> {
        let forget = forget.clone().canonical();
        let id = forget.id();
        let body = forget.to_json();
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let now = now_unix();
        let n = tx.execute(
            "INSERT INTO requests (id, body, status, created_utc, created_unix) VALUES (?1, ?2, 'queued', ?3, ?4)
             ON CONFLICT(id) DO NOTHING",
            params![id, body, unlearnrec_core::unlearn::receipt::rfc3339(now as u64), now],
        )?;
        let row = tx.query_row(&format!("{SELECT_REQUEST} WHERE id = ?1"), [&id], request_row)??;
        if row.forget != forget {
            return Err(ServeError::Corrupt(format!("request id {id} collides with a different request")));
        }
        if let Some(max) = max_queued.filter(|_| n == 1) {
            let queued: i64 =
                tx.query_row("SELECT COUNT(*) FROM requests WHERE status = 'queued'", [], |r| r.get(0))?;
            if queued as u64 > max {
                // Dropping the transaction rolls the insert back.
                return Ok(Err(queued as u64 - 1));
            }
        }
        tx.commit()?;
        Ok(Ok(Submitted { row, duplicate: n == 0 }))
    }

    /// A request by id.
    pub fn get(&self, id: &str) -> Result<Option<RequestRow>> {
        self.conn.query_row(&format!("{SELECT_REQUEST} WHERE id = ?1"), [id], request_row).optional()?.transpose()
    }

    /// Up to `limit` queued requests, oldest first.
    pub fn queued(&self, limit: usize) -> Result<Vec<RequestRow>> {
        let mut st = self.conn.prepare(&format!("{SELECT_REQUEST} WHERE status = 'queued' ORDER BY seq LIMIT ?1"))?;
        let rows = st.query_map([limit as i64], request_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter().collect()
    }

    /// Every request, in arrival order.
    pub fn all(&self) -> Result<Vec<RequestRow>> {
        let mut st = self.conn.prepare(&format!("{SELECT_REQUEST} ORDER BY seq"))?;
        let rows = st.query_map([], request_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter().collect()
    }

    /// Requests per status: `(queued, applied, failed)`.
    pub fn counts(&self) -> Result<(u64, u64, u64)> {
        let mut st = self.conn.prepare("SELECT status, COUNT(*) FROM requests GROUP BY status")?;
        let mut out = (0, 0, 0);
        for r in st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
            let (s, n) = r?;
            match Status::parse(&s)? {
                Status::Queued => out.0 = n as u64,
                Status::Applied => out.1 = n as u64,
                Status::Failed => out.2 = n as u64,
            }
        }
        Ok(out)
    }

    /// In one transaction: marks every request of `applied` applied by `version` and, when `version` is new
    /// (a model change), records it. `version.version` must be the current version (no model change) or
    /// the current version plus one. Returns, for each request of `applied` in order, the seconds from its
    /// commit to this transaction (`None` for a row written before commit times were recorded).
    ///
    /// # Errors
    /// [`ServeError::Conflict`] (and nothing is written) when a request is not queued or the version is not
    /// the next one.
    pub fn commit_batch(&mut self, version: &VersionRow, applied: &[Applied]) -> Result<Vec<Option<f64>>> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current: i64 = tx.query_row("SELECT MAX(version) FROM versions", [], |r| r.get(0))?;
        let v = version.version as i64;
        if v == current + 1 {
            tx.execute(
                "INSERT INTO versions (version, checkpoint, sha256, data_dir, edges, created_utc)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    v,
                    path_text(&version.checkpoint)?,
                    version.sha256,
                    version.data_dir.as_deref().map(path_text).transpose()?,
                    version.edges as i64,
                    version.created_utc
                ],
            )?;
        } else if v != current {
            return Err(ServeError::Conflict(format!("version {v} does not follow the current version {current}")));
        }
        let now = now_unix();
        let now_text = unlearnrec_core::unlearn::receipt::rfc3339(now as u64);
        let mut waited = Vec::with_capacity(applied.len());
        for a in applied {
            let edges = serde_json::to_string(&a.edges)?;
            let created: Option<Option<f64>> = tx
                .query_row(
                    "UPDATE requests SET status = 'applied', version = ?1, edges = ?2, receipt = ?3, done_utc = ?4,
                     done_unix = ?5 WHERE id = ?6 AND status = 'queued' RETURNING created_unix",
                    params![v, edges, a.receipt, now_text, now, a.id],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(created) = created else {
                return Err(ServeError::Conflict(format!("request {} is not queued", a.id)));
            };
            waited.push(created.map(|c| (now - c).max(0.0)));
        }
        tx.commit()?;
        Ok(waited)
    }

    /// The seconds from commit to application of the last `n` applied requests (by application time, the
    /// latest first) that recorded both times.
    pub fn recent_latencies(&self, n: usize) -> Result<Vec<f64>> {
        let mut st = self.conn.prepare(
            "SELECT done_unix - created_unix FROM requests
             WHERE status = 'applied' AND done_unix IS NOT NULL AND created_unix IS NOT NULL
             ORDER BY done_unix DESC, seq DESC LIMIT ?1",
        )?;
        let rows = st.query_map([n as i64], |r| r.get::<_, f64>(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows.into_iter().map(|s| s.max(0.0)).collect())
    }

    /// Records `version` (a consolidation of version `on`: same removed set, with its unlearner) as the
    /// next version, in one transaction, only when the current version is still `on`. Returns false (and
    /// writes nothing) when another version was committed meanwhile.
    pub fn commit_retrain(&mut self, on: u64, version: &VersionRow) -> Result<bool> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current: i64 = tx.query_row("SELECT MAX(version) FROM versions", [], |r| r.get(0))?;
        if current != on as i64 || version.version != on + 1 {
            return Ok(false);
        }
        let (unlearner, unlearner_sha) = match &version.unlearner {
            Some((p, sha)) => (Some(path_text(p)?), Some(sha.as_str())),
            None => (None, None),
        };
        tx.execute(
            "INSERT INTO versions
                 (version, checkpoint, sha256, data_dir, edges, created_utc, retrain, unlearner, unlearner_sha256)
             VALUES (?1, ?2, ?3, ?4, 0, ?5, 1, ?6, ?7)",
            params![
                version.version as i64,
                path_text(&version.checkpoint)?,
                version.sha256,
                version.data_dir.as_deref().map(path_text).transpose()?,
                version.created_utc,
                unlearner,
                unlearner_sha
            ],
        )?;
        tx.commit()?;
        Ok(true)
    }

    /// Records the checkpoint and remaining data of versions 1 to `through` collected (about to be deleted,
    /// or deleted), where not recorded yet. Version 0, the checkpoint the service was started with, is never
    /// collected.
    pub fn mark_collected(&mut self, through: u64) -> Result<()> {
        self.conn.execute(
            "UPDATE versions SET collected_utc = ?1 WHERE version >= 1 AND version <= ?2 AND collected_utc IS NULL",
            params![now_utc(), through as i64],
        )?;
        Ok(())
    }

    /// Records every consolidation's unlearner but `keep`'s (the version whose unlearner is in use)
    /// collected, where not recorded yet.
    pub fn mark_unlearners_collected(&mut self, keep: Option<u64>) -> Result<()> {
        self.conn.execute(
            "UPDATE versions SET unlearner_collected_utc = ?1
             WHERE unlearner IS NOT NULL AND unlearner_collected_utc IS NULL AND (?2 IS NULL OR version != ?2)",
            params![now_utc(), keep.map(|v| v as i64)],
        )?;
        Ok(())
    }

    /// The versions whose checkpoint and remaining data are recorded collected.
    pub fn collected(&self) -> Result<Vec<u64>> {
        let mut st =
            self.conn.prepare("SELECT version FROM versions WHERE collected_utc IS NOT NULL ORDER BY version")?;
        let rows = st.query_map([], |r| r.get::<_, i64>(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows.into_iter().map(|v| v as u64).collect())
    }

    /// Files that rows name as present (not recorded collected) but that do not exist, one line each: empty
    /// when the ledger and the state directory agree.
    pub fn dangling(&self) -> Result<Vec<String>> {
        let mut st = self.conn.prepare(
            "SELECT version, checkpoint, data_dir, collected_utc IS NOT NULL, unlearner,
                    unlearner_collected_utc IS NOT NULL FROM versions ORDER BY version",
        )?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, bool>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, bool>(5)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut out = Vec::new();
        for (v, ckpt, data, collected, unlearner, unlearner_collected) in rows {
            let mut files = Vec::new();
            if !collected {
                files.push(("checkpoint", ckpt));
                files.extend(data.map(|d| ("remaining data", d)));
            }
            if !unlearner_collected {
                files.extend(unlearner.map(|u| ("unlearner", u)));
            }
            for (what, f) in files {
                if !Path::new(&f).exists() {
                    out.push(format!("version {v}: its {what} {f} is missing and not recorded collected"));
                }
            }
        }
        Ok(out)
    }

    /// Marks a queued request failed with a reason.
    ///
    /// # Errors
    /// [`ServeError::Conflict`] when it is not queued.
    pub fn fail(&mut self, id: &str, reason: &str) -> Result<()> {
        let now = now_unix();
        let n = self.conn.execute(
            "UPDATE requests SET status = 'failed', reason = ?1, done_utc = ?2, done_unix = ?3
             WHERE id = ?4 AND status = 'queued'",
            params![reason, unlearnrec_core::unlearn::receipt::rfc3339(now as u64), now, id],
        )?;
        if n != 1 {
            return Err(ServeError::Conflict(format!("request {id} is not queued")));
        }
        Ok(())
    }
}

const SELECT_REQUEST: &str = "SELECT id, seq, body, status, reason, created_utc, done_utc, version, edges, receipt,
    created_unix, done_unix FROM requests";

fn version_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<VersionRow> {
    Ok(VersionRow {
        version: r.get::<_, i64>(0)? as u64,
        checkpoint: PathBuf::from(r.get::<_, String>(1)?),
        sha256: r.get(2)?,
        data_dir: r.get::<_, Option<String>>(3)?.map(PathBuf::from),
        edges: r.get::<_, i64>(4)? as usize,
        created_utc: r.get(5)?,
        retrain: r.get::<_, i64>(6)? != 0,
        unlearner: match (r.get::<_, Option<String>>(7)?, r.get::<_, Option<String>>(8)?) {
            (Some(p), Some(sha)) => Some((PathBuf::from(p), sha)),
            _ => None,
        },
    })
}

/// Reads a request row; the outer result is SQLite's, the inner one the decoding of the stored JSON.
fn request_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<RequestRow>> {
    let body: String = r.get(2)?;
    let status: String = r.get(3)?;
    let edges: Option<String> = r.get(8)?;
    let row = RequestRow {
        id: r.get(0)?,
        seq: r.get(1)?,
        forget: Forget::Item { item: String::new() },
        status: Status::Queued,
        reason: r.get(4)?,
        created_utc: r.get(5)?,
        done_utc: r.get(6)?,
        version: r.get::<_, Option<i64>>(7)?.map(|v| v as u64),
        created_unix: r.get(10)?,
        done_unix: r.get(11)?,
        edges: None,
        receipt: r.get(9)?,
    };
    Ok((|| {
        let forget = serde_json::from_str(&body)?;
        let edges = edges.map(|e| serde_json::from_str(&e)).transpose()?;
        Ok(RequestRow { forget, status: Status::parse(&status)?, edges, ..row })
    })())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger() -> (tempfile::TempDir, Ledger) {
        let dir = tempfile::tempdir().unwrap();
        let mut l = Ledger::open(&dir.path().join("ledger.sqlite")).unwrap();
        l.init_base(Path::new("/m/base.safetensors"), "abc").unwrap();
        (dir, l)
    }

    fn pairs(user: &str, items: &[&str]) -> Forget {
        Forget::Pairs { user: user.into(), items: items.iter().map(|s| s.to_string()).collect() }
    }

    fn version(v: u64) -> VersionRow {
        VersionRow {
            version: v,
            checkpoint: format!("/s/model-v{v}.safetensors").into(),
            sha256: format!("sha{v}"),
            data_dir: Some(format!("/s/data-v{v}").into()),
            edges: 3,
            created_utc: now_utc(),
            retrain: false,
            unlearner: None,
        }
    }

    #[test]
    fn a_consolidation_records_its_unlearner_for_the_versions_after_it() {
        let (_d, mut l) = ledger();
        assert_eq!(l.unlearner_of(0).unwrap(), None);
        l.commit_batch(&version(1), &[]).unwrap();
        let un = (PathBuf::from("/s/unlearner-v2.safetensors"), "u2".to_string());
        assert!(l.commit_retrain(1, &VersionRow { retrain: true, unlearner: Some(un.clone()), ..version(2) }).unwrap());
        l.commit_batch(&version(3), &[]).unwrap();
        assert_eq!(l.version(2).unwrap().unwrap().unlearner, Some(un.clone()));
        assert_eq!(l.unlearner_of(1).unwrap(), None);
        assert_eq!(l.unlearner_of(3).unwrap(), Some((2, un.0.clone(), un.1.clone())));
        // Filling in a version's unlearner only where there is none.
        assert!(l.set_unlearner(2, &un).is_err());
        l.set_unlearner(3, &(PathBuf::from("/s/unlearner-v3.safetensors"), "u3".into())).unwrap();
        assert_eq!(l.unlearner_of(3).unwrap().unwrap().0, 3);
    }

    #[test]
    fn commit_to_application_is_timed_across_batches() {
        let (_d, mut l) = ledger();
        let a = l.submit(&pairs("1", &["2"])).unwrap().row;
        let b = l.submit(&pairs("1", &["3"])).unwrap().row;
        assert!(a.created_unix.is_some() && a.done_unix.is_none());
        std::thread::sleep(std::time::Duration::from_millis(30));
        let first = l.commit_batch(&version(1), &[Applied { id: a.id.clone(), edges: vec![], receipt: None }]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(30));
        let second =
            l.commit_batch(&version(2), &[Applied { id: b.id.clone(), edges: vec![], receipt: None }]).unwrap();
        let (first, second) = (first[0].unwrap(), second[0].unwrap());
        assert!(first >= 0.025 && second >= first + 0.025, "{first} {second}");
        let row = l.get(&b.id).unwrap().unwrap();
        assert!((row.done_unix.unwrap() - row.created_unix.unwrap() - second).abs() < 1e-6);
        // Latest application first.
        let recent = l.recent_latencies(10).unwrap();
        assert_eq!(recent.len(), 2);
        assert!((recent[0] - second).abs() < 1e-6 && (recent[1] - first).abs() < 1e-6, "{recent:?}");
        assert_eq!(l.recent_latencies(1).unwrap().len(), 1);
    }

    #[test]
    fn a_ledger_of_the_first_schema_gets_the_new_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.sqlite");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE requests (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
                    body TEXT NOT NULL, status TEXT NOT NULL, reason TEXT, created_utc TEXT NOT NULL,
                    done_utc TEXT, version INTEGER, edges TEXT, receipt TEXT);
                 CREATE TABLE versions (version INTEGER PRIMARY KEY, checkpoint TEXT NOT NULL,
                    sha256 TEXT NOT NULL, data_dir TEXT, edges INTEGER NOT NULL, created_utc TEXT NOT NULL);
                 INSERT INTO versions VALUES (0, '/b', 'x', NULL, 0, '2026-01-01T00:00:00Z');
                 INSERT INTO requests (id, body, status, created_utc)
                    VALUES ('old', '{\"kind\":\"item\",\"item\":\"9\"}', 'queued', '2026-01-01T00:00:00Z');",
            )
            .unwrap();
        }
        let mut l = Ledger::open(&path).unwrap();
        let v0 = l.current().unwrap();
        assert_eq!((v0.retrain, v0.unlearner), (false, None));
        let old = l.get("old").unwrap().unwrap();
        assert_eq!((old.created_unix, old.done_unix), (None, None));
        // A row committed before commit times were recorded is applied, untimed.
        let waited =
            l.commit_batch(&version(1), &[Applied { id: "old".into(), edges: vec![], receipt: None }]).unwrap();
        assert_eq!(waited, vec![None]);
        assert!(l.recent_latencies(10).unwrap().is_empty());
    }

    #[test]
    fn a_retrain_commits_only_on_the_version_it_retrained() {
        let (_d, mut l) = ledger();
        l.commit_batch(&version(1), &[]).unwrap();
        assert!(!l.commit_retrain(0, &version(1)).unwrap());
        assert!(!l.commit_retrain(1, &version(3)).unwrap());
        assert!(l.commit_retrain(1, &version(2)).unwrap());
        let cur = l.current().unwrap();
        assert_eq!((cur.version, cur.retrain, cur.edges), (2, true, 0));
        assert!(!l.version(1).unwrap().unwrap().retrain);
        assert!(!l.commit_retrain(1, &version(2)).unwrap());
    }

    #[test]
    fn submitting_is_idempotent_by_content() {
        let (_d, mut l) = ledger();
        let a = l.submit(&pairs("7", &["3", "1", "3"])).unwrap();
        assert!(!a.duplicate);
        assert_eq!(a.row.status, Status::Queued);
        assert_eq!(a.row.forget, pairs("7", &["1", "3"]));
        let b = l.submit(&pairs("7", &["1", "3"])).unwrap();
        assert!(b.duplicate);
        assert_eq!(a.row.id, b.row.id);
        assert_eq!(a.row.seq, b.row.seq);
        let c = l.submit(&Forget::User { user: "7".into() }).unwrap();
        assert_ne!(c.row.id, a.row.id);
        assert_ne!(Forget::User { user: "1".into() }.id(), Forget::Item { item: "1".into() }.id());
        assert_eq!(l.all().unwrap().len(), 2);
        assert_eq!(l.counts().unwrap(), (2, 0, 0));
    }

    #[test]
    fn ledger_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.sqlite");
        let id = {
            let mut l = Ledger::open(&path).unwrap();
            l.init_base(Path::new("/b"), "x").unwrap();
            l.submit(&Forget::Item { item: "9".into() }).unwrap().row.id
        };
        let mut l = Ledger::open(&path).unwrap();
        assert_eq!(l.init_base(Path::new("/other"), "y").unwrap().checkpoint, PathBuf::from("/b"));
        assert_eq!(l.get(&id).unwrap().unwrap().status, Status::Queued);
        assert!(l.get("nope").unwrap().is_none());
    }

    #[test]
    fn a_batch_commits_with_its_version_in_one_transaction() {
        let (_d, mut l) = ledger();
        let a = l.submit(&pairs("1", &["2"])).unwrap().row;
        let b = l.submit(&Forget::User { user: "4".into() }).unwrap().row;
        assert_eq!(l.queued(10).unwrap().iter().map(|r| &r.id).collect::<Vec<_>>(), vec![&a.id, &b.id]);
        let applied = vec![
            Applied { id: a.id.clone(), edges: vec![("1".into(), "2".into())], receipt: Some("{}".into()) },
            Applied { id: b.id.clone(), edges: vec![], receipt: None },
        ];
        l.commit_batch(&version(1), &applied).unwrap();
        assert_eq!(l.current().unwrap(), version(1).clone_with_time(&l.current().unwrap()));
        let got = l.get(&a.id).unwrap().unwrap();
        assert_eq!((got.status, got.version), (Status::Applied, Some(1)));
        assert_eq!(got.edges, Some(vec![("1".to_string(), "2".to_string())]));
        assert!(l.queued(10).unwrap().is_empty());
        // Applying again is refused and changes nothing (exactly once).
        let err = l.commit_batch(&version(2), &applied).unwrap_err();
        assert!(matches!(err, ServeError::Conflict(_)), "{err}");
        assert_eq!(l.current().unwrap().version, 1);
        assert_eq!(l.versions().unwrap().len(), 2);
    }

    #[test]
    fn a_conflicting_batch_rolls_back_entirely() {
        let (_d, mut l) = ledger();
        let a = l.submit(&pairs("1", &["2"])).unwrap().row;
        let b = l.submit(&pairs("1", &["3"])).unwrap().row;
        l.fail(&b.id, "boom").unwrap();
        let applied = vec![
            Applied { id: a.id.clone(), edges: vec![], receipt: None },
            Applied { id: b.id.clone(), edges: vec![], receipt: None },
        ];
        assert!(l.commit_batch(&version(1), &applied).is_err());
        assert_eq!(l.get(&a.id).unwrap().unwrap().status, Status::Queued);
        assert_eq!(l.current().unwrap().version, 0);
        // A version that skips one is refused too.
        assert!(l.commit_batch(&version(2), &applied[..1]).is_err());
        // No model change: the batch is applied at the current version.
        l.commit_batch(&l.current().unwrap(), &applied[..1]).unwrap();
        assert_eq!(l.get(&a.id).unwrap().unwrap().version, Some(0));
    }

    #[test]
    fn a_bounded_queue_refuses_new_requests_when_full_but_not_repeats() {
        let (_d, mut l) = ledger();
        let a = l.submit_bounded(&pairs("1", &["2"]), Some(2)).unwrap().unwrap();
        l.submit_bounded(&pairs("1", &["3"]), Some(2)).unwrap().unwrap();
        assert_eq!(l.submit_bounded(&pairs("1", &["4"]), Some(2)).unwrap().unwrap_err(), 2);
        assert_eq!(l.all().unwrap().len(), 2, "a refused request is not recorded");
        let again = l.submit_bounded(&pairs("1", &["2"]), Some(2)).unwrap().unwrap();
        assert!(again.duplicate && again.row.id == a.row.id);
        l.commit_batch(&version(1), &[Applied { id: a.row.id, edges: vec![], receipt: None }]).unwrap();
        assert!(!l.submit_bounded(&pairs("1", &["4"]), Some(2)).unwrap().unwrap().duplicate);
    }

    #[test]
    fn collected_versions_are_recorded_and_the_rest_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = Ledger::open(&dir.path().join("l.sqlite")).unwrap();
        let base = dir.path().join("base.safetensors");
        std::fs::write(&base, b"b").unwrap();
        l.init_base(&base, "x").unwrap();
        let file = |v: u64| {
            let (c, d) = (dir.path().join(format!("m{v}")), dir.path().join(format!("d{v}")));
            std::fs::write(&c, b"m").unwrap();
            std::fs::create_dir(&d).unwrap();
            VersionRow { checkpoint: c, data_dir: Some(d), ..version(v) }
        };
        for v in 1..=3 {
            l.commit_batch(&file(v), &[]).unwrap();
        }
        assert!(l.dangling().unwrap().is_empty());
        std::fs::remove_file(dir.path().join("m1")).unwrap();
        assert_eq!(l.dangling().unwrap().len(), 1, "{:?}", l.dangling());
        l.mark_collected(1).unwrap();
        assert!(l.dangling().unwrap().is_empty());
        assert_eq!(l.collected().unwrap(), vec![1]);
        l.mark_collected(2).unwrap();
        assert_eq!(l.collected().unwrap(), vec![1, 2], "version 0 is never collected");
        // Unlearners: all but the one in use.
        let un = dir.path().join("u4");
        std::fs::write(&un, b"u").unwrap();
        let four = VersionRow { retrain: true, unlearner: Some((un.clone(), "s".into())), ..file(4) };
        assert!(l.commit_retrain(3, &four).unwrap());
        l.mark_unlearners_collected(Some(4)).unwrap();
        std::fs::remove_file(&un).unwrap();
        assert_eq!(l.dangling().unwrap().len(), 1);
        l.mark_unlearners_collected(None).unwrap();
        assert!(l.dangling().unwrap().is_empty());
    }

    #[test]
    fn status_transitions_only_leave_queued() {
        let (_d, mut l) = ledger();
        let a = l.submit(&Forget::Item { item: "5".into() }).unwrap().row;
        l.fail(&a.id, "diverged").unwrap();
        let got = l.get(&a.id).unwrap().unwrap();
        assert_eq!((got.status, got.reason.as_deref()), (Status::Failed, Some("diverged")));
        assert!(l.fail(&a.id, "again").is_err());
        let again = l.submit(&Forget::Item { item: "5".into() }).unwrap();
        assert!(again.duplicate);
        assert_eq!(again.row.status, Status::Failed);
        assert_eq!(l.counts().unwrap(), (0, 0, 1));
    }

    impl VersionRow {
        fn clone_with_time(&self, other: &VersionRow) -> VersionRow {
            VersionRow { created_utc: other.created_utc.clone(), ..self.clone() }
        }
    }
}
