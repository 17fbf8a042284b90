"""Golden values for `sagert_pipeline::metrics::self_bleu`.

Self-BLEU as Texygen (Zhu et al. 2018) computes it: each text is a hypothesis
scored by NLTK's sentence BLEU-4 (uniform weights, SmoothingFunction().method1)
against all the *other* texts as references; the corpus value is the mean.

The tokenisation is the one `metrics::tokenize` documents: lowercase, split on
every character that is not alphanumeric, empty pieces dropped.

Run: python3 -m pip install nltk && python3 self_bleu.py
(the values in src/metrics.rs were produced with nltk 3.10.4, Python 3).
"""

from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

SETS = {
    "overlap": [
        "The cat sat on the mat.",
        "The cat sat on a mat!",
        "A dog barked at the mailman, loudly.",
        "the cat, the dog and the mat",
    ],
    "short": [
        "hello world",
        "hello",
        "world hello there",
        "Hello, World!",
    ],
    "duplicates": [
        "a b c d e",
        "a b c d e",
        "x y z",
    ],
    # The hypothesis of length 5 has references of lengths 3 and 7: equally
    # close, NLTK takes the shorter one, so no brevity penalty.
    "bp_tie": [
        "one two three four five",
        "one two three",
        "one two three four five six seven",
    ],
    "repeats": [
        "the the the the the the the",
        "the cat is on the mat",
        "there is a cat on the mat",
    ],
}


def tokenize(text):
    return "".join(c if c.isalnum() else " " for c in text.lower()).split()


def self_bleu_scores(texts):
    tokens = [tokenize(t) for t in texts]
    smooth = SmoothingFunction().method1
    scores = []
    for i, hyp in enumerate(tokens):
        refs = tokens[:i] + tokens[i + 1 :]
        scores.append(
            sentence_bleu(refs, hyp, weights=(0.25, 0.25, 0.25, 0.25), smoothing_function=smooth)
        )
    return scores


if __name__ == "__main__":
    for name, texts in SETS.items():
        scores = [float(s) for s in self_bleu_scores(texts)]
        print(f"{name}: per-text {[repr(s) for s in scores]} mean {sum(scores) / len(scores)!r}")
