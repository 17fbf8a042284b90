#!/usr/bin/env python3
"""Reference scores for the sagert-encoders toxicity scorer test.

Two independent implementations score a fixed set of sentences (the three of
shared/design/ASSETS.md plus neutral and mildly insulting placeholders; no
real threats or harmful content):

* the original model: Keras 3 (any backend; jax by default) builds the graph
  of toxic_classifier/model.py of toxic-comment-classifier 0.3.0, loads
  model.weights.h5, and tokenizes with the pickled Keras Tokenizer and
  `pad_sequences(maxlen=100)`, exactly as the package does;
* the numpy forward pass of scripts/convert-toxicity.py, on the converted
  toxicity.safetensors and tokenizer.json.

The fixture's scores and token ids are Keras's when Keras is installed (the
fixture's "reference" field says which was used); the numpy scores must then
agree to 1e-5. Without Keras the numpy scores are written, with a warning.

Writes crates/sagert-encoders/tests/fixtures/toxicity_reference.json (scores
to 7 decimals). Run from the repository root after scripts/fetch-models
toxicity and scripts/convert-toxicity.py:

    pip install h5py numpy safetensors            # numpy reference
    pip install keras jax scipy                   # + the original model (optional)
    python3 scripts/reference/toxicity_reference.py [MODEL_DIR]

MODEL_DIR defaults to ${SAGERT_CACHE_DIR:-$HOME/.cache/sagert}/models/toxicity;
when its converted files are missing they are converted into a temporary
folder first.
"""

import importlib.util
import json
import os
import pickle
import sys
import tempfile

import numpy as np

OUT = "crates/sagert-encoders/tests/fixtures/toxicity_reference.json"
HERE = os.path.dirname(os.path.abspath(__file__))

NEUTRAL = "The committee met on Tuesday to review the budget for the new library building."
INSULT = "You are so dumb and stupid!"

SENTENCES = [
    # shared/design/ASSETS.md
    "You are so dumb and stupid!",
    "I will kill you",
    "Have a nice day :)",
    # the package README's batch example
    "I hate you so much!",
    "This is wonderful news.",
    "You're disgusting!",
    "Absolutely love your energy!",
    "You're the worst person ever!",
    # more placeholders: neutral, mild insults, tokenizer edge cases
    "Thanks for fixing the citation on this article, much appreciated.",
    "What an idiot, you clearly never read the talk page.",
    "Please stop vandalising this page, you moron.",
    "WHY would you DO that?!?! Ugh... LOL",
    # tab and newline are filters; the non-breaking space is not (it is a word);
    # "café" and "tuesdays" have indices >= num_words and are dropped
    "The café opens\ton Tuesdays\nand the\u00a0talk page is Don\u2019t-Panic.",
    "",
    "qwertyzxcv asdfghjkl zzzzzzzq",
    # over 100 words: pre-truncation keeps the last 100, so the insult at the
    # start is cut and the one at the end is kept
    INSULT + " " + " ".join([NEUTRAL] * 8),
    " ".join([NEUTRAL] * 8) + " " + INSULT,
]


def load_convert_module():
    path = os.path.join(HERE, "..", "convert-toxicity.py")
    spec = importlib.util.spec_from_file_location("convert_toxicity", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def numpy_reference(conv, model_dir):
    converted = all(
        os.path.isfile(os.path.join(model_dir, f)) for f in (conv.WEIGHTS_FILE, conv.TOKENIZER_FILE)
    )
    if converted:
        tensors, tokenizer = conv.load_converted(model_dir)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            conv.convert(model_dir, tmp)
            tensors, tokenizer = conv.load_converted(tmp)
    ids = [conv.text_to_sequence(tokenizer, s) for s in SENTENCES]
    return ids, conv.score(tensors, tokenizer, SENTENCES)


def keras_reference(conv, model_dir):
    """The package's own pipeline, on the original files; None without Keras."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    try:
        import keras
        from keras import layers
        from keras.utils import pad_sequences
    except ImportError as e:
        print(f"warning: Keras not importable ({e}); writing numpy scores only", file=sys.stderr)
        return None
    with open(os.path.join(model_dir, "tokenizer.pickle"), "rb") as f:
        tokenizer = pickle.load(f)
    # toxic_classifier/model.py, verbatim apart from the names.
    inp = layers.Input(shape=(conv.MAXLEN,))
    x = layers.Embedding(input_dim=20000, output_dim=50, trainable=False)(inp)
    x = layers.Bidirectional(layers.LSTM(50, return_sequences=True, dropout=0.1, recurrent_dropout=0.1))(x)
    x = layers.GlobalMaxPooling1D()(x)
    x = layers.Dense(50, activation="relu")(x)
    x = layers.Dropout(0.1)(x)
    out = layers.Dense(len(conv.LABELS), activation="sigmoid")(x)
    model = keras.Model(inputs=inp, outputs=out)
    model.compile(loss="binary_crossentropy", optimizer="adam")
    model.load_weights(os.path.join(model_dir, "model.weights.h5"))

    ids = tokenizer.texts_to_sequences(SENTENCES)
    padded = pad_sequences(ids, maxlen=conv.MAXLEN)
    scores = model.predict(padded, verbose=0)
    version = f"keras {keras.__version__} ({keras.backend.backend()} backend)"
    return version, [[int(i) for i in row] for row in ids], np.asarray(scores, dtype=np.float64)


def main():
    model_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.environ.get("SAGERT_CACHE_DIR") or os.path.expanduser("~/.cache/sagert"), "models", "toxicity"
    )
    conv = load_convert_module()
    np_ids, np_scores = numpy_reference(conv, model_dir)
    keras_result = keras_reference(conv, model_dir)

    if keras_result is None:
        reference, ids, scores, numpy_diff = "numpy forward of scripts/convert-toxicity.py", np_ids, np_scores, None
    else:
        version, ids, scores = keras_result
        reference = f"{version}, original model.weights.h5 + tokenizer.pickle"
        if ids != np_ids:
            bad = [s for s, a, b in zip(SENTENCES, ids, np_ids) if a != b]
            sys.exit(f"numpy tokenizer differs from Keras on {bad!r}")
        numpy_diff = float(np.abs(scores - np_scores).max())
        print(f"numpy vs Keras: max |diff| {numpy_diff:.2e}")
        if numpy_diff > 1e-5:
            sys.exit("numpy forward disagrees with Keras")

    cases = [
        {
            "text": text,
            "ids": row_ids,
            "scores": {label: round(float(v), 7) for label, v in zip(conv.LABELS, row)},
        }
        for text, row_ids, row in zip(SENTENCES, ids, scores)
    ]
    fixture = {
        "generated_by": "scripts/reference/toxicity_reference.py",
        "reference": reference,
        "numpy_max_abs_diff": numpy_diff,
        "maxlen": conv.MAXLEN,
        "labels": conv.LABELS,
        "cases": cases,
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(fixture, f, ensure_ascii=False, indent=1)
        f.write("\n")
    for case in cases:
        print(f"{case['text'][:50]!r:54} toxic {case['scores']['toxic']:.4f} insult {case['scores']['insult']:.4f}")
    print(f"wrote {OUT} ({len(cases)} cases, reference: {reference})")


if __name__ == "__main__":
    main()
