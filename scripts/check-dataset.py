#!/usr/bin/env python3
"""Check a dataset directory written by sagert's export (sagert_pipeline::export).

Usage: scripts/check-dataset.py DIR

For every config the directory holds (trl, trl-chat, kto, redteam), loads each
split with Hugging Face `datasets` three ways: `load_dataset("json", ...)` on
the JSON Lines file, `load_dataset("parquet", ...)` on the Parquet file, and
`load_dataset(DIR, config)` through the dataset card's `configs`. Checks that

* the three agree row for row, with the columns in the same order;
* trl / trl-chat rows have a non-empty prompt, chosen and rejected (trl-chat:
  lists of {role, content} messages, `user` for the prompt, `assistant` for the
  responses);
* kto rows have prompt, completion and a boolean label, two rows per pair id,
  one labelled true and one false;
* redteam rows have a prompt and its categories, and no response columns;
* an empty split has an empty JSONL file and a Parquet file with the same
  columns as its config and no rows (`datasets` cannot load a split without
  rows, so these are read with pyarrow, and the card leaves them out);
* the card's `configs` are exactly the directories written that have rows.

Prints one line per config; exits 1 with a message at the first failure.
Needs `pip install datasets` (it runs offline: HF_HUB_OFFLINE=1 unless set).
"""

import os
import sys
import tempfile
from collections import Counter

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

SPLITS = {
    "trl": ["train", "test"],
    "trl-chat": ["train", "test"],
    "kto": ["train", "test"],
    "redteam": ["prompts"],
}
CATEGORY_COLUMNS = ["taxonomy_path", "macro_category", "micro_category", "leaf", "jailbreak_type"]
RESPONSE_COLUMNS = ["chosen", "rejected", "completion", "label"]


class CheckFailed(Exception):
    pass


def require(ok, message):
    if not ok:
        raise CheckFailed(message)


def nonempty_str(value):
    return isinstance(value, str) and value.strip() != ""


def check_messages(where, value, role):
    require(isinstance(value, list) and len(value) > 0, f"{where}: expected a non-empty list of messages, got {value!r}")
    for m in value:
        require(isinstance(m, dict) and set(m) == {"role", "content"}, f"{where}: message is not {{role, content}}: {m!r}")
        require(m["role"] == role, f"{where}: role {m['role']!r}, expected {role!r}")
        require(nonempty_str(m["content"]), f"{where}: empty message content")


def check_row(config, where, row):
    if config == "trl":
        for column in ("prompt", "chosen", "rejected"):
            require(nonempty_str(row.get(column)), f"{where}: `{column}` is not a non-empty string")
    elif config == "trl-chat":
        check_messages(f"{where}: prompt", row.get("prompt"), "user")
        check_messages(f"{where}: chosen", row.get("chosen"), "assistant")
        check_messages(f"{where}: rejected", row.get("rejected"), "assistant")
    elif config == "kto":
        require(nonempty_str(row.get("prompt")), f"{where}: `prompt` is not a non-empty string")
        require(nonempty_str(row.get("completion")), f"{where}: `completion` is not a non-empty string")
        require(isinstance(row.get("label"), bool), f"{where}: `label` is not a boolean")
    elif config == "redteam":
        require(nonempty_str(row.get("prompt")), f"{where}: `prompt` is not a non-empty string")
        for column in CATEGORY_COLUMNS:
            require(nonempty_str(row.get(column)), f"{where}: `{column}` is not a non-empty string")
        require(row.get("split") in ("train", "test"), f"{where}: `split` is {row.get('split')!r}")


def rows_of(ds):
    return [dict(row) for row in ds]


def compare(where, a_name, a, b_name, b):
    require(
        list(a.column_names) == list(b.column_names),
        f"{where}: columns differ: {a_name} {a.column_names} vs {b_name} {b.column_names}",
    )
    require(len(a) == len(b), f"{where}: {a_name} has {len(a)} rows, {b_name} {len(b)}")
    for i, (x, y) in enumerate(zip(rows_of(a), rows_of(b))):
        require(x == y, f"{where}: row {i + 1} differs between {a_name} and {b_name}:\n  {x}\n  {y}")


def jsonl_rows(path):
    with open(path, encoding="utf-8") as f:
        return sum(1 for line in f if line.strip())


def check_config(datasets, root, config, cache):
    import pyarrow.parquet as pq

    splits = SPLITS[config]
    files = {s: os.path.join(root, config, f"{s}.jsonl") for s in splits}
    parquet = {s: os.path.join(root, config, f"{s}.parquet") for s in splits}
    for path in list(files.values()) + list(parquet.values()):
        require(os.path.isfile(path), f"{config}: missing file {path}")
    loadable = [s for s in splits if jsonl_rows(files[s]) > 0]
    schemas = {s: pq.read_schema(parquet[s]).names for s in splits}
    for split in splits:
        require(
            schemas[split] == schemas[splits[0]],
            f"{config}/{split}: Parquet columns {schemas[split]} differ from {splits[0]}'s {schemas[splits[0]]}",
        )

    counts = []
    card = None
    if loadable:
        card = datasets.load_dataset(root, config, cache_dir=cache)
        require(sorted(card) == sorted(loadable), f"{config}: the card's splits are {sorted(card)}, expected {loadable}")
    for split in splits:
        where = f"{config}/{split}"
        if split not in loadable:
            # `datasets` fails on a split without rows (JSON or Parquet); the
            # files must still be there, the Parquet one with its schema.
            rows = pq.read_metadata(parquet[split]).num_rows
            require(rows == 0, f"{where}: empty JSONL but {rows} Parquet rows")
            counts.append(f"{split}=0")
            continue
        js = datasets.load_dataset("json", data_files={split: files[split]}, cache_dir=cache)[split]
        pqs = datasets.load_dataset("parquet", data_files={split: parquet[split]}, cache_dir=cache)[split]
        compare(where, "json", js, "parquet", pqs)
        compare(where, "card", card[split], "parquet", pqs)
        if config == "redteam":
            extra = [c for c in RESPONSE_COLUMNS if c in pqs.column_names]
            require(not extra, f"{where}: response columns {extra} in the red-team set")
        rows = rows_of(pqs)
        for i, row in enumerate(rows):
            check_row(config, f"{where} row {i + 1}", row)
        if config == "kto":
            labels = Counter((row["id"], row["label"]) for row in rows)
            for pair_id in {pair_id for pair_id, _ in labels}:
                require(
                    labels[(pair_id, True)] == 1 and labels[(pair_id, False)] == 1,
                    f"{where}: pair {pair_id} does not have exactly one true and one false row",
                )
        counts.append(f"{split}={len(rows)}")
    checked = "json == parquet == card" if loadable else "no rows: files and schema only"
    return f"{config}: {' '.join(counts)} rows, {len(schemas[splits[0]])} columns; {checked}"


def main(argv):
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    root = argv[1]
    try:
        import datasets
    except ImportError:
        print("check-dataset: the Python package `datasets` is missing (pip install datasets)", file=sys.stderr)
        return 1
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    try:
        require(os.path.isfile(os.path.join(root, "README.md")), f"{root}: no README.md (dataset card)")
        require(os.path.isfile(os.path.join(root, "manifest.json")), f"{root}: no manifest.json")
        written = sorted(c for c in SPLITS if os.path.isdir(os.path.join(root, c)))
        require(written, f"{root}: no format directory ({', '.join(SPLITS)})")
        with_rows = [
            c for c in written if any(jsonl_rows(os.path.join(root, c, f"{s}.jsonl")) > 0 for s in SPLITS[c])
        ]
        if with_rows:
            in_card = sorted(datasets.get_dataset_config_names(root))
            require(
                in_card == with_rows,
                f"{root}: the card's configs {in_card} are not the directories with rows {with_rows}",
            )
        with tempfile.TemporaryDirectory(prefix="check-dataset-") as cache:
            for config in written:
                print(check_config(datasets, root, config, cache))
    except CheckFailed as e:
        print(f"check-dataset: FAILED: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # a load error from `datasets` is a failed check too
        print(f"check-dataset: FAILED: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(f"check-dataset: {root}: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
