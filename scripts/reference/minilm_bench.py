#!/usr/bin/env python3
"""Speed of sagert's MiniLM embedder against sentence-transformers on torch.

Embeds the same 1,000 sentences of mixed length as
crates/sagert-encoders/benches/embed.rs (the generator below is a copy of the
one there: keep the two in step) with sentence-transformers on the CPU,
torch.set_num_threads(2), batch 32, best of 3 runs; then runs the Rust
benchmark (`cargo bench -p sagert-encoders --bench embed`, release) and prints
both rates and their ratio (sagert / torch; the target is at least 1.0).

Run from the repository root after scripts/fetch-models (needs
`pip install sentence-transformers`, which pulls torch):

    python3 scripts/reference/minilm_bench.py [--rust-rate N] [MODEL_DIR]

--rust-rate N skips the cargo run and uses N embeddings/s for sagert.
"""

import argparse
import os
import re
import subprocess
import sys
import time

THREADS = 2
BATCH = 32
COUNT = 1000

WORDS = (
    "the model answers a question about safety policy data review label topic "
    "user request benign refuse comply evaluate score judge prompt response taxonomy category "
    "example dataset training alignment reward preference rank filter duplicate semantic "
    "embedding vector cosine threshold cluster language system assistant careful helpful honest "
    "clear short long sentence paragraph report summary metric accuracy precision recall"
).split()

MASK = (1 << 64) - 1


def sentences(count):
    """The generator of benches/embed.rs: a 64-bit LCG; 60% of 4-16 words,
    30% of 17-60, 10% of 61-200."""
    state = 0x9E3779B97F4A7C15

    def next_value():
        nonlocal state
        state = (state * 6364136223846793005 + 1442695040888963407) & MASK
        return state >> 33

    out = []
    for _ in range(count):
        r = next_value() % 100
        if r < 60:
            n = 4 + next_value() % 13
        elif r < 90:
            n = 17 + next_value() % 44
        else:
            n = 61 + next_value() % 140
        out.append(" ".join(WORDS[next_value() % len(WORDS)] for _ in range(n)) + ".")
    return out


def fingerprint(texts):
    """FNV-1a of the sentences joined by newlines, as benches/embed.rs prints it."""
    h = 0xCBF29CE484222325
    for b in "\n".join(texts).encode():
        h = ((h ^ b) * 0x100000001B3) & MASK
    return h


def torch_rate(model_dir, texts):
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(THREADS)
    model = SentenceTransformer(model_dir, device="cpu")
    tokens = sum(len(model.tokenizer(t, truncation=True, max_length=model.max_seq_length)["input_ids"]) for t in texts)
    with torch.inference_mode():
        model.encode(texts[:64], batch_size=BATCH)
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            vectors = model.encode(texts, batch_size=BATCH, convert_to_numpy=True)
            best = min(best, time.perf_counter() - start)
            assert vectors.shape == (len(texts), 384)
    rate = len(texts) / best
    print(
        f"sentence-transformers (torch {torch.__version__}) minilm: {len(texts)} sentences "
        f"({tokens} tokens, text {fingerprint(texts):016x}), batch {BATCH}, {THREADS} threads: {rate:.1f} embeddings/s "
        f"({best:.2f} s, best of 3)"
    )
    return rate


def rust_rate():
    env = dict(os.environ, SAGERT_BENCH_THREADS=str(THREADS), SAGERT_BENCH_BATCH=str(BATCH))
    run = subprocess.run(
        ["cargo", "bench", "-p", "sagert-encoders", "--bench", "embed"],
        env=env,
        capture_output=True,
        text=True,
    )
    if run.returncode != 0:
        sys.exit(f"cargo bench failed:\n{run.stderr[-4000:]}")
    for line in run.stdout.splitlines():
        if not line.startswith("embeddings_per_s="):
            print(line)
    found = re.search(r"^embeddings_per_s=([0-9.]+)$", run.stdout, re.M)
    if not found:
        sys.exit(f"no rate in the cargo bench output:\n{run.stdout}")
    return float(found.group(1))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", nargs="?")
    parser.add_argument("--rust-rate", type=float)
    args = parser.parse_args()
    cache = os.environ.get("SAGERT_CACHE_DIR", os.path.expanduser("~/.cache/sagert"))
    model_dir = args.model_dir or os.path.join(cache, "models", "minilm-l6")

    texts = sentences(COUNT)
    torch_per_s = torch_rate(model_dir, texts)
    sagert_per_s = args.rust_rate if args.rust_rate is not None else rust_rate()
    print(f"sagert {sagert_per_s:.1f}/s, torch {torch_per_s:.1f}/s: ratio {sagert_per_s / torch_per_s:.2f}x")


if __name__ == "__main__":
    main()
