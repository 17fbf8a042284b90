#!/usr/bin/env python3
"""PyTorch reference for sagert's preference-training benchmark (run by scripts/bench-align).

The same loop as crates/sagert-align/benches/train.rs, the way a PEFT + PyTorch
user would write it: float32 on the CPU, `torch.set_num_threads(threads)`, a
PEFT LoRA adapter (r = rank, alpha = 2 * rank, dropout 0) on all seven
projections (q, k, v, o, gate, up, down), the DPO sigmoid loss (beta 0.1)
against reference log-probs computed once before the loop (the policy at
step 0, adapter disabled) and held constant, AdamW lr 1e-4 without weight decay.

A batch is `batch` preference pairs: 2 * batch sequences of `seq` token ids
drawn from a seeded generator. Chosen and rejected of a pair share their prompt
(the first seq / 2 tokens); only the completion (the second half) counts in the
log-probs. One step = one forward over chosen and rejected concatenated in one
batch, the loss, backward, the optimizer step and zero_grad. The first
`warmup` steps are not timed.

Usage: bench-align-torch.py --model HF_DIR [--threads 2] [--seq 256] [--batch 4]
                            [--rank 16] [--steps 5] [--warmup 1]

Prints one JSON line: {"impl": "pytorch", "torch", "tokens_per_s"
(2 * batch * seq / mean step seconds), "step_s", "peak_rss_mb" (ru_maxrss),
"threads", ...}.

Tested with torch 2.15.0, transformers==5.24.0, peft==0.21.2.
"""

import argparse
import json
import os
import resource
import sys
import time
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
warnings.filterwarnings("ignore", category=FutureWarning)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
BETA = 0.1
LR = 1e-4
SEED = 0


def positive_int(text):
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def parse_args(argv):
    parser = argparse.ArgumentParser(description="PyTorch + PEFT reference for sagert's DPO training bench.")
    parser.add_argument("--model", required=True, metavar="HF_DIR", help="transformers model directory")
    parser.add_argument("--threads", type=positive_int, default=2)
    parser.add_argument("--seq", type=positive_int, default=256, help="tokens per sequence")
    parser.add_argument("--batch", type=positive_int, default=4, help="preference pairs per step")
    parser.add_argument("--rank", type=positive_int, default=16, help="LoRA rank (alpha = 2 * rank)")
    parser.add_argument("--steps", type=positive_int, default=5, help="timed steps")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before them")
    args = parser.parse_args(argv)
    if args.seq < 2:
        parser.error("--seq must be at least 2 (a prompt and a completion token)")
    if args.warmup < 0:
        parser.error("--warmup must not be negative")
    if not os.path.isdir(args.model):
        parser.error(f"--model {args.model} is not a directory")
    return args


def make_batch(batch, seq, vocab):
    """Token ids (2 * batch, seq), chosen rows first, and the completion mask."""
    gen = torch.Generator().manual_seed(SEED)
    prompt_len = seq // 2
    prompts = torch.randint(0, vocab, (batch, prompt_len), generator=gen)
    chosen = torch.randint(0, vocab, (batch, seq - prompt_len), generator=gen)
    rejected = torch.randint(0, vocab, (batch, seq - prompt_len), generator=gen)
    ids = torch.cat([torch.cat([prompts, chosen], 1), torch.cat([prompts, rejected], 1)], 0)
    mask = torch.zeros(2 * batch, seq, dtype=torch.float32)
    mask[:, prompt_len:] = 1.0
    return ids, mask


def sequence_logps(logits, ids, mask):
    """Sum over the masked positions of log p(ids[t] | ids[<t])."""
    logps = torch.log_softmax(logits[:, :-1, :], dim=-1)
    token_logps = torch.gather(logps, 2, ids[:, 1:].unsqueeze(2)).squeeze(2)
    return (token_logps * mask[:, 1:]).sum(-1)


def dpo_loss(policy, reference, batch):
    margin = (policy[:batch] - reference[:batch]) - (policy[batch:] - reference[batch:])
    return -F.logsigmoid(BETA * margin).mean()


def main(argv):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    model.config.use_cache = False
    lora = LoraConfig(
        r=args.rank,
        lora_alpha=2 * args.rank,
        lora_dropout=0.0,
        target_modules=TARGETS,
        bias="none",
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=LR, weight_decay=0.0)

    ids, mask = make_batch(args.batch, args.seq, model.config.vocab_size)
    with torch.no_grad(), model.disable_adapter():
        reference = sequence_logps(model(input_ids=ids).logits, ids, mask)

    times, losses = [], []
    for step in range(args.warmup + args.steps):
        start = time.perf_counter()
        logits = model(input_ids=ids).logits
        loss = dpo_loss(sequence_logps(logits, ids, mask), reference, args.batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        del logits
        elapsed = time.perf_counter() - start
        losses.append(float(loss.detach()))
        if step >= args.warmup:
            times.append(elapsed)

    step_s = sum(times) / len(times)
    print(
        json.dumps(
            {
                "impl": "pytorch",
                "torch": torch.__version__,
                "tokens_per_s": 2 * args.batch * args.seq / step_s,
                "step_s": step_s,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "threads": args.threads,
                "seq": args.seq,
                "batch": args.batch,
                "rank": args.rank,
                "steps": args.steps,
                "warmup": args.warmup,
                "trainable_params": sum(p.numel() for p in trainable),
                "attn": getattr(model.config, "_attn_implementation", None),
                "first_loss": losses[0],
                "last_loss": losses[-1],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
