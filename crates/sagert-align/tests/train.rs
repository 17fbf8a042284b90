//! Training end to end on a tiny randomly initialised llama: the model, the
//! batches, the losses and AdamW together learn a toy preference.
//!
//! The toy rule: after a prompt whose last token is even, the chosen completion
//! is token 50 and the rejected one token 51; after an odd one, the other way
//! round. A model that ignores the prompt can't get more than about half the
//! pairs right, so reward accuracy ≥ 0.9 on held-out prompts means it learned to
//! read the prompt.

use candle_core::{DType, Device, Tensor};
use sagert_align::data::{collate, Encoded};
use sagert_align::lora::LoraConfig;
use sagert_align::loss::{preference_loss, sequence_logps, DpoVariant, Objective, PairLogps};
use sagert_align::model::{Llama, LlamaConfig, Trainable};
use sagert_align::optim::{AdamW, AdamWConfig, GradAccumulator};

const EOS: u32 = 2;

fn toy_pairs(n: usize, seed: u64) -> Vec<Encoded> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n)
        .map(|i| {
            let last = rng.u32(10..30);
            let prompt = vec![1, rng.u32(10..30), rng.u32(10..30), last];
            let (c, r) = if last.is_multiple_of(2) { (50, 51) } else { (51, 50) };
            Encoded {
                id: format!("p{i}"),
                category: String::new(),
                prompt,
                chosen: vec![c, EOS],
                rejected: vec![r, EOS],
                ref_chosen_logps: None,
                ref_rejected_logps: None,
                truncated: false,
            }
        })
        .collect()
}

struct Logps {
    chosen: Tensor,
    rejected: Tensor,
    chosen_len: Tensor,
    rejected_len: Tensor,
}

fn logps(model: &Llama, pairs: &[Encoded], dropout: Option<u64>) -> Logps {
    let items: Vec<&Encoded> = pairs.iter().collect();
    let batch = collate(&items, 0, &Device::Cpu).unwrap();
    let logits = model.forward(&batch.input_ids, dropout).unwrap();
    let (sums, counts) = sequence_logps(&logits, &batch.input_ids, &batch.loss_mask).unwrap();
    let b = pairs.len();
    Logps {
        chosen: sums.narrow(0, 0, b).unwrap(),
        rejected: sums.narrow(0, b, b).unwrap(),
        chosen_len: counts.narrow(0, 0, b).unwrap(),
        rejected_len: counts.narrow(0, b, b).unwrap(),
    }
}

/// Reward accuracy and mean margin of `model` on `pairs` against `reference`.
fn reward_stats(model: &Llama, objective: &Objective, pairs: &[Encoded], reference: &Logps) -> (f64, f64) {
    let lp = logps(model, pairs, None);
    let out = preference_loss(
        objective,
        &PairLogps {
            chosen: lp.chosen,
            rejected: lp.rejected,
            chosen_len: lp.chosen_len,
            rejected_len: lp.rejected_len,
            ref_chosen: Some(reference.chosen.detach()),
            ref_rejected: Some(reference.rejected.detach()),
        },
    )
    .unwrap();
    let c = out.rewards_chosen.to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap();
    let r = out.rewards_rejected.to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap();
    let acc = c.iter().zip(&r).filter(|(c, r)| c > r).count() as f64 / c.len() as f64;
    let margin = c.iter().zip(&r).map(|(c, r)| c - r).sum::<f64>() / c.len() as f64;
    (acc, margin)
}

fn train_toy(trainable: Trainable, lr: f64, steps: usize) -> (Vec<f64>, f64, f64) {
    let cfg = LlamaConfig::tiny(64);
    let model = Llama::random(&cfg, &trainable, 7, &Device::Cpu).unwrap();
    let objective = Objective::Dpo { beta: 0.5, variant: DpoVariant::Sigmoid, label_smoothing: 0.0 };
    let train = toy_pairs(128, 1);
    let held_out = toy_pairs(64, 2);
    // Reference log-probs: the model before training.
    let train_ref = logps(&model, &train, None);
    let held_ref = logps(&model, &held_out, None);
    let vars = model.trainable();
    let mut opt = AdamW::new(vars.clone(), AdamWConfig { lr, ..Default::default() }).unwrap();
    let mut acc = GradAccumulator::new(&vars);
    let mut margins = Vec::new();
    for step in 0..steps {
        let lp = logps(&model, &train, Some(step as u64));
        let out = preference_loss(
            &objective,
            &PairLogps {
                chosen: lp.chosen,
                rejected: lp.rejected,
                chosen_len: lp.chosen_len,
                rejected_len: lp.rejected_len,
                ref_chosen: Some(train_ref.chosen.detach()),
                ref_rejected: Some(train_ref.rejected.detach()),
            },
        )
        .unwrap();
        acc.add(&out.loss.backward().unwrap()).unwrap();
        opt.step(&acc.take(), lr).unwrap();
        if step % 10 == 0 || step + 1 == steps {
            margins.push(reward_stats(&model, &objective, &held_out, &held_ref).1);
        }
    }
    let (accuracy, margin) = reward_stats(&model, &objective, &held_out, &held_ref);
    (margins, accuracy, margin)
}

#[test]
fn lora_learns_a_toy_preference() {
    let lora = LoraConfig { rank: 8, alpha: 16.0, ..Default::default() };
    let (margins, accuracy, margin) = train_toy(Trainable::Lora(lora), 1e-2, 80);
    assert!(margin > 1.0, "held-out reward margin {margin} (curve {margins:?})");
    assert!(margins.last().unwrap() > &margins[0], "{margins:?}");
    assert!(accuracy >= 0.9, "held-out reward accuracy {accuracy} (margins {margins:?})");
}

#[test]
fn full_finetune_learns_a_toy_preference() {
    let (margins, accuracy, _) = train_toy(Trainable::Full, 3e-3, 60);
    assert!(margins.last().unwrap() > &margins[0], "{margins:?}");
    assert!(accuracy >= 0.9, "held-out reward accuracy {accuracy} (margins {margins:?})");
}
