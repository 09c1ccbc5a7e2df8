"""Compare the headline numbers of two runs of the workflow (e.g. fp32 vs bf16 training) against the
seed-to-seed spread of the first: python benchmarks/compare_runs.py RESULTS_A RESULTS_B [--out FILE.md].

Quantities: per-seed means of the tables every verdict uses (Table 1 SSIM/MSE per method, x_T and T;
Table 2 FID per method and T; the gap reduction; few-shot FID), the final training loss of every model,
and the claims' verdicts. A difference is "within spread" when |mean_B - mean_A| <= 2 * std_A (std over
the seeds of run A, ddof = 1).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
from collections import defaultdict
from pathlib import Path


def table(results: Path, name: str) -> list[dict]:
    with open(results / "tables" / f"{name}_rows.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def per_seed(rows: list[dict], keys: tuple[str, ...], **where: str) -> dict[tuple, list[float]]:
    out: dict[tuple, list[float]] = defaultdict(list)
    for r in rows:
        if all(r.get(k) == v for k, v in where.items()):
            out[tuple(r.get(k, "-") for k in keys)].append(float(r["value"]))
    return out


def final_losses(results: Path) -> dict[tuple, list[float]]:
    out: dict[tuple, list[float]] = defaultdict(list)
    for log in sorted(results.glob("*/*/seed*/model/train_log.jsonl")) + sorted(results.glob("*/dpm/model/train_log.jsonl")):
        lines = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
        method = log.parts[-4] if "seed" in log.parts[-3] else "dpm"
        out[("final training loss", method)].append(float(lines[-1]["loss"]))
    return out


def quantities(results: Path) -> dict[tuple, list[float]]:
    q: dict[tuple, list[float]] = {}
    recon = table(results, "recon")
    for key, vals in per_seed(recon, ("method", "x_T", "steps", "metric")).items():
        if key[3] in ("ssim", "mse") and key[0] != "unrelated":
            q[("Table 1",) + key] = vals
    for key, vals in per_seed(table(results, "uncond"), ("method", "steps"), metric="fid").items():
        q[("Table 2 FID",) + key] = vals
    for key, vals in per_seed(table(results, "fewshot"), ("method", "scenario", "class"), metric="fid").items():
        q[("Table 3 FID",) + key] = vals
    gap = per_seed(table(results, "gap"), ("method", "t", "eval_seed"), metric="gap")
    red = []
    for (m, t, s), v in gap.items():
        if m == "pdae" and 400 <= int(t) <= 700:
            red.append((s, 1 - v[0] / gap[("dpm", t, s)][0]))
    by_seed = defaultdict(list)
    for s, r in red:
        by_seed[s].append(r)
    q[("gap reduction t in [400, 700]",)] = [statistics.fmean(v) for v in by_seed.values()]
    q.update(final_losses(results))
    return q


def verdicts(results: Path) -> dict[tuple, str]:
    with open(results / "tables" / "claims.csv", newline="") as fh:
        return {(r["claim"], r["setting"]): r["verdict"] for r in csv.DictReader(fh)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", type=Path, help="results/ folder of run A (the reference, e.g. fp32)")
    p.add_argument("b", type=Path, help="results/ folder of run B")
    p.add_argument("--labels", nargs=2, default=("A", "B"))
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    qa, qb = quantities(args.a), quantities(args.b)
    la, lb = args.labels
    lines = [f"| quantity | {la} mean ± std (n) | {lb} mean ± std (n) | |diff| / std_{la} | within 2 std |",
             "|---|---|---|---|---|"]
    inside = total = 0
    for key in sorted(set(qa) & set(qb), key=str):
        a, b = qa[key], qb[key]
        if len(a) < 2 or len(b) < 1:
            continue
        ma, sa, mb = statistics.fmean(a), statistics.stdev(a), statistics.fmean(b)
        sb = statistics.stdev(b) if len(b) > 1 else float("nan")
        ratio = abs(mb - ma) / sa if sa > 0 else math.inf
        ok = ratio <= 2
        inside += ok
        total += 1
        lines.append(f"| {' / '.join(map(str, key))} | {ma:.4g} ± {sa:.2g} ({len(a)}) | {mb:.4g} ± {sb:.2g} ({len(b)}) "
                     f"| {ratio:.2f} | {'yes' if ok else 'NO'} |")
    va, vb = verdicts(args.a), verdicts(args.b)
    same = sum(va[k] == vb[k] for k in set(va) & set(vb))
    lines += ["", f"{inside} of {total} quantities within 2 seed std of {la}; verdicts equal in {same} of "
              f"{len(set(va) & set(vb))} claim rows."]
    lines += [f"- {k[0]} ({k[1]}): {la} {va[k]}, {lb} {vb[k]}" for k in sorted(set(va) & set(vb)) if va[k] != vb[k]]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
