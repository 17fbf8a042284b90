#!/usr/bin/env python3
"""Convert the Keras toxicity classifier into files sagert loads without Python.

The toxicity scorer of `sagert_encoders::toxicity` is the Jigsaw classifier of
the PyPI package toxic-comment-classifier 0.3.0 (fetched by
`scripts/fetch-models toxicity`). It ships as Keras 3 HDF5 weights and a
pickled Keras `Tokenizer`; neither is something Rust should parse. This script
converts them, once, into:

* `toxicity.safetensors`, all F32, in the Keras layout (no transposes):

  | name                               | shape        | Keras source                                   |
  | ---------------------------------- | ------------ | ---------------------------------------------- |
  | `embedding.weight`                 | [20000, 50]  | layers/embedding/vars/0                        |
  | `lstm.forward.kernel`              | [50, 200]    | layers/bidirectional/forward_layer/cell/vars/0 |
  | `lstm.forward.recurrent_kernel`    | [50, 200]    | .../forward_layer/cell/vars/1                  |
  | `lstm.forward.bias`                | [200]        | .../forward_layer/cell/vars/2                  |
  | `lstm.backward.{kernel,...}`       | as above     | layers/bidirectional/backward_layer/cell/...   |
  | `dense.kernel`, `dense.bias`       | [100, 50], [50] | layers/dense/vars/{0,1} (relu)              |
  | `classifier.kernel`, `.bias`       | [50, 6], [6] | layers/dense_1/vars/{0,1} (sigmoid)            |

  Kernels are [inputs, outputs] (y = x @ kernel + bias). The 200 LSTM gate
  columns are Keras's: input, forget, cell candidate, output (50 each);
  activation tanh, recurrent activation sigmoid, one bias. The h5 stores the
  cell's variables in creation order (kernel, recurrent_kernel, bias); kernel
  and recurrent kernel have the same shape here (embedding dim = units = 50),
  so the order is taken from Keras's `LSTMCell.build` and confirmed by
  matching the Keras model's scores (scripts/reference/toxicity_reference.py).
  The header metadata records the labels, gate order and source checksums.

* `tokenizer.json`: the tokenizer's configuration (lower, filters, split,
  char_level, oov_token, num_words) plus the `pad_sequences` settings the
  package applies (maxlen 100, padding "pre", truncating "pre": Keras's
  defaults, which the package does not override), and `word_index` limited to
  the entries the model can see (index < num_words: the num_words - 1 most
  frequent words).

The model has no masking (the Embedding is built without mask_zero), so the
pre-padding zeros run through both LSTM directions and the max-pool like any
other token; the forward pass below does the same.

The pickle is read without Keras or TensorFlow: `find_class` maps the Keras
Tokenizer class to a plain stub whose `__dict__` is then read. Only the
Keras Tokenizer, collections and builtins classes are allowed.

Usage (needs only `pip install h5py numpy safetensors`):

    scripts/convert-toxicity.py IN_DIR OUT_DIR [--check]

IN_DIR holds model.weights.h5 and tokenizer.pickle; OUT_DIR may be the same
folder (the model cache, ${SAGERT_CACHE_DIR:-$HOME/.cache/sagert}/models/toxicity).
With --check the converted files are read back and an independent numpy
forward pass prints the scores of the shared/design/ASSETS.md reference
sentences, failing if they differ from the stated values.
"""

import argparse
import hashlib
import json
import os
import pickle
import sys

import numpy as np

LABELS = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]
WEIGHTS_FILE = "toxicity.safetensors"
TOKENIZER_FILE = "tokenizer.json"
WEIGHTS_FORMAT = "sagert-toxicity-bilstm/1"
TOKENIZER_FORMAT = "sagert-keras-tokenizer/1"

# What toxic_classifier/model.py of the package applies after the tokenizer:
# `pad_sequences(seq, maxlen=MAXLEN)` with Keras's defaults.
MAXLEN = 100
PADDING = "pre"
TRUNCATING = "pre"

# shared/design/ASSETS.md: sentence -> {label: stated value}, to the stated decimals.
ASSETS_REFERENCE = [
    ("You are so dumb and stupid!", {"toxic": "0.989", "insult": "0.866"}),
    ("I will kill you", {"toxic": "0.77", "threat": "0.18"}),
    ("Have a nice day :)", {"toxic": "0.04"}),
]

# h5 path of each converted tensor, with its expected shape (None: any size).
H5_TENSORS = {
    "embedding.weight": ("layers/embedding/vars/0", 2),
    "lstm.forward.kernel": ("layers/bidirectional/forward_layer/cell/vars/0", 2),
    "lstm.forward.recurrent_kernel": ("layers/bidirectional/forward_layer/cell/vars/1", 2),
    "lstm.forward.bias": ("layers/bidirectional/forward_layer/cell/vars/2", 1),
    "lstm.backward.kernel": ("layers/bidirectional/backward_layer/cell/vars/0", 2),
    "lstm.backward.recurrent_kernel": ("layers/bidirectional/backward_layer/cell/vars/1", 2),
    "lstm.backward.bias": ("layers/bidirectional/backward_layer/cell/vars/2", 1),
    "dense.kernel": ("layers/dense/vars/0", 2),
    "dense.bias": ("layers/dense/vars/1", 1),
    "classifier.kernel": ("layers/dense_1/vars/0", 2),
    "classifier.bias": ("layers/dense_1/vars/1", 1),
}


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------- weights


def read_h5_weights(path):
    """Read and validate the model's tensors from the Keras 3 .weights.h5 file."""
    import h5py

    tensors = {}
    with h5py.File(path, "r") as f:
        for name, (h5_path, rank) in H5_TENSORS.items():
            if h5_path not in f:
                sys.exit(f"{path}: no dataset {h5_path} (not the expected Keras BiLSTM model)")
            array = np.asarray(f[h5_path], dtype=np.float32)
            if array.ndim != rank:
                sys.exit(f"{path}: {h5_path} has shape {array.shape}, expected rank {rank}")
            tensors[name] = np.ascontiguousarray(array)
    check_shapes(tensors, path)
    return tensors


def check_shapes(t, origin):
    vocab, dim = t["embedding.weight"].shape
    units4 = t["lstm.forward.bias"].shape[0]
    units = units4 // 4
    hidden = t["dense.bias"].shape[0]
    expected = {
        "lstm.forward.kernel": (dim, units4),
        "lstm.forward.recurrent_kernel": (units, units4),
        "lstm.forward.bias": (units4,),
        "lstm.backward.kernel": (dim, units4),
        "lstm.backward.recurrent_kernel": (units, units4),
        "lstm.backward.bias": (units4,),
        "dense.kernel": (2 * units, hidden),
        "dense.bias": (hidden,),
        "classifier.kernel": (hidden, len(LABELS)),
        "classifier.bias": (len(LABELS),),
    }
    for name, shape in expected.items():
        if t[name].shape != shape:
            sys.exit(f"{origin}: {name} has shape {t[name].shape}, expected {shape}")
    if units4 % 4:
        sys.exit(f"{origin}: LSTM bias of {units4} is not 4 gates")
    return vocab, dim, units


# ---------------------------------------------------------------- tokenizer


class _TokenizerStub:
    """Stands in for keras...text.Tokenizer while unpickling: keeps its state."""

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"unexpected Tokenizer state {type(state)}")
        self.__dict__.update(state)


class _TokenizerUnpickler(pickle.Unpickler):
    ALLOWED = {
        ("collections", "OrderedDict"),
        ("collections", "defaultdict"),
        ("builtins", "int"),
        ("builtins", "dict"),
        ("builtins", "list"),
    }

    def find_class(self, module, name):
        if name == "Tokenizer" and (module.startswith("keras") or module.startswith("tensorflow")):
            return _TokenizerStub
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from the tokenizer pickle")


def read_tokenizer_pickle(path):
    with open(path, "rb") as f:
        tok = _TokenizerUnpickler(f).load()
    if not isinstance(tok, _TokenizerStub):
        sys.exit(f"{path}: not a pickled Keras Tokenizer ({type(tok).__name__})")
    state = tok.__dict__
    for key in ("word_index", "filters", "split", "lower", "num_words", "oov_token", "char_level"):
        if key not in state:
            sys.exit(f"{path}: the Tokenizer has no {key!r}")
    if state["char_level"]:
        sys.exit(f"{path}: char_level tokenizers are not supported")
    if state.get("analyzer") is not None:
        sys.exit(f"{path}: a custom analyzer cannot be converted")
    num_words = state["num_words"]
    word_index = {
        str(w): int(i) for w, i in state["word_index"].items() if num_words is None or int(i) < num_words
    }
    oov = state["oov_token"]
    if oov is not None and oov not in word_index:
        sys.exit(f"{path}: oov_token {oov!r} is not in word_index")
    return {
        "format": TOKENIZER_FORMAT,
        "source": "tokenizer.pickle (keras.src.legacy.preprocessing.text.Tokenizer) of "
        "toxic-comment-classifier 0.3.0",
        "lower": bool(state["lower"]),
        "filters": str(state["filters"]),
        "split": str(state["split"]),
        "char_level": False,
        "oov_token": oov,
        "num_words": num_words,
        "maxlen": MAXLEN,
        "padding": PADDING,
        "truncating": TRUNCATING,
        # Sorted by index, so the file reads most frequent first.
        "word_index": dict(sorted(word_index.items(), key=lambda kv: kv[1])),
    }


# ---------------------------------------------------------------- numpy model


def load_converted(out_dir):
    from safetensors.numpy import load_file

    tensors = load_file(os.path.join(out_dir, WEIGHTS_FILE))
    check_shapes(tensors, WEIGHTS_FILE)
    with open(os.path.join(out_dir, TOKENIZER_FILE), encoding="utf-8") as f:
        tokenizer = json.load(f)
    return tensors, tokenizer


def text_to_sequence(tok, text):
    """Keras's text_to_word_sequence + texts_to_sequences, reimplemented."""
    if tok["lower"]:
        text = text.lower()
    text = text.translate(str.maketrans({c: tok["split"] for c in tok["filters"]}))
    words = [w for w in text.split(tok["split"]) if w]
    word_index, num_words, oov = tok["word_index"], tok["num_words"], tok["oov_token"]
    oov_index = word_index.get(oov) if oov is not None else None
    ids = []
    for w in words:
        i = word_index.get(w)
        if i is not None and (num_words is None or i < num_words):
            ids.append(i)
        elif oov_index is not None:
            ids.append(oov_index)
    return ids


def pad(tok, ids):
    """Keras's pad_sequences for one sequence (value 0)."""
    n = tok["maxlen"]
    if len(ids) > n:
        ids = ids[-n:] if tok["truncating"] == "pre" else ids[:n]
    zeros = [0] * (n - len(ids))
    return zeros + ids if tok["padding"] == "pre" else ids + zeros


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def lstm(x, kernel, recurrent, bias):
    """Keras LSTM over x [B, T, D], return_sequences; gates i, f, c, o."""
    b, t, _ = x.shape
    units = recurrent.shape[0]
    h = np.zeros((b, units), np.float32)
    c = np.zeros((b, units), np.float32)
    xw = x @ kernel + bias
    out = np.empty((b, t, units), np.float32)
    for step in range(t):
        z = xw[:, step] + h @ recurrent
        i = sigmoid(z[:, :units])
        f = sigmoid(z[:, units : 2 * units])
        g = np.tanh(z[:, 2 * units : 3 * units])
        o = sigmoid(z[:, 3 * units :])
        c = f * c + i * g
        h = o * np.tanh(c)
        out[:, step] = h
    return out


def forward(tensors, ids):
    """Scores [B, 6] for padded ids [B, T]: the Keras graph, without masking."""
    t = tensors
    x = t["embedding.weight"][np.asarray(ids)]
    fwd = lstm(x, t["lstm.forward.kernel"], t["lstm.forward.recurrent_kernel"], t["lstm.forward.bias"])
    # go_backwards: the backward layer reads the reversed sequence; Bidirectional
    # flips its outputs back, which the max over time makes irrelevant anyway.
    bwd = lstm(
        x[:, ::-1], t["lstm.backward.kernel"], t["lstm.backward.recurrent_kernel"], t["lstm.backward.bias"]
    )[:, ::-1]
    seq = np.concatenate([fwd, bwd], axis=-1)  # merge_mode="concat": forward | backward
    pooled = seq.max(axis=1)
    hidden = np.maximum(pooled @ t["dense.kernel"] + t["dense.bias"], 0.0)
    return sigmoid(hidden @ t["classifier.kernel"] + t["classifier.bias"])


def score(tensors, tokenizer, texts):
    ids = [pad(tokenizer, text_to_sequence(tokenizer, text)) for text in texts]
    return forward(tensors, np.asarray(ids, dtype=np.int64))


# ---------------------------------------------------------------- main


def convert(in_dir, out_dir):
    from safetensors.numpy import save_file

    h5_path = os.path.join(in_dir, "model.weights.h5")
    pickle_path = os.path.join(in_dir, "tokenizer.pickle")
    for path in (h5_path, pickle_path):
        if not os.path.isfile(path):
            sys.exit(f"missing {path} (run scripts/fetch-models toxicity)")
    tensors = read_h5_weights(h5_path)
    tokenizer = read_tokenizer_pickle(pickle_path)
    vocab = tensors["embedding.weight"].shape[0]
    if tokenizer["num_words"] is None or tokenizer["num_words"] > vocab:
        sys.exit(f"tokenizer num_words {tokenizer['num_words']} exceeds the embedding's {vocab} rows")

    metadata = {
        "format": WEIGHTS_FORMAT,
        "architecture": "embedding -> bidirectional LSTM (return_sequences, concat forward|backward)"
        " -> global max pool over time -> dense relu -> dense sigmoid; no masking",
        "labels": ",".join(LABELS),
        "lstm_gate_order": "i,f,c,o",
        "lstm_activation": "tanh",
        "lstm_recurrent_activation": "sigmoid",
        "kernel_layout": "[inputs, outputs]",
        "source": "toxic-comment-classifier 0.3.0 model.weights.h5 (Keras 3)",
        "source_sha256": sha256(h5_path),
        "tokenizer_source_sha256": sha256(pickle_path),
        "converted_by": "scripts/convert-toxicity.py",
    }
    tokenizer["source_sha256"] = metadata["tokenizer_source_sha256"]

    os.makedirs(out_dir, exist_ok=True)
    # Write beside the target and rename, so a reader never sees half a file.
    weights_out = os.path.join(out_dir, WEIGHTS_FILE)
    save_file(tensors, weights_out + ".part", metadata=metadata)
    os.chmod(weights_out + ".part", 0o644)
    os.replace(weights_out + ".part", weights_out)
    tokenizer_out = os.path.join(out_dir, TOKENIZER_FILE)
    with open(tokenizer_out + ".part", "w", encoding="utf-8") as f:
        json.dump(tokenizer, f, ensure_ascii=False, indent=0)
        f.write("\n")
    os.replace(tokenizer_out + ".part", tokenizer_out)
    print(f"wrote {weights_out} ({len(tensors)} tensors)")
    print(f"wrote {tokenizer_out} ({len(tokenizer['word_index'])} words)")


def check(out_dir):
    tensors, tokenizer = load_converted(out_dir)
    texts = [text for text, _ in ASSETS_REFERENCE]
    scores = score(tensors, tokenizer, texts)
    failed = 0
    for (text, stated), row in zip(ASSETS_REFERENCE, scores):
        values = " ".join(f"{label} {v:.5f}" for label, v in zip(LABELS, row))
        print(f"{text!r}: {values}")
        for label, value in stated.items():
            decimals = len(value.split(".")[1])
            got = float(row[LABELS.index(label)])
            ok = abs(got - float(value)) <= 0.5 * 10**-decimals
            failed += not ok
            print(f"  {label}: {got:.{decimals + 2}f} vs ASSETS.md {value} {'ok' if ok else 'MISMATCH'}")
    if failed:
        sys.exit(f"{failed} score(s) differ from shared/design/ASSETS.md")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("in_dir", help="folder with model.weights.h5 and tokenizer.pickle")
    parser.add_argument("out_dir", help="folder for toxicity.safetensors and tokenizer.json")
    parser.add_argument(
        "--check", action="store_true", help="score the ASSETS.md sentences with the converted files"
    )
    args = parser.parse_args()
    convert(args.in_dir, args.out_dir)
    if args.check:
        check(args.out_dir)


if __name__ == "__main__":
    main()
