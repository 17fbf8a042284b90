#!/usr/bin/env python3
"""Golden values for crates/sagert-align/tests/loss.rs (the preference losses).

Runs the preference losses of Hugging Face TRL (DPO sigmoid/IPO/hinge, CPO
loss_type="simpo" with cpo_alpha=0, ORPO), written out again here in plain
float64 torch from their formulas, on small fixed inputs, backpropagates, and
prints Rust source: the inputs, each loss value, its gradient with respect to
every differentiable input, and the detached rewards. The Rust test holds that
output inline; rerun this script and paste its output there if an input or a
formula changes.

Conventions, as in TRL:
- policy/reference "logps" are per-sequence sums of completion-token
  log-probabilities; lengths are the counts of scored tokens.
- DPO: logits = (pc - pr) - (rc - rr); sigmoid with label smoothing ls,
  hinge relu(1 - beta*logits), IPO (logits - 1/(2 beta))^2 where IPO first
  divides every logp (policy and reference) by its sequence's length.
- SimPO: -logsigmoid(beta * (avg_c - avg_r) - gamma), avg = sum / length.
- ORPO: nll - beta * mean(logsigmoid(log_odds)), nll = -sum(pc) / sum(lc)
  (token mean over the batch), log_odds on length-averaged logps.
- sequence_logps: logits at position j score token j+1, weighted by the
  completion mask at j+1.

Usage: python3 scripts/golden-align-losses.py > /tmp/golden.rs
Depends only on torch.
"""

import torch
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)

# Three pairs. Pair 0 has a large DPO margin (hinge with beta 0.5 is inactive
# there) and equal SimPO/ORPO averages; pair 2 has policy == reference (DPO
# logits exactly 0, where a kinked logsigmoid would get the gradient wrong).
PC = [-12.5, -30.25, -7.0]
PR = [-15.0, -28.0, -9.5]
LC = [5.0, 12.0, 4.0]
LR = [6.0, 10.0, 4.0]
RC = [-14.0, -29.5, -7.0]
RR = [-13.0, -29.0, -9.5]

# sequence_logps: logits (2, 5, 7), ids (2, 5), completion mask (2, 5).
LOGITS = [
    [
        [-1.06, -2.09, 0.91, -2.57, 0.22, -0.81, -2.65],
        [0.04, -2.78, -0.40, -2.58, -2.46, -0.45, 1.96],
        [-2.26, -1.66, 0.76, 2.69, 0.46, -0.62, 2.86],
        [-2.72, 2.15, -1.26, -2.13, -2.29, -1.15, 1.90],
        [-1.92, 0.49, 0.83, -0.77, 0.29, -2.62, -2.64],
    ],
    [
        [-1.76, 1.08, -0.43, -1.12, 0.51, -0.28, -1.20],
        [1.77, 1.19, -1.54, 0.45, 0.15, 2.25, 1.38],
        [-1.27, 2.88, -2.29, -0.49, 1.54, -2.09, -0.07],
        [-2.76, 1.01, 1.59, 0.44, 2.25, -1.12, 1.17],
        [0.57, 0.48, -0.26, 2.04, 2.67, -0.16, 0.98],
    ],
]
IDS = [[1, 4, 2, 6, 0], [3, 3, 5, 1, 2]]
MASK = [[0.0, 0.0, 1.0, 1.0, 1.0], [0.0, 1.0, 1.0, 1.0, 0.0]]
# The scalar whose gradient is checked: sum_b SEQ_WEIGHTS[b] * sums[b].
SEQ_WEIGHTS = [0.7, -1.3]

LOGSIGMOID_X = [-30.0, -2.5, 0.0, 1.5, 40.0]
LOG1MEXP_X = [-40.0, -2.0, -0.6931, -0.5, -1e-3, -1e-6]


def dpo(pc, pr, rc, rr, lc, lr, beta, variant, ls=0.0):
    if variant == "ipo":
        pc, pr, rc, rr = pc / lc, pr / lr, rc / lc, rr / lr
    logits = (pc - pr) - (rc - rr)
    if variant == "sigmoid":
        losses = -F.logsigmoid(beta * logits) * (1 - ls) - F.logsigmoid(-beta * logits) * ls
    elif variant == "hinge":
        losses = torch.relu(1 - beta * logits)
    elif variant == "ipo":
        losses = (logits - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(variant)
    return losses.mean(), beta * (pc - rc).detach(), beta * (pr - rr).detach()


def simpo(pc, pr, lc, lr, beta, gamma):
    ac, ar = pc / lc, pr / lr
    losses = -F.logsigmoid(beta * (ac - ar) - gamma)
    return losses.mean(), beta * ac.detach(), beta * ar.detach()


def orpo(pc, pr, lc, lr, beta):
    ac, ar = pc / lc, pr / lr
    log_odds = (ac - ar) - (torch.log1p(-torch.exp(ac)) - torch.log1p(-torch.exp(ar)))
    nll = -pc.sum() / lc.sum()
    loss = nll - beta * F.logsigmoid(log_odds).mean()
    return loss, beta * ac.detach(), beta * ar.detach()


def sequence_logps(logits, ids, mask):
    logps = torch.log_softmax(logits[:, :-1], dim=-1)
    picked = torch.gather(logps, 2, ids[:, 1:].unsqueeze(2)).squeeze(2)
    m = mask[:, 1:]
    return (picked * m).sum(1), m.sum(1)


def fmt(x):
    return repr(float(x))


def rust_array(name, values, per_line=6):
    values = [fmt(v) for v in torch.as_tensor(values).flatten().tolist()]
    head = f"pub const {name}: [f64; {len(values)}] = ["
    if len(values) <= per_line:
        print(head + ", ".join(values) + "];")
        return
    lines = [head]
    for i in range(0, len(values), per_line):
        lines.append("    " + ", ".join(values[i : i + per_line]) + ",")
    lines.append("];")
    print("\n".join(lines))


def rust_scalar(name, value):
    print(f"pub const {name}: f64 = {fmt(value)};")


def pair_case(prefix, run):
    pc = torch.tensor(PC, requires_grad=True)
    pr = torch.tensor(PR, requires_grad=True)
    loss, rew_c, rew_r = run(pc, pr)
    loss.backward()
    rust_scalar(f"{prefix}_LOSS", loss.item())
    rust_array(f"{prefix}_GRAD_CHOSEN", pc.grad)
    rust_array(f"{prefix}_GRAD_REJECTED", pr.grad)
    rust_array(f"{prefix}_REWARDS_CHOSEN", rew_c)
    rust_array(f"{prefix}_REWARDS_REJECTED", rew_r)


def main():
    print(f"// Generated by scripts/golden-align-losses.py (torch {torch.__version__}, float64).")
    rust_array("PC", PC)
    rust_array("PR", PR)
    rust_array("LC", LC)
    rust_array("LR", LR)
    rust_array("RC", RC)
    rust_array("RR", RR)

    lc, lr = torch.tensor(LC), torch.tensor(LR)
    rc, rr = torch.tensor(RC), torch.tensor(RR)
    pair_case("DPO_SIGMOID", lambda pc, pr: dpo(pc, pr, rc, rr, lc, lr, 0.1, "sigmoid"))
    pair_case("DPO_SIGMOID_LS", lambda pc, pr: dpo(pc, pr, rc, rr, lc, lr, 0.1, "sigmoid", 0.1))
    pair_case("DPO_IPO", lambda pc, pr: dpo(pc, pr, rc, rr, lc, lr, 0.1, "ipo"))
    pair_case("DPO_HINGE", lambda pc, pr: dpo(pc, pr, rc, rr, lc, lr, 0.5, "hinge"))
    pair_case("SIMPO", lambda pc, pr: simpo(pc, pr, lc, lr, 2.0, 0.5))
    pair_case("ORPO", lambda pc, pr: orpo(pc, pr, lc, lr, 0.1))

    x = torch.tensor(LOGSIGMOID_X, requires_grad=True)
    y = F.logsigmoid(x)
    y.sum().backward()
    rust_array("LOGSIGMOID_X", LOGSIGMOID_X)
    rust_array("LOGSIGMOID_Y", y.detach())
    rust_array("LOGSIGMOID_GRAD", x.grad)

    x = torch.tensor(LOG1MEXP_X, requires_grad=True)
    y = torch.log1p(-torch.exp(x))
    y.sum().backward()
    rust_array("LOG1MEXP_X", LOG1MEXP_X)
    rust_array("LOG1MEXP_Y", y.detach())
    rust_array("LOG1MEXP_GRAD", x.grad)

    logits = torch.tensor(LOGITS, requires_grad=True)
    ids = torch.tensor(IDS, dtype=torch.long)
    mask = torch.tensor(MASK)
    sums, counts = sequence_logps(logits, ids, mask)
    (sums * torch.tensor(SEQ_WEIGHTS)).sum().backward()
    rust_array("SEQ_LOGITS", LOGITS, per_line=7)
    print(f"pub const SEQ_IDS: [u32; 10] = {[i for row in IDS for i in row]};")
    rust_array("SEQ_MASK", MASK, per_line=5)
    rust_array("SEQ_WEIGHTS", SEQ_WEIGHTS)
    rust_array("SEQ_SUMS", sums.detach())
    rust_array("SEQ_COUNTS", counts)
    rust_array("SEQ_GRAD", logits.grad, per_line=7)


if __name__ == "__main__":
    main()
