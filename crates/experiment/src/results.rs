//! Result rows, `results.csv` / `stream.csv` (read and written atomically), the mean ± std aggregation
//! over seeds and the Markdown table.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use unlearnrec_core::error::{Error, Result};
use unlearnrec_core::io::write_atomic;

/// Metric columns of `results.csv`, in file order (a row may leave any of them empty). Columns of
/// other names follow them (the `sharded_*` figures of `sisa` rows, the audit's per-attacker
/// `mia_auc_<attacker>`, `removed_called_members_<attacker>` and `removed_vs_held_out_auc_<attacker>`).
pub const METRICS: &[&str] = &[
    "edges",
    "users",
    "items",
    "recall@20",
    "ndcg@20",
    "valid_recall@20",
    "original_recall@20",
    "original_ndcg@20",
    "clean_recall@20",
    "removed_before",
    "removed_after",
    "non_edges_after",
    "remaining_after",
    "gap",
    "mi_bf",
    "mi_ng",
    "unlearn_secs",
    "wall_secs",
    "pretrain_secs",
    "backbone_secs",
    "mia_auc",
    "removed_called_members",
    "removed_vs_held_out_auc",
    "removed_median_rank",
    "removed_top20",
    "agreement_top20",
    "agreement_kl",
];

/// The key columns of `results.csv`, before the metrics.
pub const KEYS: &[&str] = &["dataset", "model", "protocol", "fraction", "method", "seed", "config_hash"];

/// One cell of the grid: what was run and what it measured.
#[derive(Clone, Debug, PartialEq)]
pub struct ResultRow {
    /// The dataset's name.
    pub dataset: String,
    /// The backbone.
    pub model: String,
    /// The request protocol.
    pub protocol: String,
    /// The request size (`None` for `adversarial`).
    pub fraction: Option<f64>,
    /// The method.
    pub method: String,
    /// The seed.
    pub seed: u64,
    /// The hash of everything that determines the cell's result (dataset, configurations, seed).
    pub config_hash: String,
    /// Metric name → value (names of [`METRICS`]; NaN or absent = not measured).
    pub metrics: BTreeMap<String, f64>,
}

impl ResultRow {
    /// A metric, NaN when absent.
    pub fn get(&self, name: &str) -> f64 {
        self.metrics.get(name).copied().unwrap_or(f64::NAN)
    }

    /// Whether `self` and `other` are the same cell (everything but the hash and the metrics).
    pub fn same_cell(&self, other: &ResultRow) -> bool {
        self.dataset == other.dataset
            && self.model == other.model
            && self.protocol == other.protocol
            && self.fraction == other.fraction
            && self.method == other.method
            && self.seed == other.seed
    }

    fn key_fields(&self) -> Vec<String> {
        vec![
            self.dataset.clone(),
            self.model.clone(),
            self.protocol.clone(),
            self.fraction.map(|f| f.to_string()).unwrap_or_default(),
            self.method.clone(),
            self.seed.to_string(),
            self.config_hash.clone(),
        ]
    }
}

/// Formats a value for a CSV cell: empty for NaN, the shortest round-trip form otherwise.
fn number(v: f64) -> String {
    if v.is_nan() { String::new() } else { v.to_string() }
}

fn quote(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

/// A table as CSV text (RFC 4180 quoting where needed).
pub fn to_csv(header: &[String], rows: &[Vec<String>]) -> String {
    let mut out = String::new();
    for line in std::iter::once(header).chain(rows.iter().map(Vec::as_slice)) {
        let fields: Vec<String> = line.iter().map(|f| quote(f)).collect();
        out.push_str(&fields.join(","));
        out.push('\n');
    }
    out
}

/// Parses CSV text written by [`to_csv`]: the header and the records.
///
/// # Errors
/// [`Error::Format`] for an unterminated quote or a record whose length differs from the header's.
pub fn parse_csv(text: &str, path: &Path) -> Result<(Vec<String>, Vec<Vec<String>>)> {
    let mut records: Vec<(usize, Vec<String>)> = Vec::new();
    let mut field = String::new();
    let mut record = Vec::new();
    let mut quoted = false;
    let mut line = 1;
    let mut start = 1;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => {
                if c == '\n' {
                    line += 1;
                }
                field.push(c);
            }
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                record.push(std::mem::take(&mut field));
                records.push((start, std::mem::take(&mut record)));
                line += 1;
                start = line;
            }
            (false, c) => field.push(c),
        }
    }
    if quoted {
        return Err(Error::format(path, start, "unterminated quoted field"));
    }
    if !field.is_empty() || !record.is_empty() {
        record.push(field);
        records.push((start, record));
    }
    let mut it = records.into_iter().filter(|(_, r)| !(r.len() == 1 && r[0].is_empty()));
    let Some((_, header)) = it.next() else { return Ok((Vec::new(), Vec::new())) };
    let mut rows = Vec::new();
    for (line, r) in it {
        if r.len() != header.len() {
            return Err(Error::format(path, line, format!("{} fields, the header has {}", r.len(), header.len())));
        }
        rows.push(r);
    }
    Ok((header, rows))
}

/// `results.csv`'s text for `rows`: [`KEYS`], [`METRICS`], then any other metric the rows hold.
pub fn results_csv(rows: &[ResultRow]) -> String {
    let mut header: Vec<String> = KEYS.iter().chain(METRICS).map(|s| s.to_string()).collect();
    for r in rows {
        for k in r.metrics.keys() {
            if !header.contains(k) {
                header.push(k.clone());
            }
        }
    }
    let records: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut f = r.key_fields();
            f.extend(header[KEYS.len()..].iter().map(|m| number(r.get(m))));
            f
        })
        .collect();
    to_csv(&header, &records)
}

/// Writes `rows` to `path` atomically.
///
/// # Errors
/// [`Error::Io`].
pub fn write_results(path: &Path, rows: &[ResultRow]) -> Result<()> {
    write_atomic(path, results_csv(rows).as_bytes())
}

/// Reads a `results.csv`; an absent file is no rows.
///
/// # Errors
/// [`Error::Io`]; [`Error::Format`] for a missing key column or a malformed number.
pub fn read_results(path: &Path) -> Result<Vec<ResultRow>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let (header, records) = parse_csv(&text, path)?;
    let col = |name: &str| {
        header.iter().position(|h| h == name).ok_or_else(|| Error::format(path, 1, format!("no `{name}` column")))
    };
    let keys: Vec<usize> = KEYS.iter().map(|k| col(k)).collect::<Result<_>>()?;
    let mut rows = Vec::new();
    for (n, r) in records.iter().enumerate() {
        let bad = |what: &str| Error::format(path, n + 2, format!("malformed {what}"));
        let num = |s: &str, what: &str| -> Result<f64> {
            if s.is_empty() { Ok(f64::NAN) } else { s.parse::<f64>().map_err(|_| bad(what)) }
        };
        let fraction = num(&r[keys[3]], "fraction")?;
        let mut metrics = BTreeMap::new();
        for (j, h) in header.iter().enumerate() {
            if !KEYS.contains(&h.as_str()) {
                let v = num(&r[j], h)?;
                if !v.is_nan() {
                    metrics.insert(h.clone(), v);
                }
            }
        }
        rows.push(ResultRow {
            dataset: r[keys[0]].clone(),
            model: r[keys[1]].clone(),
            protocol: r[keys[2]].clone(),
            fraction: (!fraction.is_nan()).then_some(fraction),
            method: r[keys[4]].clone(),
            seed: r[keys[5]].parse().map_err(|_| bad("seed"))?,
            config_hash: r[keys[6]].clone(),
            metrics,
        });
    }
    Ok(rows)
}

/// Mean and sample standard deviation (`n − 1`; 0 for one value) of the finite values; NaN when none.
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    let v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    if v.len() == 1 {
        return (mean, 0.0);
    }
    let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// The rows of one (dataset, model, protocol, fraction, method) over its seeds.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// The dataset.
    pub dataset: String,
    /// The backbone.
    pub model: String,
    /// The protocol.
    pub protocol: String,
    /// The request size.
    pub fraction: Option<f64>,
    /// The method.
    pub method: String,
    /// Seeds aggregated.
    pub seeds: usize,
    /// Metric → (mean, std) over the seeds (see [`mean_std`]).
    pub stats: BTreeMap<String, (f64, f64)>,
}

impl Summary {
    /// The mean of a metric, NaN when absent.
    pub fn mean(&self, metric: &str) -> f64 {
        self.stats.get(metric).map_or(f64::NAN, |s| s.0)
    }

    fn same_group(&self, r: &ResultRow) -> bool {
        self.dataset == r.dataset && self.model == r.model && self.protocol == r.protocol && self.fraction == r.fraction
    }
}

/// Groups `rows` by dataset, model, protocol, fraction and method (in order of first appearance) and
/// aggregates every metric over the seeds.
pub fn aggregate(rows: &[ResultRow]) -> Vec<Summary> {
    let mut groups: Vec<(Summary, Vec<&ResultRow>)> = Vec::new();
    for r in rows {
        match groups.iter_mut().find(|(s, _)| s.same_group(r) && s.method == r.method) {
            Some((_, members)) => members.push(r),
            None => groups.push((
                Summary {
                    dataset: r.dataset.clone(),
                    model: r.model.clone(),
                    protocol: r.protocol.clone(),
                    fraction: r.fraction,
                    method: r.method.clone(),
                    seeds: 0,
                    stats: BTreeMap::new(),
                },
                vec![r],
            )),
        }
    }
    groups
        .into_iter()
        .map(|(mut s, members)| {
            s.seeds = members.len();
            let mut names: Vec<&String> = members.iter().flat_map(|r| r.metrics.keys()).collect();
            names.sort();
            names.dedup();
            for name in names {
                let values: Vec<f64> = members.iter().map(|r| r.get(name)).collect();
                s.stats.insert(name.clone(), mean_std(&values));
            }
            s
        })
        .collect()
}

/// `mean ± std` with `digits` decimals (the mean alone for one seed; `–` when not measured).
pub fn format_stat(stat: Option<(f64, f64)>, seeds: usize, digits: usize) -> String {
    match stat {
        Some((m, s)) if m.is_finite() => {
            if seeds > 1 && s.is_finite() {
                format!("{m:.digits$} ± {s:.digits$}")
            } else {
                format!("{m:.digits$}")
            }
        }
        _ => "–".to_string(),
    }
}

/// The Markdown table of `summaries`: one row per (dataset, model, protocol, fraction, method), metrics as
/// mean ± std over the seeds; `× retrain` is the method's mean test Recall@20 over the retrained model's
/// of the same group. The audit columns (the strongest attackers' membership AUC, removed edges called
/// members and removed-vs-held-out AUC, the removed items' median rank, the top-20 agreement with the
/// retrained model) appear when some row has them.
pub fn markdown(summaries: &[Summary]) -> String {
    let audit = summaries.iter().any(|s| s.mean("mia_auc").is_finite());
    let mut out = String::from(
        "| dataset | model | protocol | fraction | method | seeds | edges | Recall@20 | NDCG@20 | × retrain | removed-edge score | non-edge score | MI-NG | time (s) |",
    );
    if audit {
        out.push_str(
            " MIA AUC | removed called members | removed vs held-out AUC | removed median rank | top-20 agreement with retrain |",
        );
    }
    out.push('\n');
    let cols = 14 + if audit { 5 } else { 0 };
    out.push_str(&"|---".repeat(cols));
    out.push_str("|\n");
    for s in summaries {
        let retrain = summaries.iter().find(|r| {
            r.method == "retrain"
                && r.dataset == s.dataset
                && r.model == s.model
                && r.protocol == s.protocol
                && r.fraction == s.fraction
        });
        let ratio = retrain
            .map(|r| s.mean("recall@20") / r.mean("recall@20"))
            .filter(|x| x.is_finite())
            .map_or("–".to_string(), |x| format!("{x:.3}"));
        let f = |m: &str, d: usize| format_stat(s.stats.get(m).copied(), s.seeds, d);
        let _ = write!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            s.dataset,
            s.model,
            s.protocol,
            s.fraction.map_or("–".to_string(), |x| x.to_string()),
            s.method,
            s.seeds,
            f("edges", 0),
            f("recall@20", 4),
            f("ndcg@20", 4),
            ratio,
            f("removed_after", 3),
            f("non_edges_after", 3),
            f("mi_ng", 3),
            f("unlearn_secs", 3),
        );
        if audit {
            let _ = write!(
                out,
                " {} | {} | {} | {} | {} |",
                f("mia_auc", 3),
                f("removed_called_members", 3),
                f("removed_vs_held_out_auc", 3),
                f("removed_median_rank", 1),
                f("agreement_top20", 3)
            );
        }
        out.push('\n');
    }
    out
}

/// One step of a stream: a model after `step` requests (step 0: the backbone). Figures a row did not
/// measure are NaN (written empty).
#[derive(Clone, Debug, PartialEq)]
pub struct StreamRow {
    /// The dataset.
    pub dataset: String,
    /// The backbone.
    pub model: String,
    /// The scenario or protocol the requests are drawn from.
    pub scenario: String,
    /// The seed.
    pub seed: u64,
    /// The hash of the stream's configuration.
    pub config_hash: String,
    /// Requests applied so far.
    pub step: usize,
    /// `original`, `unlearnrec`, `retrain` (exact, on the union of the requests so far) or
    /// `retrain-seed2` (the same with the next training seed: the noise floor).
    pub method: String,
    /// Edges removed so far.
    pub edges: usize,
    /// Recall@20 on the tracked split.
    pub recall: f64,
    /// NDCG@20 on the tracked split.
    pub ndcg: f64,
    /// Mean score of every edge removed so far.
    pub removed_score: f64,
    /// Mean score of a fixed sample of non-edges.
    pub non_edge_score: f64,
    /// MI-NG of all removed edges so far.
    pub mi_ng: f64,
    /// The audit's strongest membership attacker: the share of the removed edges it calls members.
    pub members: f64,
    /// The same attacker's AUC on training edges against held-out edges.
    pub mia_auc: f64,
    /// Median rank of the removed items among their users' unseen items.
    pub median_rank: f64,
    /// Top-20 agreement with the exact retrain on the same union.
    pub agreement_top20: f64,
    /// `spam`: the share of real users whose top 20 holds a target item.
    pub exposure_share: f64,
    /// `spam`: the targets' mean rank among real users.
    pub exposure_rank: f64,
    /// Consolidations so far (exact retrain and a new unlearner: a new anchor).
    pub consolidations: usize,
    /// Seconds of this step (the request, with a consolidation it triggered; or the retrain).
    pub secs: f64,
    /// Seconds of the stream so far (requests and consolidations), for `unlearnrec` rows.
    pub total_secs: f64,
}

impl StreamRow {
    /// A row of the stream `key` (dataset, model, scenario, seed, hash) with every figure NaN.
    pub fn empty(dataset: &str, model: &str, scenario: &str, seed: u64, config_hash: &str) -> Self {
        Self {
            dataset: dataset.into(),
            model: model.into(),
            scenario: scenario.into(),
            seed,
            config_hash: config_hash.into(),
            step: 0,
            method: String::new(),
            edges: 0,
            recall: f64::NAN,
            ndcg: f64::NAN,
            removed_score: f64::NAN,
            non_edge_score: f64::NAN,
            mi_ng: f64::NAN,
            members: f64::NAN,
            mia_auc: f64::NAN,
            median_rank: f64::NAN,
            agreement_top20: f64::NAN,
            exposure_share: f64::NAN,
            exposure_rank: f64::NAN,
            consolidations: 0,
            secs: f64::NAN,
            total_secs: f64::NAN,
        }
    }

    /// Whether two rows belong to the same stream.
    pub fn same_stream(&self, other: &StreamRow) -> bool {
        (&self.dataset, &self.model, &self.scenario, self.seed)
            == (&other.dataset, &other.model, &other.scenario, other.seed)
    }
}

const STREAM_HEADER: &[&str] = &[
    "dataset",
    "model",
    "scenario",
    "seed",
    "config_hash",
    "step",
    "method",
    "edges",
    "recall@20",
    "ndcg@20",
    "removed_score",
    "non_edge_score",
    "mi_ng",
    "removed_called_members",
    "mia_auc",
    "removed_median_rank",
    "agreement_top20",
    "exposure_share",
    "exposure_mean_rank",
    "consolidations",
    "secs",
    "total_secs",
];

/// `stream.csv`'s text.
pub fn stream_csv(rows: &[StreamRow]) -> String {
    let header: Vec<String> = STREAM_HEADER.iter().map(|s| s.to_string()).collect();
    let records: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.dataset.clone(),
                r.model.clone(),
                r.scenario.clone(),
                r.seed.to_string(),
                r.config_hash.clone(),
                r.step.to_string(),
                r.method.clone(),
                r.edges.to_string(),
                number(r.recall),
                number(r.ndcg),
                number(r.removed_score),
                number(r.non_edge_score),
                number(r.mi_ng),
                number(r.members),
                number(r.mia_auc),
                number(r.median_rank),
                number(r.agreement_top20),
                number(r.exposure_share),
                number(r.exposure_rank),
                r.consolidations.to_string(),
                number(r.secs),
                number(r.total_secs),
            ]
        })
        .collect();
    to_csv(&header, &records)
}

/// Reads a `stream.csv`; an absent file is no rows.
///
/// # Errors
/// [`Error::Io`]; [`Error::Format`] for another header (a file of an older build: move it away) or a
/// malformed number.
pub fn read_stream(path: &Path) -> Result<Vec<StreamRow>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let (header, records) = parse_csv(&text, path)?;
    if header != STREAM_HEADER {
        return Err(Error::format(
            path,
            1,
            format!("expected the header {} (a stream.csv of an older build?)", STREAM_HEADER.join(",")),
        ));
    }
    records
        .iter()
        .enumerate()
        .map(|(n, r)| {
            let bad = || Error::format(path, n + 2, "malformed number");
            let f = |k: usize| if r[k].is_empty() { Ok(f64::NAN) } else { r[k].parse::<f64>().map_err(|_| bad()) };
            Ok(StreamRow {
                dataset: r[0].clone(),
                model: r[1].clone(),
                scenario: r[2].clone(),
                seed: r[3].parse().map_err(|_| bad())?,
                config_hash: r[4].clone(),
                step: r[5].parse().map_err(|_| bad())?,
                method: r[6].clone(),
                edges: r[7].parse().map_err(|_| bad())?,
                recall: f(8)?,
                ndcg: f(9)?,
                removed_score: f(10)?,
                non_edge_score: f(11)?,
                mi_ng: f(12)?,
                members: f(13)?,
                mia_auc: f(14)?,
                median_rank: f(15)?,
                agreement_top20: f(16)?,
                exposure_share: f(17)?,
                exposure_rank: f(18)?,
                consolidations: r[19].parse().map_err(|_| bad())?,
                secs: f(20)?,
                total_secs: f(21)?,
            })
        })
        .collect()
}

/// `stream.md`: per stream, the last measurement (UnlearnRec against the exact retrain on the union of
/// all its requests and the second-seed retrain), the per-request latency and the stream's cost against
/// retraining.
pub fn stream_markdown(rows: &[StreamRow]) -> String {
    let mut out = String::from(
        "| dataset | model | scenario | seed | requests | edges | Recall@20 (retrain, seed 2) | ratio | \
         members (retrain, seed 2) | median rank (retrain) | top-20 agreement (seed 2) | exposure (retrain) | \
         latency p50 / p95 s | consolidations | stream s | retrain s | × one retrain | × retrain per request |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let mut seen: Vec<&StreamRow> = Vec::new();
    for r in rows {
        if seen.iter().any(|s| s.same_stream(r)) {
            continue;
        }
        seen.push(r);
        let mine: Vec<StreamRow> = rows.iter().filter(|x| x.same_stream(r)).cloned().collect();
        let last = mine.iter().map(|x| x.step).max().unwrap_or(0);
        let at = |m: &str| mine.iter().find(|x| x.step == last && x.method == m);
        let (Some(u), Some(re)) = (at("unlearnrec"), at("retrain")) else { continue };
        let s2 = at("retrain-seed2");
        let f = |v: f64, d: usize| if v.is_finite() { format!("{v:.d$}") } else { "–".into() };
        let pair = |a: f64, b: f64, c: Option<f64>, d: usize| match c {
            Some(c) => format!("{} ({}, {})", f(a, d), f(b, d), f(c, d)),
            None => format!("{} ({})", f(a, d), f(b, d)),
        };
        let retrain_secs = re.secs;
        let rank = format!("{} ({})", f(u.median_rank, 0), f(re.median_rank, 0));
        let agreement = format!("{} ({})", f(u.agreement_top20, 3), f(s2.map_or(f64::NAN, |x| x.agreement_top20), 3));
        let exposure = format!("{} ({})", f(u.exposure_share, 3), f(re.exposure_share, 3));
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {} | {} | {} | {} | {} |\n",
            r.dataset,
            r.model,
            r.scenario,
            r.seed,
            last,
            u.edges,
            pair(u.recall, re.recall, s2.map(|x| x.recall), 4),
            f(u.recall / re.recall, 3),
            pair(u.members, re.members, s2.map(|x| x.members), 3),
            rank,
            agreement,
            exposure,
            f(latency_quantile(&mine, 0.5), 2),
            f(latency_quantile(&mine, 0.95), 2),
            u.consolidations,
            f(u.total_secs, 1),
            f(retrain_secs, 1),
            f(retrain_secs / u.total_secs, 1),
            f(last as f64 * retrain_secs / u.total_secs, 0),
        ));
    }
    out
}

/// The latency quantile `q` (in [0, 1], nearest rank) of the `unlearnrec` requests of a stream's rows.
pub fn latency_quantile(rows: &[StreamRow], q: f64) -> f64 {
    let mut secs: Vec<f64> =
        rows.iter().filter(|r| r.method == "unlearnrec" && r.secs.is_finite()).map(|r| r.secs).collect();
    if secs.is_empty() {
        return f64::NAN;
    }
    secs.sort_by(f64::total_cmp);
    let k = ((q * secs.len() as f64).ceil() as usize).clamp(1, secs.len());
    secs[k - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(method: &str, seed: u64, recall: f64, secs: f64) -> ResultRow {
        ResultRow {
            dataset: "ml, 100k".into(),
            model: "lightgcn".into(),
            protocol: "random".into(),
            fraction: Some(0.01),
            method: method.into(),
            seed,
            config_hash: format!("h{seed}"),
            metrics: BTreeMap::from([("recall@20".to_string(), recall), ("unlearn_secs".to_string(), secs)]),
        }
    }

    #[test]
    fn mean_and_sample_std() {
        assert_eq!(mean_std(&[1.0, 2.0, 3.0]), (2.0, 1.0));
        assert_eq!(mean_std(&[4.0]), (4.0, 0.0));
        assert_eq!(mean_std(&[2.0, f64::NAN, 4.0]), (3.0, 2f64.sqrt()));
        assert!(mean_std(&[]).0.is_nan());
    }

    #[test]
    fn aggregation_groups_by_method_over_seeds() {
        let mut rows = vec![
            row("retrain", 1, 0.30, 10.0),
            row("unlearnrec", 1, 0.27, 1.0),
            row("retrain", 2, 0.32, 12.0),
            row("unlearnrec", 2, 0.29, 3.0),
        ];
        let mut other = row("unlearnrec", 1, 0.5, 1.0);
        other.protocol = "users".into();
        rows.push(other);
        let s = aggregate(&rows);
        assert_eq!(s.len(), 3);
        assert_eq!((s[0].method.as_str(), s[0].seeds), ("retrain", 2));
        let (m, sd) = s[0].stats["recall@20"];
        assert!((m - 0.31).abs() < 1e-12 && (sd - 0.02 / 2f64.sqrt()).abs() < 1e-12, "{m} {sd}");
        assert_eq!(s[1].stats["unlearn_secs"], (2.0, 2f64.sqrt()));
        assert_eq!((s[2].protocol.as_str(), s[2].seeds, s[2].stats["unlearn_secs"]), ("users", 1, (1.0, 0.0)));
        let md = markdown(&s);
        let lines: Vec<&str> = md.lines().collect();
        assert_eq!(lines.len(), 5, "{md}");
        assert!(lines[2].contains("| retrain | 2 |") && lines[2].contains("0.3100 ± 0.0141"), "{md}");
        // × retrain: 0.28 / 0.31.
        assert!(lines[3].contains("| 0.903 |") && lines[3].contains("2.000 ± 1.414"), "{md}");
        assert!(lines[4].contains("| users |") && lines[4].contains("| 0.5000 |") && lines[4].contains("| – |"));
        assert!(!lines[0].contains("MIA"));
    }

    #[test]
    fn audit_columns_reach_the_table() {
        let mut rows = vec![row("retrain", 1, 0.3, 10.0), row("retrain-seed2", 1, 0.29, 11.0)];
        for (r, agreement) in rows.iter_mut().zip([1.0, 0.8]) {
            for (k, v) in [
                ("mia_auc", 0.61),
                ("removed_called_members", 0.4),
                ("removed_vs_held_out_auc", 0.55),
                ("removed_median_rank", 7.5),
                ("agreement_top20", agreement),
                ("removed_vs_held_out_auc_gbt_difference", 0.55),
            ] {
                r.metrics.insert(k.into(), v);
            }
        }
        let md = markdown(&aggregate(&rows));
        let lines: Vec<&str> = md.lines().collect();
        assert!(lines[0].contains("| removed vs held-out AUC | removed median rank |"), "{md}");
        assert_eq!(lines[0].matches('|').count(), lines[1].matches('|').count(), "{md}");
        assert_eq!(lines[0].matches('|').count(), lines[3].matches('|').count(), "{md}");
        assert!(
            lines[3].contains("| retrain-seed2 |") && lines[3].ends_with("| 0.610 | 0.400 | 0.550 | 7.5 | 0.800 |")
        );
        // The per-attacker columns follow the fixed ones in results.csv.
        let csv = results_csv(&rows);
        let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
        assert_eq!(header.last(), Some(&"removed_vs_held_out_auc_gbt_difference"), "{csv}");
    }

    #[test]
    fn results_round_trip_through_csv() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.csv");
        let mut rows = vec![row("retrain", 1, 0.3, 10.0), row("unlearnrec", 2, 0.1 + 0.2, 1e-3)];
        rows[1].fraction = None;
        rows[1].metrics.insert("custom".into(), -2.5);
        write_results(&path, &rows).unwrap();
        assert_eq!(read_results(&path).unwrap(), rows);
        assert!(read_results(&dir.path().join("absent.csv")).unwrap().is_empty());
        std::fs::write(&path, "dataset,model\nx\n").unwrap();
        assert!(read_results(&path).is_err());
    }

    #[test]
    fn csv_quotes_and_rejects_ragged_records() {
        let header = vec!["a".to_string(), "b".to_string()];
        let rows = vec![vec!["x,\"y\"".to_string(), "line\nbreak".to_string()]];
        let text = to_csv(&header, &rows);
        assert_eq!(parse_csv(&text, Path::new("t.csv")).unwrap(), (header, rows));
        let err = parse_csv("a,b\n1,2,3\n", Path::new("t.csv")).unwrap_err().to_string();
        assert!(err.contains("t.csv:2") && err.contains("3 fields"), "{err}");
    }
}
