//! Audit metrics of an unlearned model: does it still rank, recognise or agree on what it should forget?
//!
//! All three read final embeddings ([`Embeddings`], score `s(u, i) = e_u · e_i`) and mask each user's
//! **remaining** seen items (training plus validation, after removal), as [`super::evaluate_ranking`] does:
//!
//! * [`rank_report`]: the rank of each removed item in its user's full ranking over the unmasked items,
//!   `rank = 1 + #{j unmasked : s(u, j) > s(u, i)} + ⌊#{j ≠ i unmasked : s(u, j) = s(u, i)} / 2⌋` (a tie
//!   counts half: the expected rank under random tie-breaking, so a user whose scores are all equal, such
//!   as an erased user of a backbone whose final embeddings leave out `E⁰`, ranks items mid-list and not
//!   first; the item's own mask never counts), summarised as mean, median and the fraction still in the top K. A model that forgot
//!   ranks removed items like any unseen item; one that did not keeps them near the top.
//! * [`membership_inference`]: attackers that tell members (a seeded sample of remaining training edges)
//!   from non-members (held-out test edges that are not training edges) by per-pair features
//!   ([`FEATURE_NAMES`]: the score; its rank among the user's unseen items and among all items; its
//!   z-score within the user's scores; `ln(1 + user degree)`, `ln(1 + item popularity)`, degrees
//!   counted before removal) and, when the model before unlearning is given, the *difference* features
//!   ([`DIFFERENCE_FEATURE_NAMES`]: the change of score, ranks and z-score from that model: the
//!   difference attacker of the unlearning literature). Each [`Classifier`] (logistic regression,
//!   gradient-boosted trees) on each feature set is trained on half of a balanced sample and judged on
//!   the other half by its [`auc`]; it is then applied to the removed edges, which count as called
//!   members above the threshold that calls half of the balanced held-out half members (the median of
//!   its probabilities). Every attacker is also given the *distinguishing game*: tell the removed
//!   edges from held-out non-members of the same users, by the same features, judged by a two-fold
//!   cross-validated AUC. The strongest attacker (highest held-out AUC) is the report's headline.
//! * [`agreement`]: between a model and a reference (typically the model retrained without the removed
//!   edges) on a sample of users: the mean overlap `|A ∩ B| / K` of their top-K lists and the mean
//!   `KL(P_ref ‖ P_model)` of the per-user softmax over the unmasked items' scores,
//!   `P(j) = exp(s_j − LSE(s))`, computed in log-sum-exp form as
//!   `Σ_j P_ref(j) (s_ref,j − s_model,j) + LSE(s_model) − LSE(s_ref)`, stable for scores of any size.
//!
//! Scores come from GEMMs (the `gemm` crate) over blocks of [`BLOCK_USERS`] users (one rayon task each), one full
//! `n_items` score row per user and model; nothing of size `n_users × n_items` is materialised.
//!
//! ```
//! use unlearnrec_core::eval::audit::{agreement, rank_report};
//! use unlearnrec_core::graph::Csr;
//! use unlearnrec_core::model::Embeddings;
//!
//! // 1 user, 3 items, dim 1: item scores 3, 2, 1; the user has seen item 0.
//! let emb = Embeddings { dim: 1, users: vec![1.0], items: vec![3.0, 2.0, 1.0] };
//! let seen = Csr::new(3, vec![0, 1], vec![0]);
//! let r = rank_report(&emb, &seen, &[(0, 2)], 1).unwrap();
//! assert_eq!(r.mean_rank, 2.0); // item 1 (unmasked) scores higher; item 0 is masked
//! assert_eq!(r.top_k_fraction, 0.0);
//! let a = agreement(&emb, &emb, &seen, &[0], 1).unwrap();
//! assert_eq!((a.top_k_overlap, a.kl), (1.0, 0.0));
//! ```

use gemm::Parallelism;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand::seq::index::sample;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::Interactions;
use crate::graph::{Csr, Graph};
use crate::model::Embeddings;
use crate::tensor::matmul;
use crate::{Error, Result};

mod attack;

pub use attack::{AttackConfig, Attacker, Classifier, Gbt, Logistic, Node, auc, fraction_above, median};

/// The top-K cut-off of the audit reports unless configured otherwise.
pub const DEFAULT_K: usize = 20;
/// Users per GEMM block and rayon task.
pub const BLOCK_USERS: usize = 64;
/// The attacker's features of one model, in [`pair_features`] order.
pub const FEATURE_NAMES: [&str; 6] = [
    "score",
    "rank_percentile_unseen",
    "rank_percentile_all",
    "user_z_score",
    "log1p_user_degree",
    "log1p_item_popularity",
];
/// The difference attacker's extra features (audited minus original model), in [`pair_features`] order.
pub const DIFFERENCE_FEATURE_NAMES: [&str; 4] =
    ["delta_score", "delta_rank_percentile_unseen", "delta_rank_percentile_all", "delta_user_z_score"];
/// Fewest pairs per class of the distinguishing game (smaller requests report no such AUC).
pub const MIN_GAME_PAIRS: usize = 8;

/// One pair's attacker features: [`FEATURE_NAMES`], then [`DIFFERENCE_FEATURE_NAMES`] when an original
/// model was given.
pub type Features = Vec<f64>;

/// The edge sets an audit of one model reads. All ids are internal.
#[derive(Clone, Copy, Debug)]
pub struct AuditData<'a> {
    /// Items masked in every ranking, per user: the remaining training plus validation items. May have
    /// fewer rows than users (missing rows are empty).
    pub seen: &'a Csr,
    /// The remaining training graph: members are drawn from it, degrees are read from it.
    pub remaining: &'a Graph,
    /// Held-out edges (the test split): non-members, once training and removed edges are dropped.
    pub held_out: &'a Interactions,
    /// The removed (forgotten) edges.
    pub removed: &'a Interactions,
}

/// Ranks of the removed items; see the [module docs](self).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RankReport {
    /// Pairs ranked.
    pub count: usize,
    /// The cut-off K of `top_k_fraction`.
    pub k: usize,
    /// Mean rank (1 = top).
    pub mean_rank: f64,
    /// Median rank (mean of the two middle ranks for an even count).
    pub median_rank: f64,
    /// Fraction of pairs with rank `<= k`.
    pub top_k_fraction: f64,
}

/// An attacker's figures in the membership game; see the [module docs](self).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Membership {
    /// AUC on the held-out half of members vs non-members (0.5: members look like non-members).
    pub auc: f64,
    /// The threshold calling half of the balanced held-out half members (median probability).
    pub threshold: f64,
    /// Fraction of removed edges called members (probability above the threshold, ties half).
    pub removed_member_fraction: f64,
    /// Fraction of held-out non-members called members at the threshold.
    pub non_member_fraction: f64,
    /// Mean probability over the removed edges.
    pub removed_mean_probability: f64,
}

/// What one attacker found; see the [module docs](self).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttackerReport {
    /// `classifier` or `classifier+difference`.
    pub name: String,
    /// The classifier.
    pub classifier: Classifier,
    /// Whether the difference features (against the original model) were used.
    pub difference: bool,
    /// The membership game (model features only: members and non-members barely change from the
    /// original model, so the difference features teach it nothing and it plays only the distinguishing
    /// game).
    pub membership: Option<Membership>,
    /// Two-fold cross-validated AUC of telling removed edges from held-out non-members of the same
    /// users (`None` with fewer than [`MIN_GAME_PAIRS`] per class).
    pub removed_vs_held_out_auc: Option<f64>,
}

/// What [`membership_inference`] found: the strongest attackers' figures as the headline, and every
/// attacker's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MiaReport {
    /// The strongest membership attacker (highest held-out AUC; the first on a tie).
    pub strongest: String,
    /// Its AUC on the held-out half (0.5: members look like non-members).
    pub auc: f64,
    /// Fraction of removed edges it calls members.
    pub removed_member_fraction: f64,
    /// Its mean probability over the removed edges.
    pub removed_mean_probability: f64,
    /// Fraction of the held-out non-members it calls members.
    pub non_member_fraction: f64,
    /// The strongest distinguisher (highest removed-vs-held-out AUC), when the game was played.
    pub strongest_distinguisher: Option<String>,
    /// Its AUC: how well the removed edges are told from held-out non-members of the same users.
    pub removed_vs_held_out_auc: Option<f64>,
    /// Every attacker.
    pub attackers: Vec<AttackerReport>,
    /// Attacker-training pairs (members plus non-members).
    pub n_train: usize,
    /// Attacker-test pairs (members plus non-members).
    pub n_test: usize,
    /// Removed edges scored.
    pub n_removed: usize,
    /// Held-out non-members (and as many removed edges) in the distinguishing game.
    pub n_game: usize,
}

/// Which users [`agreement_users`] draws from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgreementUsers {
    /// Users with at least one removed edge.
    #[default]
    Removed,
    /// Every user.
    All,
}

/// Agreement between a model and a reference; see the [module docs](self).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgreementReport {
    /// Users compared (those with at least one unmasked item).
    pub users: usize,
    /// The cut-off K.
    pub k: usize,
    /// Mean `|A ∩ B| / K` of the two top-K lists (K capped at the user's unmasked items).
    pub top_k_overlap: f64,
    /// Mean `KL(P_ref ‖ P_model)` in nats.
    pub kl: f64,
}

fn check_emb(emb: &Embeddings) -> Result<(usize, usize)> {
    let d = emb.dim;
    if d == 0 {
        return Err(Error::config("dim", "must be at least 1"));
    }
    for (op, v) in [("user embeddings", &emb.users), ("item embeddings", &emb.items)] {
        if v.len() % d != 0 {
            return Err(Error::Shape {
                op,
                expected: format!("a multiple of dim = {d} values"),
                got: format!("{} values", v.len()),
            });
        }
    }
    Ok((emb.users.len() / d, emb.items.len() / d))
}

fn check_seen(seen: &Csr, n_users: usize, n_items: usize) -> Result<()> {
    if seen.n_rows() > n_users || seen.n_cols() > n_items {
        return Err(Error::Shape {
            op: "seen items",
            expected: format!("at most {n_users} × {n_items} (users × items)"),
            got: format!("{} × {}", seen.n_rows(), seen.n_cols()),
        });
    }
    Ok(())
}

fn check_pairs(pairs: &[(u32, u32)], n_users: usize, n_items: usize) -> Result<()> {
    for &(u, i) in pairs {
        if u as usize >= n_users {
            return Err(Error::IdOutOfRange { kind: "user", id: u.into(), n: n_users });
        }
        if i as usize >= n_items {
            return Err(Error::IdOutOfRange { kind: "item", id: i.into(), n: n_items });
        }
    }
    Ok(())
}

fn seen_row(seen: &Csr, u: u32) -> &[u32] {
    if (u as usize) < seen.n_rows() { seen.row(u as usize) } else { &[] }
}

/// Calls `f(user, rows)` for every user of `users`, in order, where `rows[m]` is the user's full score
/// row (`n_items` f32) under `models[m]`; parallel over blocks of [`BLOCK_USERS`] users. The models must
/// be checked and have the same number of items.
pub(crate) fn for_rows<T, F>(models: &[&Embeddings], n_items: usize, users: &[u32], f: F) -> Vec<T>
where
    T: Send,
    F: Fn(u32, &[&[f32]]) -> T + Sync,
{
    users
        .par_chunks(BLOCK_USERS)
        .map_init(
            || (vec![Vec::<f32>::new(); models.len()], vec![Vec::<f32>::new(); models.len()]),
            |(ubufs, sbufs), block| {
                let bn = block.len();
                for ((emb, ub), sb) in models.iter().zip(ubufs.iter_mut()).zip(sbufs.iter_mut()) {
                    let d = emb.dim;
                    ub.clear();
                    for &u in block {
                        ub.extend_from_slice(&emb.users[u as usize * d..(u as usize + 1) * d]);
                    }
                    sb.resize(n_items * bn, 0.0);
                    // (bn × n_items) row-major = U_block (bn × d) · Iᵀ (d × n_items); row r = user r.
                    let (dst, us, items) = (&mut sb[..n_items * bn], &ub[..bn * d], &emb.items[..n_items * d]);
                    matmul((dst, n_items, 1), (us, d, 1), (items, 1, d), (bn, n_items, d), 1.0, Parallelism::None);
                }
                let mut rows: Vec<&[f32]> = Vec::with_capacity(models.len());
                block
                    .iter()
                    .enumerate()
                    .map(|(r, &u)| {
                        rows.clear();
                        rows.extend(sbufs.iter().map(|sb| &sb[r * n_items..(r + 1) * n_items]));
                        f(u, &rows)
                    })
                    .collect::<Vec<T>>()
            },
        )
        .collect::<Vec<Vec<T>>>()
        .into_iter()
        .flatten()
        .collect()
}

/// Score, ranks and the user's score statistics of one pair.
#[derive(Clone, Copy, Debug)]
struct PairRank {
    score: f32,
    /// Rank among the unmasked items.
    rank: usize,
    /// Unmasked items.
    candidates: usize,
    /// Rank among all items.
    rank_all: usize,
    /// `(s − mean) / std` over the user's whole score row.
    z: f64,
}

/// Above this many pairs of one user, ranks come from a sorted copy of the row instead of a scan each.
const SORT_ABOVE: usize = 16;

/// The scores of `row` outside the sorted `masked` columns (NaN dropped), in column order.
fn unmasked(row: &[f32], masked: &[u32]) -> Vec<f32> {
    let mut m = masked.iter().peekable();
    let mut open: Vec<f32> = Vec::with_capacity(row.len() - masked.len().min(row.len()));
    for (j, &s) in row.iter().enumerate() {
        if m.next_if(|&&x| x as usize == j).is_none() && !s.is_nan() {
            open.push(s);
        }
    }
    open
}

/// [`unmasked`], highest first.
fn unmasked_sorted(row: &[f32], masked: &[u32]) -> Vec<f32> {
    let mut open = unmasked(row, masked);
    open.sort_unstable_by(|a, b| b.total_cmp(a));
    open
}

fn rank_pairs(emb: &Embeddings, seen: &Csr, pairs: &[(u32, u32)]) -> Result<Vec<PairRank>> {
    let (n_users, n_items) = check_emb(emb)?;
    check_seen(seen, n_users, n_items)?;
    check_pairs(pairs, n_users, n_items)?;
    // Pair indices grouped by user; `users[k]`'s pairs are `order[starts[k]..starts[k + 1]]`.
    let mut order: Vec<usize> = (0..pairs.len()).collect();
    order.sort_by_key(|&j| pairs[j].0);
    let (mut users, mut starts) = (Vec::new(), Vec::new());
    for (pos, &j) in order.iter().enumerate() {
        if users.last() != Some(&pairs[j].0) {
            users.push(pairs[j].0);
            starts.push(pos);
        }
    }
    starts.push(order.len());
    let per_user = for_rows(&[emb], n_items, &users, |u, rows| {
        let row = rows[0];
        let masked = seen_row(seen, u);
        let candidates = n_items - masked.len();
        let k = users.binary_search(&u).expect("a user of the list");
        let mine = &order[starts[k]..starts[k + 1]];
        let (sum, sq) = row.iter().filter(|x| x.is_finite()).fold((0f64, 0f64), |(a, b), &x| {
            let x = x as f64;
            (a + x, b + x * x)
        });
        let mean = sum / n_items as f64;
        let std = (sq / n_items as f64 - mean * mean).max(0.0).sqrt().max(1e-12);
        // Items scoring above `s` plus half of those tying with it: (unmasked, masked), each as
        // (higher, equal) counts, the item itself among the equal ones.
        type Counts = ((usize, usize), (usize, usize));
        let higher: Box<dyn Fn(f32) -> Counts> = if mine.len() > SORT_ABOVE {
            let open = unmasked_sorted(row, masked);
            Box::new(move |s| {
                let mh = masked.iter().filter(|&&j| row[j as usize] > s).count();
                let me = masked.iter().filter(|&&j| row[j as usize] == s).count();
                let (gt, ge) = (open.partition_point(|&x| x > s), open.partition_point(|&x| x >= s));
                ((gt, ge - gt), (mh, me))
            })
        } else {
            Box::new(|s| {
                let (all_gt, all_eq) =
                    row.iter().fold((0, 0), |(g, e), &x| (g + (x > s) as usize, e + (x == s) as usize));
                let mh = masked.iter().filter(|&&j| row[j as usize] > s).count();
                let me = masked.iter().filter(|&&j| row[j as usize] == s).count();
                ((all_gt - mh, all_eq - me), (mh, me))
            })
        };
        mine.iter()
            .map(|&j| {
                let item = pairs[j].1;
                let score = row[item as usize];
                let ((gt, mut eq), (hgt, heq)) = higher(score);
                // The item's own score is among the equal ones of its side (a NaN score equals nothing).
                let own_masked = masked.binary_search(&item).is_ok();
                if !own_masked && !score.is_nan() {
                    eq -= 1;
                }
                let heq_others = if own_masked && !score.is_nan() { heq - 1 } else { heq };
                let open = gt + eq / 2;
                let hidden = hgt + heq_others / 2;
                let z = (score as f64 - mean) / std;
                (j, PairRank { score, rank: 1 + open, candidates, rank_all: 1 + open + hidden, z })
            })
            .collect::<Vec<_>>()
    });
    let mut out = vec![PairRank { score: 0.0, rank: 0, candidates: 0, rank_all: 0, z: 0.0 }; pairs.len()];
    for (j, r) in per_user.into_iter().flatten() {
        out[j] = r;
    }
    Ok(out)
}

/// The rank (1 = top) of each pair's item in its user's full ranking over the items not in `seen`, in
/// input order: `1 + #{j ∉ seen(u) : s(u, j) > s(u, i)}` plus half (rounded down) of the other such items
/// scoring exactly the same. The item need not be unmasked itself. NaN scores never count as higher.
///
/// # Errors
/// [`Error::IdOutOfRange`] for a pair outside the embeddings; [`Error::Shape`] for a `seen` wider than
/// the item table or with more rows than users, or tables that are not a multiple of `dim` long.
pub fn pair_ranks(emb: &Embeddings, seen: &Csr, pairs: &[(u32, u32)]) -> Result<Vec<usize>> {
    Ok(rank_pairs(emb, seen, pairs)?.into_iter().map(|r| r.rank).collect())
}

/// The rank percentile `(rank − 1) / #unmasked` of each pair (see [`pair_ranks`]), in input order: 0 for
/// the user's top unseen item, near 1 for the bottom one.
///
/// # Errors
/// As [`pair_ranks`].
pub fn pair_percentiles(emb: &Embeddings, seen: &Csr, pairs: &[(u32, u32)]) -> Result<Vec<f64>> {
    Ok(rank_pairs(emb, seen, pairs)?.into_iter().map(|r| (r.rank - 1) as f64 / r.candidates.max(1) as f64).collect())
}

/// For each `(user, q)` with `q` in `[0, 1]`, the score found at rank percentile `q` of the user's items
/// not in `seen` (the `⌊q · #unmasked⌋`-th highest, clamped), in input order; 0 for a user with no
/// unmasked item. The inverse of [`pair_percentiles`] up to ties.
///
/// # Errors
/// As [`pair_ranks`] (users are checked; no item is read).
pub fn scores_at_percentiles(emb: &Embeddings, seen: &Csr, targets: &[(u32, f64)]) -> Result<Vec<f32>> {
    let (n_users, n_items) = check_emb(emb)?;
    check_seen(seen, n_users, n_items)?;
    if let Some(&(u, _)) = targets.iter().find(|&&(u, _)| u as usize >= n_users) {
        return Err(Error::IdOutOfRange { kind: "user", id: u.into(), n: n_users });
    }
    let mut order: Vec<usize> = (0..targets.len()).collect();
    order.sort_by_key(|&j| targets[j].0);
    let mut users: Vec<u32> = order.iter().map(|&j| targets[j].0).collect();
    users.dedup();
    let per_user = for_rows(&[emb], n_items, &users, |u, rows| {
        let lo = order.partition_point(|&j| targets[j].0 < u);
        let hi = order.partition_point(|&j| targets[j].0 <= u);
        // Each target's position in the user's unseen scores, highest first.
        let mut open = unmasked(rows[0], seen_row(seen, u));
        let n = open.len();
        let mut at: Vec<(usize, usize)> = order[lo..hi]
            .iter()
            .map(|&j| ((targets[j].1.clamp(0.0, 1.0) * n as f64 + 1e-9) as usize, j))
            .map(|(k, j)| (k.min(n.saturating_sub(1)), j))
            .collect();
        at.sort_unstable();
        if n == 0 {
            return at.into_iter().map(|(_, j)| (j, 0.0)).collect::<Vec<_>>();
        }
        let desc = |a: &f32, b: &f32| b.total_cmp(a);
        if at.len() > SORT_ABOVE {
            open.sort_unstable_by(desc);
        } else {
            // Order statistics by selection (a catalogue-sized sort per user does not scale): each select
            // leaves the larger scores before its position, so the next one searches only the rest.
            let mut base = 0;
            for &(k, _) in &at {
                if k >= base {
                    open[base..].select_nth_unstable_by(k - base, desc);
                    base = k + 1;
                }
            }
        }
        at.into_iter().map(|(k, j)| (j, open[k])).collect::<Vec<_>>()
    });
    let mut out = vec![0f32; targets.len()];
    for (j, s) in per_user.into_iter().flatten() {
        out[j] = s;
    }
    Ok(out)
}

/// Mean, median and top-`k` fraction of [`pair_ranks`] over `pairs`.
///
/// # Errors
/// As [`pair_ranks`]; [`Error::InvalidConfig`] for `k = 0`; [`Error::InvalidRequest`] for no pairs.
pub fn rank_report(emb: &Embeddings, seen: &Csr, pairs: &[(u32, u32)], k: usize) -> Result<RankReport> {
    if k == 0 {
        return Err(Error::config("k", "must be at least 1"));
    }
    if pairs.is_empty() {
        return Err(Error::InvalidRequest("no removed pairs to rank".into()));
    }
    let mut ranks = pair_ranks(emb, seen, pairs)?;
    ranks.sort_unstable();
    let n = ranks.len();
    let median = if n % 2 == 1 { ranks[n / 2] as f64 } else { (ranks[n / 2 - 1] + ranks[n / 2]) as f64 / 2.0 };
    Ok(RankReport {
        count: n,
        k,
        mean_rank: ranks.iter().map(|&r| r as f64).sum::<f64>() / n as f64,
        median_rank: median,
        top_k_fraction: ranks.iter().filter(|&&r| r <= k).count() as f64 / n as f64,
    })
}

fn check_same_shape(a: &Embeddings, b: &Embeddings, what: &'static str) -> Result<(usize, usize)> {
    let (nu, ni) = check_emb(a)?;
    let (ru, ri) = check_emb(b)?;
    if (nu, ni) != (ru, ri) {
        return Err(Error::Shape {
            op: what,
            expected: format!("{nu} users × {ni} items (the audited model)"),
            got: format!("{ru} users × {ri} items"),
        });
    }
    Ok((nu, ni))
}

/// The attacker [`Features`] of each pair, in input order, with degrees read from `degrees`; with
/// `original`, the [`DIFFERENCE_FEATURE_NAMES`] follow (the original ranked with the same `seen`).
///
/// # Errors
/// As [`pair_ranks`]; [`Error::Shape`] when `degrees` or `original` have other sizes than `emb`.
pub fn pair_features(
    emb: &Embeddings,
    original: Option<&Embeddings>,
    seen: &Csr,
    degrees: &Graph,
    pairs: &[(u32, u32)],
) -> Result<Vec<Features>> {
    let (n_users, n_items) = check_emb(emb)?;
    if degrees.n_users() != n_users || degrees.n_items() != n_items {
        return Err(Error::Shape {
            op: "audit degrees",
            expected: format!("{n_users} × {n_items} (users × items)"),
            got: format!("{} × {}", degrees.n_users(), degrees.n_items()),
        });
    }
    let of = |r: &PairRank| {
        [
            r.score as f64,
            (r.rank - 1) as f64 / r.candidates.max(1) as f64,
            (r.rank_all - 1) as f64 / n_items.max(1) as f64,
            r.z,
        ]
    };
    let ranks = rank_pairs(emb, seen, pairs)?;
    let before = match original {
        Some(o) => {
            check_same_shape(emb, o, "original model")?;
            Some(rank_pairs(o, seen, pairs)?)
        }
        None => None,
    };
    Ok(pairs
        .iter()
        .zip(&ranks)
        .enumerate()
        .map(|(j, (&(u, i), r))| {
            let mine = of(r);
            let mut x = mine.to_vec();
            x.push((degrees.user_degree(u as usize) as f64).ln_1p());
            x.push((degrees.item_degree(i as usize) as f64).ln_1p());
            if let Some(b) = &before {
                let theirs = of(&b[j]);
                x.extend(mine.iter().zip(theirs).map(|(a, b)| a - b));
            }
            x
        })
        .collect())
}

/// Draws `n` indices of `0..len` with `rng`, in a seeded random order.
fn draw(rng: &mut ChaCha8Rng, len: usize, n: usize) -> Vec<usize> {
    let mut idx = sample(rng, len, n).into_vec();
    idx.shuffle(rng);
    idx
}

/// The first `k` features of each row: the model's own features, or those and the difference features.
fn prefix(x: &[Features], k: usize) -> Vec<Features> {
    x.iter().map(|r| r[..k].to_vec()).collect()
}

/// The two-fold cross-validated AUC of `kind` telling `pos` from `neg` (each in a random order).
fn two_fold_auc(kind: Classifier, pos: &[Features], neg: &[Features], cfg: &AttackConfig) -> Result<f64> {
    let (hp, hn) = (pos.len() / 2, neg.len() / 2);
    let (mut sp, mut sn) = (Vec::new(), Vec::new());
    for (train_p, train_n, test_p, test_n) in
        [(&pos[..hp], &neg[..hn], &pos[hp..], &neg[hn..]), (&pos[hp..], &neg[hn..], &pos[..hp], &neg[..hn])]
    {
        let a = Attacker::fit(kind, train_p, train_n, cfg)?;
        sp.extend(a.probabilities(test_p));
        sn.extend(a.probabilities(test_n));
    }
    Ok(auc(&sp, &sn))
}

/// Trains the attackers on `emb` (with the difference features when `original` is given) and reports
/// them (see the [module docs](self)).
///
/// Members: `min(|remaining|, |non-members|, cfg.max_pairs_per_class)` training edges of `data.remaining`
/// drawn with `seed`; non-members: as many held-out pairs that are neither remaining nor removed edges.
/// Each class is split in halves (seeded); every attacker is fitted on the first halves, its AUC and
/// its threshold (the median probability) measured on the second, and it is applied to every removed
/// edge. The distinguishing game pits the removed edges (at most `max_pairs_per_class`) against as many
/// held-out non-members of the request's users (of all users when those are fewer than
/// [`MIN_GAME_PAIRS`]). The degree features are read from `remaining ∪ removed`, the graph before
/// removal, so that a removed edge differs from a member only through the model, not through the
/// degree its user or item lost (a wholly removed user would otherwise be recognised by its degree 0).
///
/// # Errors
/// [`Error::InvalidRequest`] with fewer than two members or non-members, or no removed edges;
/// [`Error::IdOutOfRange`] for a removed edge outside the graph; the errors of [`pair_features`] and
/// [`Attacker::fit`].
pub fn membership_inference(
    emb: &Embeddings,
    original: Option<&Embeddings>,
    data: &AuditData<'_>,
    cfg: &AttackConfig,
    seed: u64,
) -> Result<MiaReport> {
    cfg.validate()?;
    let members = data.remaining.to_interactions();
    let non: Vec<(u32, u32)> = data
        .held_out
        .iter()
        .filter(|&(u, i)| {
            let (nu, ni) = (data.remaining.n_users(), data.remaining.n_items());
            let training = (u as usize) < nu && (i as usize) < ni && data.remaining.contains(u, i);
            !training && !data.removed.contains(u, i)
        })
        .collect();
    let n = members.len().min(non.len()).min(cfg.max_pairs_per_class);
    if n < 2 {
        return Err(Error::InvalidRequest(format!(
            "membership inference needs at least 2 members and 2 held-out non-members, found {} and {}",
            members.len(),
            non.len()
        )));
    }
    if data.removed.is_empty() {
        return Err(Error::InvalidRequest("no removed pairs to attack".into()));
    }
    let removed_all: Vec<(u32, u32)> = data.removed.iter().collect();
    check_pairs(&removed_all, data.remaining.n_users(), data.remaining.n_items())?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let member_pairs: Vec<(u32, u32)> =
        draw(&mut rng, members.len(), n).into_iter().map(|j| (members.users()[j], members.items()[j])).collect();
    let non_pairs: Vec<(u32, u32)> = draw(&mut rng, non.len(), n).into_iter().map(|j| non[j]).collect();
    // The distinguishing game: removed edges against held-out non-members of the same users.
    // (Indices into the removed edges, whose features are computed once.)
    let game_removed: Vec<usize> = if removed_all.len() > cfg.max_pairs_per_class {
        draw(&mut rng, removed_all.len(), cfg.max_pairs_per_class)
    } else {
        let mut r: Vec<usize> = (0..removed_all.len()).collect();
        r.shuffle(&mut rng);
        r
    };
    let same_user: Vec<(u32, u32)> =
        non.iter().copied().filter(|&(u, _)| data.removed.users().binary_search(&u).is_ok()).collect();
    let pool = if same_user.len() >= MIN_GAME_PAIRS { &same_user } else { &non };
    let n_game = game_removed.len().min(pool.len());
    let game_non: Vec<(u32, u32)> = draw(&mut rng, pool.len(), n_game).into_iter().map(|j| pool[j]).collect();
    // Degrees before removal: a removed edge must not give itself away by its user's or item's lost degree.
    let degrees = data.remaining.add(data.removed);
    let mut pairs = member_pairs;
    pairs.extend(&non_pairs);
    pairs.extend(&removed_all);
    pairs.extend(&game_non);
    let feats = pair_features(emb, original, data.seen, &degrees, &pairs)?;
    let (m, rest) = feats.split_at(n);
    let (nm, rest) = rest.split_at(n);
    let (removed, g_neg) = rest.split_at(removed_all.len());
    let g_pos: Vec<Features> = game_removed[..n_game].iter().map(|&j| removed[j].clone()).collect();
    let half = n / 2;
    // The model's own features; with an original, also all of them (the difference attackers).
    let mut sets = vec![(false, FEATURE_NAMES.len())];
    if original.is_some() {
        sets.push((true, FEATURE_NAMES.len() + DIFFERENCE_FEATURE_NAMES.len()));
    }
    let mut attackers = Vec::new();
    for &(difference, k) in &sets {
        let (mtr, mte, ntr, nte) =
            (prefix(&m[..half], k), prefix(&m[half..], k), prefix(&nm[..half], k), prefix(&nm[half..], k));
        let (rem, gp, gn) = (prefix(removed, k), prefix(&g_pos, k), prefix(g_neg, k));
        for &kind in &cfg.classifiers {
            let membership = if difference {
                None
            } else {
                let attacker = Attacker::fit(kind, &mtr, &ntr, cfg)?;
                let (pm, pn) = (attacker.probabilities(&mte), attacker.probabilities(&nte));
                let pr = attacker.probabilities(&rem);
                let threshold = median(&[pm.as_slice(), pn.as_slice()].concat());
                Some(Membership {
                    auc: auc(&pm, &pn),
                    threshold,
                    removed_member_fraction: fraction_above(&pr, threshold),
                    non_member_fraction: fraction_above(&pn, threshold),
                    removed_mean_probability: pr.iter().sum::<f64>() / pr.len() as f64,
                })
            };
            let game = if n_game >= MIN_GAME_PAIRS { Some(two_fold_auc(kind, &gp, &gn, cfg)?) } else { None };
            attackers.push(AttackerReport {
                name: if difference { format!("{}+difference", kind.name()) } else { kind.name().to_string() },
                classifier: kind,
                difference,
                membership,
                removed_vs_held_out_auc: game,
            });
        }
    }
    // The first attacker with the highest AUC of each game.
    let mut strongest: Option<(&str, &Membership)> = None;
    let mut distinguisher: Option<(&str, f64)> = None;
    for a in &attackers {
        if let Some(m) = &a.membership
            && strongest.is_none_or(|(_, s)| m.auc > s.auc)
        {
            strongest = Some((&a.name, m));
        }
        if let Some(g) = a.removed_vs_held_out_auc
            && distinguisher.is_none_or(|(_, d)| g > d)
        {
            distinguisher = Some((&a.name, g));
        }
    }
    let (name, s) = strongest.expect("classifiers are validated non-empty");
    Ok(MiaReport {
        strongest: name.to_string(),
        auc: s.auc,
        removed_member_fraction: s.removed_member_fraction,
        removed_mean_probability: s.removed_mean_probability,
        non_member_fraction: s.non_member_fraction,
        strongest_distinguisher: distinguisher.map(|(n, _)| n.to_string()),
        removed_vs_held_out_auc: distinguisher.map(|(_, g)| g),
        n_train: 2 * half,
        n_test: 2 * (n - half),
        n_removed: removed_all.len(),
        n_game,
        attackers,
    })
}

/// The users an [`agreement`] compares: those with a removed edge (or every user of `0..n_users`),
/// sorted; a seeded sample of `max_users` of them when there are more.
pub fn agreement_users(
    n_users: usize,
    removed: &Interactions,
    which: AgreementUsers,
    max_users: Option<usize>,
    seed: u64,
) -> Vec<u32> {
    let mut pool: Vec<u32> = match which {
        AgreementUsers::Removed => {
            let mut u = removed.users().to_vec();
            u.dedup();
            u.retain(|&u| (u as usize) < n_users);
            u
        }
        AgreementUsers::All => (0..n_users as u32).collect(),
    };
    if let Some(max) = max_users.filter(|&m| m < pool.len()) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut picked: Vec<u32> = sample(&mut rng, pool.len(), max).into_iter().map(|j| pool[j]).collect();
        picked.sort_unstable();
        pool = picked;
    }
    pool
}

/// The mean top-`k` overlap and mean `KL(P_ref ‖ P_model)` of `model` against `reference` over `users`,
/// both ranking the items not in `seen` (see the [module docs](self)). Users with no unmasked item are
/// skipped. KL values below zero from rounding are clamped to 0.
///
/// # Errors
/// [`Error::Shape`] when the models differ in users or items, or as [`pair_ranks`];
/// [`Error::InvalidConfig`] for `k = 0`; [`Error::IdOutOfRange`] for a user outside the tables;
/// [`Error::InvalidRequest`] when no user can be compared.
pub fn agreement(
    model: &Embeddings,
    reference: &Embeddings,
    seen: &Csr,
    users: &[u32],
    k: usize,
) -> Result<AgreementReport> {
    if k == 0 {
        return Err(Error::config("k", "must be at least 1"));
    }
    let (nu, ni) = check_emb(model)?;
    let (ru, ri) = check_emb(reference)?;
    if (nu, ni) != (ru, ri) {
        return Err(Error::Shape {
            op: "agreement",
            expected: format!("{nu} users × {ni} items (the model)"),
            got: format!("{ru} users × {ri} items (the reference)"),
        });
    }
    check_seen(seen, nu, ni)?;
    if let Some(&u) = users.iter().find(|&&u| u as usize >= nu) {
        return Err(Error::IdOutOfRange { kind: "user", id: u.into(), n: nu });
    }
    let users: Vec<u32> = users.iter().copied().filter(|&u| seen_row(seen, u).len() < ni).collect();
    if users.is_empty() {
        return Err(Error::InvalidRequest("no user with an unmasked item to compare".into()));
    }
    let top_m = super::recommend(&users, &model.users, &model.items, model.dim, Some(seen), &[], k)?;
    let top_r = super::recommend(&users, &reference.users, &reference.items, reference.dim, Some(seen), &[], k)?;
    let overlap: f64 = (0..users.len())
        .map(|r| {
            let (a, b) = (top_m.row(r).0, top_r.row(r).0);
            let common = a.iter().filter(|i| b.contains(i)).count();
            common as f64 / a.len().max(b.len()).max(1) as f64
        })
        .sum();
    let kls = for_rows(&[model, reference], ni, &users, |u, rows| kl_row(rows[1], rows[0], seen_row(seen, u)));
    Ok(AgreementReport {
        users: users.len(),
        k,
        top_k_overlap: overlap / users.len() as f64,
        kl: kls.iter().sum::<f64>() / users.len() as f64,
    })
}

/// `KL(softmax(p) ‖ softmax(q))` over the entries not in the sorted `masked`, in log-sum-exp form.
fn kl_row(p: &[f32], q: &[f32], masked: &[u32]) -> f64 {
    let open = || {
        let mut m = masked.iter().peekable();
        (0..p.len()).filter(move |&j| m.next_if(|&&x| x as usize == j).is_none())
    };
    let max = |v: &[f32]| open().map(|j| v[j] as f64).fold(f64::NEG_INFINITY, f64::max);
    let (mp, mq) = (max(p), max(q));
    let (mut zp, mut zq) = (0.0, 0.0);
    for j in open() {
        zp += (p[j] as f64 - mp).exp();
        zq += (q[j] as f64 - mq).exp();
    }
    let (lse_p, lse_q) = (mp + zp.ln(), mq + zq.ln());
    let cross: f64 = open().map(|j| (p[j] as f64 - lse_p).exp() * (p[j] as f64 - q[j] as f64)).sum();
    (cross + lse_q - lse_p).max(0.0)
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;

    fn emb(dim: usize, users: Vec<f32>, items: Vec<f32>) -> Embeddings {
        Embeddings { dim, users, items }
    }

    fn random_emb(rng: &mut ChaCha8Rng, n_users: usize, n_items: usize, dim: usize) -> Embeddings {
        let mut v = |n: usize| (0..n * dim).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        Embeddings { dim, users: v(n_users), items: v(n_items) }
    }

    fn csr(n_cols: usize, rows: &[Vec<u32>]) -> Csr {
        let mut indptr = vec![0];
        let mut indices = Vec::new();
        for r in rows {
            indices.extend(r);
            indptr.push(indices.len());
        }
        Csr::new(n_cols, indptr, indices)
    }

    #[test]
    fn rank_of_a_known_item_in_a_hand_made_embedding() {
        // dim 2; user 0 = (1, 0), user 1 = (0, 1); items score x for user 0 and y for user 1.
        let e = emb(2, vec![1.0, 0.0, 0.0, 1.0], vec![5.0, 0.0, 4.0, 1.0, 3.0, 2.0, 2.0, 3.0, 1.0, 4.0]);
        // User 0 has seen item 0 (score 5): item 3 (score 2) is beaten by items 1 (4) and 2 (3) only.
        let seen = csr(5, &[vec![0], vec![]]);
        assert_eq!(pair_ranks(&e, &seen, &[(0, 3), (1, 4), (1, 0), (0, 0)]).unwrap(), vec![3, 1, 5, 1]);
        let r = rank_report(&e, &seen, &[(0, 3), (1, 4), (1, 0)], 2).unwrap();
        assert_eq!(r.count, 3);
        assert_eq!(r.mean_rank, 3.0);
        assert_eq!(r.median_rank, 3.0);
        assert!((r.top_k_fraction - 1.0 / 3.0).abs() < 1e-12);
        // A tie counts half: all five items score the same, so each ranks in the middle (1 + 4/2),
        // whether or not it is masked itself; a masked tie never counts.
        let flat = emb(1, vec![1.0], vec![1.0; 5]);
        assert_eq!(pair_ranks(&flat, &csr(5, &[vec![]]), &[(0, 2), (0, 0)]).unwrap(), vec![3, 3]);
        assert_eq!(pair_ranks(&flat, &csr(5, &[vec![1, 3]]), &[(0, 2), (0, 1)]).unwrap(), vec![2, 2]);
        assert!(rank_report(&e, &seen, &[], 20).is_err());
        assert!(matches!(pair_ranks(&e, &seen, &[(2, 0)]), Err(Error::IdOutOfRange { .. })));
    }

    #[test]
    fn scan_and_sorted_ranks_agree_with_brute_force() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let (nu, ni) = (150, 90);
        let e = random_emb(&mut rng, nu, ni, 8);
        let rows: Vec<Vec<u32>> = (0..nu).map(|_| (0..ni as u32).filter(|_| rng.random_bool(0.2)).collect()).collect();
        let seen = csr(ni, &rows);
        // User 0 gets many pairs (sorted path), the others a few (scan path).
        let mut pairs: Vec<(u32, u32)> = (0..40).map(|i| (0, i)).collect();
        pairs.extend((0..300).map(|_| (rng.random_range(0..nu as u32), rng.random_range(0..ni as u32))));
        let got = pair_ranks(&e, &seen, &pairs).unwrap();
        for (&(u, i), &r) in pairs.iter().zip(&got) {
            let s = |j: usize| (0..8).map(|d| e.users[u as usize * 8 + d] * e.items[j * 8 + d]).sum::<f32>();
            let si = s(i as usize);
            let higher = (0..ni).filter(|&j| !rows[u as usize].contains(&(j as u32)) && s(j) > si + 1e-5).count();
            let close = (0..ni).filter(|&j| (s(j) - si).abs() <= 1e-5).count();
            assert!(r > higher && r <= higher + close, "({u},{i}): {r} vs {higher}");
        }
    }

    #[test]
    fn scores_at_percentiles_are_the_order_statistics_by_selection_or_sort() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let (nu, ni) = (20, 300);
        let e = random_emb(&mut rng, nu, ni, 5);
        let rows: Vec<Vec<u32>> = (0..nu).map(|_| (0..ni as u32).filter(|_| rng.random_bool(0.15)).collect()).collect();
        let seen = csr(ni, &rows);
        // User 0 has more targets than the selection path takes (sorted path); the others a few, with
        // repeats, both ends and nearby positions (selection path).
        let mut targets: Vec<(u32, f64)> = (0..40).map(|_| (0, rng.random_range(0.0..1.0))).collect();
        for u in 1..nu as u32 {
            targets.extend([(u, 0.0), (u, 1.0), (u, 0.5), (u, 0.5), (u, 0.501), (u, rng.random_range(0.0..1.0))]);
        }
        targets.reverse();
        let got = scores_at_percentiles(&e, &seen, &targets).unwrap();
        for (&(u, q), &s) in targets.iter().zip(&got) {
            let mut open: Vec<f32> = (0..ni)
                .filter(|&j| !rows[u as usize].contains(&(j as u32)))
                .map(|j| (0..5).map(|d| e.users[u as usize * 5 + d] * e.items[j * 5 + d]).sum::<f32>())
                .collect();
            open.sort_by(|a, b| b.total_cmp(a));
            let want = open[((q * open.len() as f64 + 1e-9) as usize).min(open.len() - 1)];
            assert!((s - want).abs() < 1e-5, "user {u} q {q}: {s} vs {want}");
        }
    }

    #[test]
    fn percentiles_and_scores_at_percentiles_invert_each_other() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let (nu, ni) = (30, 200);
        let e = random_emb(&mut rng, nu, ni, 6);
        let rows: Vec<Vec<u32>> = (0..nu).map(|_| (0..ni as u32).filter(|_| rng.random_bool(0.1)).collect()).collect();
        let seen = csr(ni, &rows);
        let pairs: Vec<(u32, u32)> =
            (0..200).map(|_| (rng.random_range(0..nu as u32), rng.random_range(0..ni as u32))).collect();
        let p = pair_percentiles(&e, &seen, &pairs).unwrap();
        assert!(p.iter().all(|q| (0.0..1.0).contains(q)));
        let back =
            scores_at_percentiles(&e, &seen, &pairs.iter().zip(&p).map(|(&(u, _), &q)| (u, q)).collect::<Vec<_>>())
                .unwrap();
        for ((&(u, i), &q), &s) in pairs.iter().zip(&p).zip(&back) {
            let own = (0..6).map(|d| e.users[u as usize * 6 + d] * e.items[i as usize * 6 + d]).sum::<f32>();
            if !rows[u as usize].contains(&i) {
                // An unmasked item's own percentile leads back to its own score.
                assert!((s - own).abs() < 1e-5, "({u},{i}) q {q}: {s} vs {own}");
            } else {
                // A masked item's percentile leads to the first unmasked score below it.
                assert!(s <= own + 1e-5, "({u},{i}) q {q}: {s} vs {own}");
            }
        }
        // q = 0 is the top unseen score, q = 1 the bottom one.
        let top = scores_at_percentiles(&e, &seen, &[(0, 0.0), (0, 1.0)]).unwrap();
        let open: Vec<f32> = (0..ni)
            .filter(|j| !rows[0].contains(&(*j as u32)))
            .map(|j| (0..6).map(|d| e.users[d] * e.items[j * 6 + d]).sum::<f32>())
            .collect();
        let max = open.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let min = open.iter().copied().fold(f32::INFINITY, f32::min);
        assert!((top[0] - max).abs() < 1e-5 && (top[1] - min).abs() < 1e-5, "{top:?} vs {max} {min}");
        assert!(scores_at_percentiles(&e, &seen, &[(nu as u32, 0.5)]).is_err());
    }

    #[test]
    fn kl_of_identical_models_is_zero_and_a_two_item_case_matches_the_closed_form() {
        let e = emb(1, vec![1.0, 2.0], vec![0.5, -1.0, 2.0]);
        let seen = csr(3, &[vec![2], vec![]]);
        let a = agreement(&e, &e, &seen, &[0, 1], 20).unwrap();
        assert_eq!((a.users, a.top_k_overlap, a.kl), (2, 1.0, 0.0));
        // Two unmasked items; model scores (a1, a2), reference (b1, b2); p = σ(b1 − b2), q = σ(a1 − a2).
        let model = emb(1, vec![1.0], vec![0.3, -0.4, 9.0]);
        let reference = emb(1, vec![1.0], vec![1.2, 0.1, -3.0]);
        let seen = csr(3, &[vec![2]]);
        let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
        let (p, q) = (sig(1.2 - 0.1), sig(0.3f32 as f64 - (-0.4f32) as f64));
        let closed = p * (p / q).ln() + (1.0 - p) * ((1.0 - p) / (1.0 - q)).ln();
        let got = agreement(&model, &reference, &seen, &[0], 1).unwrap();
        assert!((got.kl - closed).abs() < 1e-6, "{} vs {closed}", got.kl);
        assert_eq!(got.top_k_overlap, 1.0); // both rank item 0 first
    }

    #[test]
    fn agreement_is_stable_for_large_scores() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut big = random_emb(&mut rng, 20, 50, 4);
        big.users.iter_mut().for_each(|x| *x *= 40.0);
        big.items.iter_mut().for_each(|x| *x *= 40.0); // scores ~1e3
        let mut other = big.clone();
        other.items.iter_mut().for_each(|x| *x *= -1.0);
        let seen = csr(50, &vec![vec![]; 20]);
        let users: Vec<u32> = (0..20).collect();
        let same = agreement(&big, &big, &seen, &users, 20).unwrap();
        assert_eq!((same.top_k_overlap, same.kl), (1.0, 0.0));
        let diff = agreement(&other, &big, &seen, &users, 20).unwrap();
        assert!(diff.kl.is_finite() && diff.kl > 100.0, "{}", diff.kl);
        assert!(diff.top_k_overlap.is_finite() && diff.top_k_overlap < 0.5);
    }

    /// 64 users × 80 items; user u trains on the 10 items ≡ u (mod 8) and holds out 4 items ≡ u + 4 (mod 8),
    /// so every user has degree 10 and every item popularity 8: the degree features carry nothing. The
    /// request is each user's first 3 training items.
    struct Toy {
        train: Interactions,
        test: Interactions,
        removed: Interactions,
        graph: Graph,
    }

    impl Toy {
        const NU: usize = 64;
        const NI: usize = 80;

        fn new() -> Self {
            let pairs = |off: u32, k: u32| -> Vec<(u32, u32)> {
                (0..Self::NU as u32).flat_map(|u| (0..k).map(move |k| (u, (u + off + 8 * k) % 80))).collect()
            };
            let train = Interactions::from_pairs(pairs(0, 10)).0;
            let test = Interactions::from_pairs(pairs(4, 4)).0;
            let removed = Interactions::from_pairs(pairs(0, 3)).0;
            let graph = Graph::from_interactions(Self::NU, Self::NI, &train.difference(&removed).0);
            Self { train, test, removed, graph }
        }

        fn data(&self) -> AuditData<'_> {
            AuditData {
                seen: self.graph.user_items(),
                remaining: &self.graph,
                held_out: &self.test,
                removed: &self.removed,
            }
        }

        /// One-hot users; item `i` carries `f(u, i)` in user `u`'s coordinate, so `s(u, i) = f(u, i)`.
        fn scored(f: impl Fn(u32, u32) -> f32) -> Embeddings {
            let (nu, ni) = (Self::NU, Self::NI);
            let mut items = vec![0f32; ni * nu];
            for u in 0..nu {
                for i in 0..ni {
                    items[i * nu + u] = f(u as u32, i as u32);
                }
            }
            let users: Vec<f32> = (0..nu * nu).map(|j| if j / nu == j % nu { 1.0 } else { 0.0 }).collect();
            emb(nu, users, items)
        }
    }

    fn noise(seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..Toy::NU * Toy::NI).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    #[test]
    fn every_attacker_recognises_a_memorising_model() {
        // Training edges (removed ones included) score 5 + noise, everything else noise.
        let t = Toy::new();
        let z = noise(5);
        let e =
            Toy::scored(|u, i| (if t.train.contains(u, i) { 5.0 } else { 0.0 }) + z[u as usize * Toy::NI + i as usize]);
        let r = membership_inference(&e, None, &t.data(), &AttackConfig::default(), 9).unwrap();
        assert_eq!(r.attackers.len(), 2);
        for a in &r.attackers {
            let m = a.membership.as_ref().unwrap();
            assert!(m.auc > 0.99, "{a:?}");
            assert!(m.removed_member_fraction > 0.9, "{a:?}");
            assert!(m.non_member_fraction < 0.1, "{a:?}");
            // The removed edges are told from held-out ones by the score alone.
            assert!(a.removed_vs_held_out_auc.unwrap() > 0.99, "{a:?}");
        }
        assert_eq!(r.n_removed, t.removed.len());
        assert!(r.n_game >= MIN_GAME_PAIRS);
        assert_eq!(r, membership_inference(&e, None, &t.data(), &AttackConfig::default(), 9).unwrap());
        let feats = pair_features(&e, None, t.data().seen, &t.graph, &t.removed.iter().collect::<Vec<_>>()).unwrap();
        assert!(feats.iter().all(|x| x.len() == FEATURE_NAMES.len() && x.iter().all(|v| v.is_finite())));
    }

    #[test]
    fn the_difference_attacker_finds_pairs_whose_scores_alone_were_lowered() {
        // The original memorises; the "unlearned" model only lowers the removed edges to the noise level:
        // by its own scores a removed edge looks like a held-out one, but its change from the original
        // gives it away.
        let t = Toy::new();
        let z = noise(6);
        let noise_of = |u: u32, i: u32| z[u as usize * Toy::NI + i as usize];
        let original = Toy::scored(|u, i| (if t.train.contains(u, i) { 5.0 } else { 0.0 }) + noise_of(u, i));
        let lowered = Toy::scored(|u, i| {
            (if t.train.contains(u, i) && !t.removed.contains(u, i) { 5.0 } else { 0.0 }) + noise_of(u, i)
        });
        let r = membership_inference(&lowered, Some(&original), &t.data(), &AttackConfig::default(), 3).unwrap();
        assert_eq!(r.attackers.len(), 4);
        for a in &r.attackers {
            let game = a.removed_vs_held_out_auc.unwrap();
            if a.difference {
                assert!(game > 0.95, "{a:?}");
                assert!(a.membership.is_none());
            } else {
                assert!((game - 0.5).abs() < 0.12, "{a:?}");
                assert!(a.membership.as_ref().unwrap().removed_member_fraction < 0.1, "{a:?}");
            }
        }
        assert!(r.removed_vs_held_out_auc.unwrap() > 0.95, "{r:?}");
        assert!(r.strongest_distinguisher.as_deref().unwrap().ends_with("+difference"), "{r:?}");
        assert!(!r.strongest.ends_with("+difference"), "{r:?}");
        // Without the original, no attacker can find them.
        let alone = membership_inference(&lowered, None, &t.data(), &AttackConfig::default(), 3).unwrap();
        assert!(alone.removed_vs_held_out_auc.unwrap() < 0.62, "{alone:?}");
        let wrong = Toy::scored(|_, _| 0.0);
        let small = Embeddings { dim: wrong.dim, users: wrong.users.clone(), items: wrong.items[..wrong.dim].to_vec() };
        assert!(matches!(
            membership_inference(&lowered, Some(&small), &t.data(), &AttackConfig::default(), 3),
            Err(Error::Shape { .. })
        ));
    }

    #[test]
    fn agreement_users_default_to_users_with_removed_edges() {
        let (removed, _) = Interactions::from_pairs(vec![(4, 1), (4, 2), (1, 0), (9, 3)]);
        assert_eq!(agreement_users(10, &removed, AgreementUsers::Removed, None, 0), vec![1, 4, 9]);
        assert_eq!(agreement_users(5, &removed, AgreementUsers::All, None, 0), vec![0, 1, 2, 3, 4]);
        let s = agreement_users(100, &removed, AgreementUsers::All, Some(10), 3);
        assert_eq!(s.len(), 10);
        assert_eq!(s, agreement_users(100, &removed, AgreementUsers::All, Some(10), 3));
    }
}
