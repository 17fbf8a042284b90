#!/usr/bin/env python3
"""Check a LoRA adapter (and merged model) exported by sagert against PEFT.

Usage: scripts/check-peft.py BASE_DIR ADAPTER_DIR EXPECTED_JSON
                             [--merged MERGED_DIR] [--tol 2e-3]

BASE_DIR is the transformers base model (made from the GGUF by
`sagert models convert`), ADAPTER_DIR the PEFT adapter directory sagert's
trainer exported (adapter_config.json + adapter_model.safetensors), and
EXPECTED_JSON the logits sagert computed with the adapter applied, in eval
mode: {"input_ids": [[int, ...]], "logits": [[[float, ...], ...]]}, shape
(1, t) and (1, t, vocab).

The script

* computes the base model's logits on `input_ids` (float32, eager attention);
* loads the adapter with `PeftModel.from_pretrained` and fails when PEFT finds
  missing or unexpected adapter keys, when a target module has no LoRA layer,
  or when a loaded lora_A / lora_B differs from the safetensors content;
* compares the adapted logits with EXPECTED_JSON (max abs diff <= tol);
* checks the adapter changes the logits (max abs diff base vs adapted
  > 10 x tol), so an all-zero or unapplied adapter cannot pass;
* with --merged, loads MERGED_DIR (and its tokenizer) with transformers and
  compares its logits with EXPECTED_JSON too.

Prints one JSON line {"peft_max_abs_diff", "merged_max_abs_diff",
"adapter_effect", "ok", "errors"} on stdout, the reasons for a failure on
stderr; exits 0 when ok, 1 when not, 2 on usage errors (bad arguments, a
missing path, an EXPECTED_JSON that is not JSON).

Tested with torch 2.15.0, transformers==5.24.0, peft==0.21.2 (pinned in .ci/run).
Runs offline (HF_HUB_OFFLINE=1 unless set).
"""

import argparse
import json
import math
import os
import re
import sys
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# PEFT's wording when adapter keys do not match the model (peft.utils.save_and_load,
# peft.peft_model): warnings with these words become errors.
KEY_WARNING = re.compile(r"(missing|unexpected) adapter keys|missing keys|unexpected keys", re.I)
# How many keys an error line names before it only counts the rest.
MAX_LISTED = 5


class UsageError(Exception):
    """A bad argument or input file: exit status 2."""


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Check a sagert LoRA adapter export against PEFT.",
    )
    parser.add_argument("base", metavar="BASE_DIR", type=Path, help="transformers base model directory")
    parser.add_argument("adapter", metavar="ADAPTER_DIR", type=Path, help="PEFT adapter directory")
    parser.add_argument("expected", metavar="EXPECTED_JSON", type=Path, help="sagert's logits with the adapter (JSON)")
    parser.add_argument("--merged", metavar="MERGED_DIR", type=Path, help="merged transformers model directory")
    parser.add_argument("--tol", metavar="TOL", type=float, default=2e-3, help="max abs logit difference (2e-3)")
    args = parser.parse_args(argv)
    if not (args.tol > 0 and math.isfinite(args.tol)):
        parser.error(f"--tol must be a positive number, got {args.tol}")
    for name, path in [("BASE_DIR", args.base), ("ADAPTER_DIR", args.adapter), ("MERGED_DIR", args.merged)]:
        if path is not None and not path.is_dir():
            parser.error(f"{name} {path} is not a directory")
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        if not (args.adapter / name).is_file():
            parser.error(f"{args.adapter / name} does not exist")
    if not args.expected.is_file():
        parser.error(f"EXPECTED_JSON {args.expected} does not exist")
    return args


def read_expected(path):
    """Returns (input_ids (1, t) long, logits (1, t, vocab) float32) or raises."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        raise UsageError(f"{path}: cannot read JSON: {e}") from e
    if not isinstance(doc, dict) or "input_ids" not in doc or "logits" not in doc:
        raise UsageError(f'{path}: expected an object with "input_ids" and "logits"')
    try:
        ids = torch.tensor(doc["input_ids"], dtype=torch.long)
        logits = torch.tensor(doc["logits"], dtype=torch.float32)
    except (TypeError, ValueError) as e:
        raise UsageError(f"{path}: input_ids / logits are not rectangular numbers: {e}") from e
    if ids.dim() != 2 or ids.shape[0] != 1 or ids.shape[1] == 0:
        raise UsageError(f"{path}: input_ids has shape {tuple(ids.shape)}, expected (1, t) with t > 0")
    if logits.dim() != 3 or tuple(logits.shape[:2]) != tuple(ids.shape):
        raise UsageError(
            f"{path}: logits has shape {tuple(logits.shape)}, expected (1, {ids.shape[1]}, vocab)"
        )
    if not torch.isfinite(logits).all():
        raise UsageError(f"{path}: logits hold non-finite values")
    return ids, logits


def load_causal_lm(path):
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging

    logging.disable_progress_bar()

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    return model


@torch.no_grad()
def logits_of(model, ids):
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
    return out.logits.float()


def max_abs_diff(a, b):
    return float((a - b).abs().max())


def target_matcher(config):
    """A function name -> bool: whether PEFT targets the module called `name`."""
    try:
        from peft.tuners.tuners_utils import check_target_module_exists

        return lambda name: bool(check_target_module_exists(config, name))
    except ImportError:  # older or newer PEFT: the plain rules for a list or a regex
        targets = config.target_modules
        if isinstance(targets, str):
            return lambda name: re.fullmatch(targets, name) is not None
        return lambda name: any(name == t or name.endswith("." + t) for t in targets)


def check_adapter(peft_model, adapter_dir, caught, errors):
    """Appends to `errors` every way the loaded adapter differs from the files."""
    from peft.tuners.lora import LoraLayer
    from peft.utils import get_peft_model_state_dict

    for w in caught:
        if KEY_WARNING.search(str(w.message)):
            message = str(w.message)
            errors.append(f"PEFT: {message[:300]}{'...' if len(message) > 300 else ''}")

    config = peft_model.peft_config["default"]
    if str(getattr(config.peft_type, "value", config.peft_type)) != "LORA":
        errors.append(f"{ADAPTER_CONFIG}: peft_type is {config.peft_type}, expected LORA")
    if str(getattr(config.task_type, "value", config.task_type)) != "CAUSAL_LM":
        errors.append(f"{ADAPTER_CONFIG}: task_type is {config.task_type}, expected CAUSAL_LM")

    # Every module the config targets carries the LoRA layer.
    is_target = target_matcher(config)
    inner = peft_model.base_model.model
    targeted = 0
    for name, module in inner.named_modules():
        if not name or not is_target(name):
            continue
        if isinstance(module, LoraLayer) and "default" in module.lora_A:
            targeted += 1
        elif not isinstance(module, LoraLayer):
            errors.append(f"target module {name} has no LoRA layer ({type(module).__name__})")
    if targeted == 0:
        errors.append(f"no module carries a LoRA layer (target_modules {config.target_modules})")

    # Each tensor in the file was loaded as it is, and nothing is left out.
    saved = load_file(str(adapter_dir / ADAPTER_WEIGHTS))
    loaded = get_peft_model_state_dict(peft_model, adapter_name="default")
    unexpected = sorted(saved.keys() - loaded.keys())
    missing = sorted(loaded.keys() - saved.keys())
    differing = []
    for key in sorted(saved.keys() & loaded.keys()):
        want, got = saved[key], loaded[key].detach().cpu()
        if tuple(want.shape) != tuple(got.shape):
            differing.append(f"{key} (shape {tuple(want.shape)} in the file, {tuple(got.shape)} loaded)")
        elif not torch.equal(want.to(got.dtype), got):
            differing.append(f"{key} (max abs diff {max_abs_diff(want.to(got.dtype), got):.3g})")
    for what, keys in [
        ("unexpected adapter keys (the model has no such LoRA weight)", unexpected),
        ("missing adapter keys", missing),
        ("loaded values differ from the file", differing),
    ]:
        if keys:
            shown = ", ".join(keys[:MAX_LISTED]) + (f" and {len(keys) - MAX_LISTED} more" if len(keys) > MAX_LISTED else "")
            errors.append(f"{ADAPTER_WEIGHTS}: {len(keys)} {what}: {shown}")
    return len(saved)


def check(args):
    from peft import PeftModel

    errors = []
    ids, expected = read_expected(args.expected)
    summary = {"peft_max_abs_diff": None, "merged_max_abs_diff": None, "adapter_effect": None}

    model = load_causal_lm(args.base)
    vocab = model.config.vocab_size
    if int(ids.max()) >= vocab or int(ids.min()) < 0:
        raise UsageError(f"{args.expected}: input_ids outside the vocabulary [0, {vocab})")
    if expected.shape[2] != vocab:
        errors.append(f"{args.expected}: logits have {expected.shape[2]} columns, the model's vocab is {vocab}")
        return summary, errors
    base = logits_of(model, ids)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            peft_model = PeftModel.from_pretrained(model, str(args.adapter), is_trainable=False)
        except Exception as e:  # PEFT raises ValueError, RuntimeError, KeyError...
            errors.append(f"PEFT could not load {args.adapter}: {type(e).__name__}: {e}")
            return summary, errors
    peft_model.eval()
    summary["adapter_tensors"] = check_adapter(peft_model, args.adapter, caught, errors)

    adapted = logits_of(peft_model, ids)
    summary["peft_max_abs_diff"] = max_abs_diff(adapted, expected)
    summary["adapter_effect"] = max_abs_diff(adapted, base)
    if not summary["peft_max_abs_diff"] <= args.tol:
        errors.append(f"PEFT logits differ from sagert's by {summary['peft_max_abs_diff']:.3g} > tol {args.tol}")
    if not summary["adapter_effect"] > 10 * args.tol:
        errors.append(
            f"the adapter barely changes the logits (max abs diff {summary['adapter_effect']:.3g}"
            f" <= 10 x tol): all-zero or not applied"
        )
    del peft_model, model

    if args.merged is not None:
        from transformers import AutoTokenizer

        try:
            AutoTokenizer.from_pretrained(args.merged)
        except Exception as e:
            errors.append(f"transformers could not load the tokenizer of {args.merged}: {e}")
        merged = load_causal_lm(args.merged)
        summary["merged_max_abs_diff"] = max_abs_diff(logits_of(merged, ids), expected)
        if not summary["merged_max_abs_diff"] <= args.tol:
            errors.append(
                f"merged model logits differ from sagert's by {summary['merged_max_abs_diff']:.3g} > tol {args.tol}"
            )
    return summary, errors


def main(argv):
    args = parse_args(argv)
    try:
        summary, errors = check(args)
    except UsageError as e:
        print(f"check-peft: {e}", file=sys.stderr)
        return 2
    summary["ok"] = not errors
    summary["errors"] = errors
    print(json.dumps(summary))
    for e in errors:
        print(f"check-peft: FAIL: {e}", file=sys.stderr)
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
