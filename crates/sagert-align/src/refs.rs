//! Reference log-probabilities, computed once per (model, tokenized pair) and
//! kept in the run store.
//!
//! DPO compares the policy with the frozen reference model on every pair. The
//! reference's log-probabilities never change, so they are computed in one pass
//! before training and stored as items of stage [`STAGE`], keyed by a hash of the
//! base model's content key and the pair's exact token ids. Later epochs, resumed
//! runs and every cell of a sweep that shares the store (sweeps keep it at the
//! sweep's root) read them back instead of running the reference forward pass.

use sha2::{Digest, Sha256};

use sagert_store::{ItemState, Store, WorkItem};

use crate::data::Encoded;
use crate::error::Result;

/// The store stage that holds reference log-probabilities.
pub const STAGE: &str = "align_ref_logps";

/// Summed reference log-probabilities of one pair's two completions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RefLogps {
    pub chosen: f64,
    pub rejected: f64,
}

/// The store key of `pair`'s reference log-probabilities under `model_key`.
pub fn key(model_key: &str, pair: &Encoded) -> String {
    let mut h = Sha256::new();
    h.update(model_key.as_bytes());
    for part in [&pair.prompt, &pair.chosen, &pair.rejected] {
        h.update((part.len() as u64).to_le_bytes());
        for t in part.iter() {
            h.update(t.to_le_bytes());
        }
    }
    hex::encode(&h.finalize()[..16])
}

/// The cached reference log-probabilities, one per pair (`None` where missing).
/// Pairs whose dataset carries `ref_chosen_logps`/`ref_rejected_logps` use those.
pub fn lookup(store: &Store, model_key: &str, pairs: &[Encoded]) -> Result<Vec<Option<RefLogps>>> {
    let mut out = Vec::with_capacity(pairs.len());
    for pair in pairs {
        if let (Some(chosen), Some(rejected)) = (pair.ref_chosen_logps, pair.ref_rejected_logps) {
            out.push(Some(RefLogps { chosen, rejected }));
            continue;
        }
        let item = store.get_item(STAGE, &key(model_key, pair))?;
        out.push(item.filter(|i| i.state == ItemState::Done).and_then(|i| {
            let chosen = i.payload.get("chosen")?.as_f64()?;
            let rejected = i.payload.get("rejected")?.as_f64()?;
            Some(RefLogps { chosen, rejected })
        }));
    }
    Ok(out)
}

/// Store computed reference log-probabilities (one transaction).
pub fn save(store: &Store, model_key: &str, computed: &[(&Encoded, RefLogps)]) -> Result<()> {
    let items: Vec<WorkItem> = computed
        .iter()
        .map(|(pair, r)| {
            let mut item = WorkItem::pending(
                STAGE,
                key(model_key, pair),
                serde_json::json!({ "chosen": r.chosen, "rejected": r.rejected, "pair": pair.id }),
            );
            item.state = ItemState::Done;
            item
        })
        .collect();
    store.put_items(&items)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(id: &str, chosen: Vec<u32>) -> Encoded {
        Encoded {
            id: id.into(),
            category: String::new(),
            prompt: vec![1, 2],
            chosen,
            rejected: vec![5],
            ref_chosen_logps: None,
            ref_rejected_logps: None,
            truncated: false,
        }
    }

    #[test]
    fn round_trip_and_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = pair("a", vec![3, 4]);
        let b = pair("b", vec![3, 4, 6]);
        assert_ne!(key("m", &a), key("m", &b));
        assert_ne!(key("m", &a), key("n", &a));
        save(&store, "m", &[(&a, RefLogps { chosen: -1.25, rejected: -3.5 })]).unwrap();
        let got = lookup(&store, "m", &[a.clone(), b]).unwrap();
        assert_eq!(got[0], Some(RefLogps { chosen: -1.25, rejected: -3.5 }));
        assert_eq!(got[1], None);
        assert_eq!(lookup(&store, "other", &[a]).unwrap()[0], None);
    }

    #[test]
    fn dataset_columns_win() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut a = pair("a", vec![3]);
        a.ref_chosen_logps = Some(-2.0);
        a.ref_rejected_logps = Some(-4.0);
        assert_eq!(lookup(&store, "m", &[a]).unwrap()[0], Some(RefLogps { chosen: -2.0, rejected: -4.0 }));
    }
}
