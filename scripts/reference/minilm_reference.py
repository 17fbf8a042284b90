#!/usr/bin/env python3
"""Reference embeddings for the sagert-encoders MiniLM embedder test.

sentence-transformers (the reference implementation of all-MiniLM-L6-v2:
BERT, mean pooling over the attention mask, L2 normalisation, truncation to
the folder's max_seq_length) embeds a fixed set of sentences on the CPU, from
the same local model folder the Rust embedder loads. The Hugging Face
tokenizer of that folder writes the token ids of every sentence (with [CLS]
and [SEP], truncated the way sentence-transformers truncates), so the Rust
test can check tokenization on its own.

Writes crates/sagert-encoders/tests/fixtures/embed_minilm.json (vectors
rounded to 6 decimals). Run from the repository root after
scripts/fetch-models (needs `pip install sentence-transformers`, which pulls
torch):

    python3 scripts/reference/minilm_reference.py [MODEL_DIR]
"""

import json
import os
import sys

import numpy as np
import sentence_transformers
import torch
from sentence_transformers import SentenceTransformer

OUT = "crates/sagert-encoders/tests/fixtures/embed_minilm.json"

# A long text (well over 256 word pieces) exercises truncation.
LONG = " ".join(
    [
        "Evaluating a language model for safety means asking it many kinds of",
        "questions, recording its answers, and scoring each answer against a",
        "written policy. The questions come from a taxonomy of topics; each",
        "topic has benign and borderline examples, and a reviewer checks that",
        "the examples are labelled correctly before they are used.",
    ]
    * 8
)

SENTENCES = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "Please summarise the data-retention policy in two sentences.",
    "Café au lait, naïve résumé, jalapeño, Ångström and Øresund!",
    "東京は日本の首都です。北京是中国的首都。",
    "Emoji and symbols: 🙂🚀 ©®™ — “quotes” … and dashes – ok",
    "Numbers: 3.14159, 1,000,000 and 42% of 2024-05-17 at 09:30.",
    "?!?!... ((brackets)) [ok] {fine} <tags> #hash @at $5",
    "Multi\nline\ttext\r\nwith a control\u0007char and\u00a0nbsp",
    "Wie geht es dir? Ça va très bien, merci. ¿Dónde está la biblioteca?",
    "unaffable antidisestablishmentarianism supercalifragilisticexpialidocious "
    + "x" * 120,
    "   ",
    "",
    LONG,
]


def main() -> None:
    cache = os.environ.get("SAGERT_CACHE_DIR", os.path.expanduser("~/.cache/sagert"))
    model_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(cache, "models", "minilm-l6")
    torch.set_num_threads(2)
    model = SentenceTransformer(model_dir, device="cpu")
    max_len = model.max_seq_length
    vectors = model.encode(
        SENTENCES, batch_size=4, convert_to_numpy=True, normalize_embeddings=False
    )
    norms = np.linalg.norm(vectors, axis=1)
    assert np.allclose(norms, 1.0, atol=1e-5), f"the model should normalise: {norms}"

    tokenizer = model.tokenizer
    ids = [
        tokenizer(s, truncation=True, max_length=max_len)["input_ids"] for s in SENTENCES
    ]
    assert len(ids[-1]) == max_len, "the long sentence should be truncated"

    doc = {
        "about": "Reference embeddings of all-MiniLM-L6-v2 from sentence-transformers; "
        "written by scripts/reference/minilm_reference.py",
        "sentence_transformers": sentence_transformers.__version__,
        "torch": torch.__version__,
        "max_seq_length": max_len,
        "dim": int(vectors.shape[1]),
        "cases": [
            {
                "text": s,
                "token_ids": i,
                "vector": [round(float(x), 6) for x in v],
            }
            for s, i, v in zip(SENTENCES, ids, vectors)
        ],
    }
    # One line per field of each case: readable, and diffs stay small.
    text = json.dumps(doc, ensure_ascii=False, indent=1)
    cases = ",\n".join(
        "  {\n"
        + ",\n".join(f"   {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in c.items())
        + "\n  }"
        for c in doc["cases"]
    )
    head = text[: text.index('"cases": [') + len('"cases": [')]
    with open(OUT, "w", encoding="utf-8") as f:
        f.write(f"{head}\n{cases}\n ]\n}}\n")
    assert json.load(open(OUT, encoding="utf-8")) == doc
    print(f"wrote {OUT}: {len(SENTENCES)} sentences, dim {doc['dim']}, max_seq_length {max_len}")
    for s, i in zip(SENTENCES, ids):
        print(f"  {len(i):4d} tokens  {s[:60]!r}")


if __name__ == "__main__":
    main()
