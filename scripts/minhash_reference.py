#!/usr/bin/env python3
"""datasketch reference for the MinHash-LSH bench (run by scripts/bench-minhash).

Reads the texts the Rust bench wrote, finds the candidate near-duplicate pairs
with datasketch the way a datasketch user would (MinHash.bulk over the
whitespace tokens as UTF-8 bytes, MinHashLSH(threshold, num_perm) insert, then
query with each MinHash), times that, and compares the pairs and the speed
with the Rust figures in rust.json and pairs-<scheme>.txt.

The shingling is the same on both sides: the texts are already normalised
(the Rust bench checks it), so `text.split()` gives the tokens that
sagert_pipeline::dedup hashes. A pair is (i, j), i < j, sharing at least one
LSH bucket; neither side checks the Jaccard of a candidate.

Usage: minhash_reference.py --dir target/bench-minhash --scheme affine32
       [--limit N]   time datasketch on the first N texts only and extrapolate
                     (the pairs are then compared on those N texts only)
"""

import argparse
import json
import sys
import time
from pathlib import Path

import datasketch
from datasketch import MinHash, MinHashLSH


def candidate_pairs(texts, num_perm, threshold, scheme):
    tokens = ([w.encode("utf-8") for w in t.split()] for t in texts)
    minhashes = MinHash.bulk(tokens, num_perm=num_perm, scheme=scheme)
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    for i, m in enumerate(minhashes):
        lsh.insert(i, m)
    pairs = set()
    for i, m in enumerate(minhashes):
        for j in lsh.query(m):
            if j != i:
                pairs.add((min(i, j), max(i, j)))
    return pairs, (lsh.b, lsh.r)


def read_pairs(path, limit):
    pairs = set()
    with open(path) as f:
        for line in f:
            i, j = map(int, line.split())
            if j < limit:
                pairs.add((i, j))
    return pairs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", type=Path, required=True)
    ap.add_argument("--scheme", default="affine32", choices=["affine32", "legacy"])
    ap.add_argument("--limit", type=int, default=None)
    args = ap.parse_args()

    rust = json.loads((args.dir / "rust.json").read_text())
    texts = (args.dir / "texts.txt").read_text().splitlines()
    assert len(texts) == rust["texts"], f"{len(texts)} texts, rust.json says {rust['texts']}"
    n = len(texts) if args.limit is None else min(args.limit, len(texts))

    start = time.perf_counter()
    py_pairs, (b, r) = candidate_pairs(texts[:n], rust["num_perm"], rust["threshold"], args.scheme)
    secs = time.perf_counter() - start
    py_rate = n / secs
    (args.dir / f"pairs-{args.scheme}-datasketch.txt").write_text(
        "".join(f"{i} {j}\n" for i, j in sorted(py_pairs))
    )

    ours = rust["schemes"][args.scheme]
    rs_rate, rs_rate_1 = rust["texts"] / ours["secs"], rust["texts"] / ours["secs_1_thread"]
    subset = "" if n == len(texts) else f" (timed on the first {n} of {len(texts)} texts, rate extrapolated)"
    print(f"datasketch {datasketch.__version__} {args.scheme}: {py_rate:>10.0f} texts/s ({secs:.1f} s for {n}){subset}")
    print(f"rust       {args.scheme}: {rs_rate:>10.0f} texts/s on {rust['threads']} threads, "
          f"{rs_rate_1:.0f} texts/s on 1 thread")
    print(f"ratio rust/datasketch: {rs_rate / py_rate:.1f}x on {rust['threads']} threads, "
          f"{rs_rate_1 / py_rate:.1f}x on 1 thread (target: >= 20x)")

    rs_pairs = read_pairs(args.dir / f"pairs-{args.scheme}.txt", n)
    same_params = (b, r) == (rust["bands"], rust["rows"])
    print(f"LSH params: datasketch (b={b}, r={r}), rust (b={rust['bands']}, r={rust['rows']})"
          f"{'' if same_params else '  MISMATCH'}")
    only_rs, only_py = rs_pairs - py_pairs, py_pairs - rs_pairs
    verdict = "IDENTICAL" if not only_rs and not only_py else "DIFFERENT"
    print(f"pairs: datasketch {len(py_pairs)}, rust {len(rs_pairs)}, common {len(rs_pairs & py_pairs)}, "
          f"only rust {len(only_rs)}, only datasketch {len(only_py)}: {verdict}")
    for label, extra in (("only rust", only_rs), ("only datasketch", only_py)):
        for i, j in sorted(extra)[:5]:
            print(f"  {label}: {i} {j}")
    return 0 if verdict == "IDENTICAL" and same_params else 1


if __name__ == "__main__":
    sys.exit(main())
