#!/usr/bin/env python3
"""Golden values for sagert_align::optim::AdamW from torch.optim.AdamW.

Runs torch.optim.AdamW (float32, CPU, the default single-tensor implementation)
for three steps on two small fixed parameters with fixed per-step gradients,
and prints the parameters after each step as Rust constants. The output is
pasted into the tests at the bottom of crates/sagert-align/src/optim.rs.

One gradient is of the order of eps (2e-8), so where eps enters the update matters, and one
is zero. Two cases:
  CONST_LR  lr 1e-2 every step, weight decay 0.01, default betas and eps;
  SCHED_LR  the same with the learning rate changed before each step
            (1e-2, 5e-3, 2.5e-3, as a schedule would) and weight decay 0.1.

Usage: python3 scripts/golden-adamw.py
"""

import numpy as np
import torch

P0 = [[0.5, -1.0, 0.25], [2.0, 0.0, -0.75]]
Q0 = [0.1, -0.2]
GRADS = [
    ([[0.1, -0.2, 0.3], [2e-8, 1.5, -0.4]], [0.05, -0.5]),
    ([[-0.3, 0.1, 0.2], [0.25, -1.0, 0.0]], [0.2, 0.01]),
    ([[0.05, 0.05, -0.6], [1.0, 0.3, 0.2]], [-0.1, 0.3]),
]


def run(lrs, weight_decay):
    p = torch.tensor(P0, dtype=torch.float32, requires_grad=True)
    q = torch.tensor(Q0, dtype=torch.float32, requires_grad=True)
    opt = torch.optim.AdamW(
        [p, q], lr=lrs[0], betas=(0.9, 0.999), eps=1e-8, weight_decay=weight_decay
    )
    out = []
    for lr, (gp, gq) in zip(lrs, GRADS):
        for group in opt.param_groups:
            group["lr"] = lr
        p.grad = torch.tensor(gp, dtype=torch.float32)
        q.grad = torch.tensor(gq, dtype=torch.float32)
        opt.step()
        out.append((p.detach().flatten().tolist(), q.detach().flatten().tolist()))
    return out


def rust_array(values):
    # The shortest decimal that reads back as the same f32 (what clippy accepts).
    return "[" + ", ".join(str(np.float32(v)) for v in values) + "]"


def emit(name, lrs, weight_decay):
    steps = run(lrs, weight_decay)
    print(f"// lrs {lrs}, weight_decay {weight_decay}: (p, q) after each step")
    print(f"const {name}: [([f32; 6], [f32; 2]); {len(steps)}] = [")
    for p, q in steps:
        print(f"    ({rust_array(p)}, {rust_array(q)}),")
    print("];")


if __name__ == "__main__":
    print(f"// torch {torch.__version__}")
    emit("CONST_LR", [1e-2, 1e-2, 1e-2], 0.01)
    emit("SCHED_LR", [1e-2, 5e-3, 2.5e-3], 0.1)
