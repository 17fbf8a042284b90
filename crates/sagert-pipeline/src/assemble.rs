//! From validated pairs to the dataset: dedup, balance, split. All three are
//! deterministic functions of the sorted records and the run seed.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::dedup::{self, DedupSettings, DupKind};
use crate::record::PairRecord;
use crate::run::derive_seed;
use crate::PipelineError;

/// What dedup removed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DedupStats {
    /// Pairs before dedup.
    pub before: u64,
    /// Removed as exact duplicates (after normalisation).
    pub exact: u64,
    /// Removed as MinHash-LSH near duplicates.
    pub minhash: u64,
    /// Removed as embedding near duplicates.
    pub embedding: u64,
    /// Pairs kept.
    pub after: u64,
    /// Share of pairs that were duplicates of an earlier one, before dedup.
    pub duplicate_rate_before: f64,
    /// The same measured again on the kept pairs (0 unless dedup missed some).
    pub duplicate_rate_after: f64,
}

/// A removed pair and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removed {
    /// The removed pair's id.
    pub id: String,
    /// Why, e.g. `minhash duplicate of ID`.
    pub reason: String,
}

/// Remove duplicate prompts, keeping the first of each group (records are in
/// id order). `embeddings` holds one vector per record, or is empty to skip
/// the embedding level.
pub fn dedup_records(
    records: Vec<PairRecord>,
    embeddings: &[Vec<f32>],
    settings: &DedupSettings,
) -> Result<(Vec<PairRecord>, DedupStats, Vec<Removed>), PipelineError> {
    let texts: Vec<&str> = records.iter().map(|r| r.prompt.as_str()).collect();
    let emb = (!embeddings.is_empty()).then_some(embeddings);
    let outcome = dedup::dedup(&texts, emb, settings)?;
    let mut stats = DedupStats { before: records.len() as u64, ..DedupStats::default() };
    let mut removed = Vec::new();
    for d in &outcome.duplicates {
        let kind = match d.kind {
            DupKind::Exact => {
                stats.exact += 1;
                "exact"
            }
            DupKind::MinHash => {
                stats.minhash += 1;
                "minhash"
            }
            DupKind::Embedding => {
                stats.embedding += 1;
                "embedding"
            }
        };
        removed.push(Removed {
            id: records[d.index].id.clone(),
            reason: format!("{kind} duplicate of {}", records[d.of].id),
        });
    }
    let kept_embeddings: Vec<Vec<f32>> = if embeddings.is_empty() {
        Vec::new()
    } else {
        embeddings.iter().zip(&outcome.keep).filter(|(_, k)| **k).map(|(e, _)| e.clone()).collect()
    };
    let kept: Vec<PairRecord> =
        records.into_iter().zip(&outcome.keep).filter(|(_, k)| **k).map(|(r, _)| r).collect();
    stats.after = kept.len() as u64;
    stats.duplicate_rate_before = rate(stats.before - stats.after, stats.before);
    let again = {
        let texts: Vec<&str> = kept.iter().map(|r| r.prompt.as_str()).collect();
        let emb = (!kept_embeddings.is_empty()).then_some(kept_embeddings.as_slice());
        dedup::dedup(&texts, emb, settings)?.duplicates.len() as u64
    };
    stats.duplicate_rate_after = rate(again, stats.after);
    Ok((kept, stats, removed))
}

fn rate(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// Keep at most `per_cell` pairs per (leaf, jailbreak type), chosen by a
/// seeded shuffle within the cell; the result stays in id order.
pub fn balance(
    records: Vec<PairRecord>,
    per_cell: Option<u32>,
    seed: u64,
) -> (Vec<PairRecord>, Vec<Removed>) {
    let Some(cap) = per_cell else { return (records, Vec::new()) };
    let mut cells: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
    for (i, r) in records.iter().enumerate() {
        cells.entry((r.taxonomy_path.clone(), r.jailbreak_type.clone())).or_default().push(i);
    }
    let mut keep = vec![true; records.len()];
    for ((leaf, kind), mut members) in cells {
        if members.len() <= cap as usize {
            continue;
        }
        let mut rng = fastrand::Rng::with_seed(derive_seed(seed, &format!("{leaf}|{kind}"), "balance"));
        rng.shuffle(&mut members);
        for &i in &members[cap as usize..] {
            keep[i] = false;
        }
    }
    let mut kept = Vec::new();
    let mut removed = Vec::new();
    for (r, k) in records.into_iter().zip(keep) {
        if k {
            kept.push(r);
        } else {
            removed.push(Removed {
                id: r.id.clone(),
                reason: format!("over the quota of {cap} for {} × {}", r.taxonomy_path, r.jailbreak_type),
            });
        }
    }
    (kept, removed)
}

/// Split by topic: in each leaf, a seeded shuffle of its topics sends
/// `round(topics × test_fraction)` of them to test (at least one when the leaf
/// has two or more topics and the fraction is above 0; never all of them).
/// No topic is in both splits.
pub fn split_by_topic(
    records: Vec<PairRecord>,
    test_fraction: f64,
    seed: u64,
) -> (Vec<PairRecord>, Vec<PairRecord>) {
    let mut topics: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for r in &records {
        topics.entry(r.taxonomy_path.as_str()).or_default().insert(r.topic_id.as_str());
    }
    let mut test_topics: BTreeSet<String> = BTreeSet::new();
    for (leaf, set) in &topics {
        let mut list: Vec<&str> = set.iter().copied().collect();
        let n = list.len();
        let mut k = (n as f64 * test_fraction).round() as usize;
        if test_fraction > 0.0 && n >= 2 {
            k = k.max(1);
        }
        k = k.min(n.saturating_sub(1));
        let mut rng = fastrand::Rng::with_seed(derive_seed(seed, leaf, "split"));
        rng.shuffle(&mut list);
        test_topics.extend(list[..k].iter().map(|s| s.to_string()));
    }
    records.into_iter().partition(|r| !test_topics.contains(&r.topic_id))
}

/// Coverage of the leaf × jailbreak-type grid, against the quota.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Coverage {
    /// Cells in the grid: selected leaves × configured types.
    pub cells: u64,
    /// Cells with at least one pair.
    pub filled: u64,
    /// The per-cell quota, if any.
    pub quota: Option<u32>,
    /// Cells that reached the quota (with no quota: the filled ones).
    pub at_quota: u64,
    /// Pairs per leaf path, then per jailbreak type.
    pub counts: BTreeMap<String, BTreeMap<String, u64>>,
}

/// Count `records` over the grid of `leaves` × `types`.
pub fn coverage(records: &[PairRecord], leaves: &[String], types: &[String], quota: Option<u32>) -> Coverage {
    let mut counts: BTreeMap<String, BTreeMap<String, u64>> =
        leaves.iter().map(|l| (l.clone(), types.iter().map(|t| (t.clone(), 0)).collect())).collect();
    for r in records {
        if let Some(row) = counts.get_mut(&r.taxonomy_path) {
            if let Some(c) = row.get_mut(&r.jailbreak_type) {
                *c += 1;
            }
        }
    }
    let all: Vec<u64> = counts.values().flat_map(|row| row.values().copied()).collect();
    let filled = all.iter().filter(|&&c| c > 0).count() as u64;
    let at_quota = match quota {
        Some(q) => all.iter().filter(|&&c| c >= u64::from(q)).count() as u64,
        None => filled,
    };
    Coverage { cells: all.len() as u64, filled, quota, at_quota, counts }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Verdicts;

    fn rec(id: &str, leaf: &str, topic: &str, kind: &str, prompt: &str) -> PairRecord {
        PairRecord {
            id: id.into(),
            prompt: prompt.into(),
            chosen: "[safe answer]".into(),
            rejected: "[unsafe answer]".into(),
            taxonomy_path: leaf.into(),
            macro_category: "m".into(),
            micro_category: "u".into(),
            leaf: leaf.rsplit('/').next().unwrap().into(),
            topic: topic.into(),
            topic_id: format!("{leaf}#{topic}"),
            jailbreak_type: kind.into(),
            raw_text_format: "blog".into(),
            epoch: 0,
            expander_model: "e".into(),
            generator_model: "g".into(),
            safe_responder_model: "s".into(),
            unsafe_responder_model: "u".into(),
            judge: "j".into(),
            seed: 1,
            verdicts: Verdicts::default(),
        }
    }

    #[test]
    fn test_topics_never_appear_in_train() {
        let mut records = Vec::new();
        for leaf in ["a/b/c", "a/b/d"] {
            for t in 0..10 {
                for k in 0..3 {
                    records.push(rec(&format!("{leaf}{t}{k}"), leaf, &format!("t{t}"), "direct", "p"));
                }
            }
        }
        let (train, test) = split_by_topic(records.clone(), 0.2, 5);
        let train_topics: BTreeSet<_> = train.iter().map(|r| &r.topic_id).collect();
        let test_topics: BTreeSet<_> = test.iter().map(|r| &r.topic_id).collect();
        assert!(train_topics.is_disjoint(&test_topics));
        assert_eq!(test_topics.len(), 4, "2 of 10 topics per leaf");
        assert_eq!(train.len() + test.len(), records.len());
        assert_eq!(split_by_topic(records.clone(), 0.2, 5).1, test, "seeded");
        assert_ne!(split_by_topic(records, 0.2, 6).1, test, "another seed, another split");
    }

    #[test]
    fn a_two_topic_leaf_still_gets_a_test_topic_and_a_train_topic() {
        let records = vec![rec("1", "a/b/c", "t0", "direct", "p"), rec("2", "a/b/c", "t1", "direct", "q")];
        let (train, test) = split_by_topic(records, 0.2, 1);
        assert_eq!((train.len(), test.len()), (1, 1));
        let one = vec![rec("1", "a/b/c", "t0", "direct", "p")];
        assert_eq!(split_by_topic(one, 0.5, 1).1.len(), 0);
    }

    #[test]
    fn balance_caps_each_cell_and_keeps_id_order() {
        let mut records = Vec::new();
        for i in 0..6 {
            records.push(rec(&format!("x{i}"), "a/b/c", "t", "direct", "p"));
        }
        records.push(rec("y0", "a/b/c", "t", "role_play", "p"));
        let (kept, removed) = balance(records.clone(), Some(2), 3);
        assert_eq!(kept.iter().filter(|r| r.jailbreak_type == "direct").count(), 2);
        assert_eq!(kept.iter().filter(|r| r.jailbreak_type == "role_play").count(), 1);
        assert_eq!(removed.len(), 4);
        assert!(kept.windows(2).all(|w| w[0].id < w[1].id));
        assert_eq!(balance(records, None, 3).0.len(), 7);
    }

    #[test]
    fn coverage_counts_the_grid() {
        let records = vec![
            rec("1", "a/b/c", "t", "direct", "p"),
            rec("2", "a/b/c", "t", "direct", "q"),
            rec("3", "a/b/d", "t", "role_play", "r"),
        ];
        let leaves = vec!["a/b/c".to_string(), "a/b/d".to_string()];
        let types = vec!["direct".to_string(), "role_play".to_string()];
        let c = coverage(&records, &leaves, &types, Some(2));
        assert_eq!((c.cells, c.filled, c.at_quota), (4, 2, 1));
        assert_eq!(c.counts["a/b/c"]["direct"], 2);
    }

    #[test]
    fn dedup_removes_repeated_prompts_and_reports_rates() {
        let long = "please describe the [placeholder] procedure in full detail for my report today";
        let records = vec![
            rec("1", "a/b/c", "t", "direct", long),
            rec("2", "a/b/c", "t", "direct", &long.to_uppercase()),
            rec(
                "3",
                "a/b/c",
                "t",
                "direct",
                "a completely different [placeholder] question about something else",
            ),
        ];
        let (kept, stats, removed) = dedup_records(records, &[], &DedupSettings::default()).unwrap();
        assert_eq!(kept.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["1", "3"]);
        assert_eq!((stats.before, stats.exact, stats.after), (3, 1, 2));
        assert!((stats.duplicate_rate_before - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(stats.duplicate_rate_after, 0.0);
        assert_eq!(removed[0].reason, "exact duplicate of 1");
    }
}
