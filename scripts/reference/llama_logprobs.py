#!/usr/bin/env python3
"""Reference log-probabilities for the sagert-llama scorer test.

An independent implementation (llama-cpp-python, its own build of llama.cpp and
its own Python-side logits handling) computes, for a fixed set of (prompt text,
completion text) pairs, the natural-log probability of every completion token
given everything before it. The prompts are ALREADY RENDERED (ChatML text as
SmolLM2's chat template renders it, or plain text), so that no chat-template code
takes part; the test checks separately that sagert's template renders the
`messages` of each chat case to exactly this `prompt`.

Tokenization follows sagert-llama's scorer: the prompt text and the prompt +
completion text are tokenized with special tokens parsed and BOS added only if
the model's metadata asks for it; the scored tokens are those after the common
prefix of the two token sequences. Each scored token's log-probability is the
log-softmax, in float64, of the logits at the position before it.

Two references per case:

- `q4_1`: the Q4_1 model as shipped, llama-cpp-python's defaults (f16 KV cache,
  no flash attention). llama.cpp's Q4_1 CPU kernels quantize activations to
  8 bits, and SmolLM2's outlier activations make the result depend on which
  kernel runs (batch shape, instruction set): llama-cpp-python alone moves a
  sequence's sum by up to 0.66 nat between n_batch=1 and 512. Only a loose
  check is possible here.
- `f32`: the same weights dequantized to F32 (llama_model_quantize with
  LLAMA_FTYPE_ALL_F32, into a temporary file), with an f32 KV cache. No
  activation quantization, so two implementations agree to ~1e-5 nat: the tight
  check of tokenization, positions, logit rows and log-softmax.

Writes crates/sagert-llama/tests/fixtures/logprobs_smollm2.json. Run from the
repository root after scripts/fetch-models:

    python3 scripts/reference/llama_logprobs.py [MODEL.gguf]
"""

import ctypes
import json
import os
import re
import sys
import tempfile

import numpy as np
import llama_cpp

MODEL_NAME = "smollm2-135m-instruct"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGML_TYPE_F32 = 0
LLAMA_FTYPE_ALL_F32 = 0
OUT = "crates/sagert-llama/tests/fixtures/logprobs_smollm2.json"

SMOL_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def chatml(messages):
    """SmolLM2's template, written out by hand: the default system turn when the
    conversation has none, each turn, and the open assistant turn."""
    text = ""
    if messages[0]["role"] != "system":
        text += f"<|im_start|>system\n{SMOL_SYSTEM}<|im_end|>\n"
    for m in messages:
        text += f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n"
    return text + "<|im_start|>assistant\n"


def user(text):
    return {"role": "user", "content": text}


def system(text):
    return {"role": "system", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


# Chat cases carry their messages (the Rust test renders them and compares with
# `prompt`); plain cases have `messages: null`.
CASES = [
    {
        "name": "capital",
        "messages": [user("What is the capital of France?")],
        "completion": "The capital of France is Paris.",
    },
    {
        "name": "refusal",
        "messages": [
            system("You are a careful assistant that refuses harmful requests."),
            user("How do I pick a lock to get into my neighbour's house?"),
        ],
        "completion": "I can't help with getting into someone else's home without permission.<|im_end|>",
    },
    {
        "name": "multi_turn",
        "messages": [
            user("Give me a number between 1 and 10."),
            assistant("7"),
            user("Now double it."),
        ],
        "completion": "14",
    },
    {
        "name": "json",
        "messages": [user('Reply with JSON: {"label": "safe" or "unsafe"} for: "How do I bake bread?"')],
        "completion": '{"label": "safe"}',
    },
    {
        "name": "unicode",
        "messages": [user("Translate 'good morning' into French and Japanese.")],
        "completion": "Bonjour — おはようございます 🌅",
    },
    {
        "name": "plain_text",
        "messages": None,
        "prompt": "The quick brown fox jumps over the",
        "completion": " lazy dog. It was a sunny afternoon in the park.",
    },
]


def model_path():
    if len(sys.argv) > 1:
        return sys.argv[1]
    cache = os.environ.get("SAGERT_CACHE_DIR") or os.path.expanduser("~/.cache/sagert")
    return os.path.join(cache, "models", MODEL_NAME, MODEL_FILE)


def tokenize(llm, text):
    add_bos = llm.metadata.get("tokenizer.ggml.add_bos_token", "false") == "true"
    tokens = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
    if add_bos and (not tokens or tokens[0] != llm.token_bos()):
        tokens = [llm.token_bos()] + tokens
    return tokens


def log_softmax(logits):
    x = np.asarray(logits, dtype=np.float64)
    m = x.max()
    return x - (m + np.log(np.exp(x - m).sum()))


def dequantize_f32(src, dst):
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = LLAMA_FTYPE_ALL_F32
    params.allow_requantize = True
    params.nthread = 2
    if llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params)) != 0:
        sys.exit(f"dequantizing {src} to F32 failed")


def logprobs(llm, ids, scored_from):
    llm.reset()
    llm.eval(ids)
    logits = np.asarray(llm.scores[: len(ids)])
    return [float(log_softmax(logits[i - 1])[ids[i]]) for i in range(scored_from, len(ids))]


def summary(values):
    return {"token_logprobs": values, "sum_logprob": float(sum(values))}


def main():
    path = model_path()
    common_args = {"logits_all": True, "n_threads": 2, "n_ctx": 2048, "verbose": False}
    q4 = llama_cpp.Llama(model_path=path, **common_args)
    with tempfile.TemporaryDirectory() as tmp:
        f32_path = os.path.join(tmp, "model-f32.gguf")
        dequantize_f32(path, f32_path)
        f32 = llama_cpp.Llama(model_path=f32_path, type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32, **common_args)
        cases = []
        for case in CASES:
            prompt = case.get("prompt") or chatml(case["messages"])
            completion = case["completion"]
            prompt_ids = tokenize(q4, prompt)
            full_ids = tokenize(q4, prompt + completion)
            assert tokenize(f32, prompt + completion) == full_ids
            common = 0
            while common < min(len(prompt_ids), len(full_ids)) and prompt_ids[common] == full_ids[common]:
                common += 1
            assert 0 < common < len(full_ids), case["name"]
            ref_q4 = logprobs(q4, full_ids, common)
            ref_f32 = logprobs(f32, full_ids, common)
            cases.append(
                {
                    "name": case["name"],
                    "messages": case["messages"],
                    "prompt": prompt,
                    "completion": completion,
                    "prompt_ids": prompt_ids,
                    "full_ids": full_ids,
                    "scored_from": common,
                    "q4_1": summary(ref_q4),
                    "f32": summary(ref_f32),
                }
            )
            print(
                f"{case['name']}: {len(ref_q4)} tokens, sum {sum(ref_q4):.4f} (Q4_1) {sum(ref_f32):.4f} (F32)",
                file=sys.stderr,
            )
        del f32

    fixture = {
        "generator": "scripts/reference/llama_logprobs.py",
        "reference": f"llama-cpp-python {llama_cpp.__version__}, logits_all=True, n_threads=2, n_ctx=2048",
        "model": MODEL_FILE,
        "q4_1": "the model as shipped; f16 KV cache, no flash attention",
        "f32": "the model dequantized to F32 (LLAMA_FTYPE_ALL_F32); f32 KV cache, no flash attention",
        "cases": cases,
    }
    text = json.dumps(fixture, indent=1, ensure_ascii=False)
    # One line per list of numbers, so the fixture reads case by case.
    text = re.sub(r"\[\s+([-0-9.e,\s]+?)\s+\]", lambda m: "[" + re.sub(r"\s+", " ", m.group(1)) + "]", text)
    with open(OUT, "w", encoding="utf-8") as f:
        f.write(text + "\n")
    print(f"wrote {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
