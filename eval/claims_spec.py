"""What eval.claims tests: each claim of the paper (Zhang, Zhao and Lin, NeurIPS 2022) with its quote and
section, the bounds and margins the verdicts use, and the layout of one claims.csv row.

- `CLAIMS`: key -> `Claim` (what the paper says, where); sanity rows ("sanity_*") are no claim of the paper.
- `GAP_T_RANGE` (the "critical stage" of §3.4), `ON_PAR_MARGIN` (non-inferiority margins), `IMAGES_RATIO_BOUND`
  (§4.1), `METHOD_NAMES` (the paper's names in the comparisons).
- `claim_row` / `missing`: one row of CLAIM_COLUMNS; `missing` is the "inconclusive: no records" row.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

from eval.verdicts import VERDICTS

GAP_T_RANGE = (0.4, 0.7)          # paper §3.4 / Fig. 3: the "critical stage" t in [400, 700] of T = 1000
ON_PAR_MARGIN = {"ssim": 0.02, "mse": 0.10}   # non-inferiority: SSIM absolute; MSE relative to the baseline
IMAGES_RATIO_BOUND = 0.5          # paper §4.1: PDAE needs 1/3-1/2 of Diff-AE's training images
CLAIM_COLUMNS = ("kind", "claim", "dataset", "setting", "comparison", "estimate", "ci_low", "ci_high", "n_seeds",
                 "verdict", "reason", "evidence", "paper_says", "source")
METHOD_NAMES = {"pdae": "PDAE", "diffae": "Diff-AE", "ddim": "DDIM", "dpm": "DPM", "naive": "naive", "real": "real"}


@dataclasses.dataclass(frozen=True)
class Claim:
    """What the paper says, where, and which direction a comparison must go to reproduce it."""

    key: str
    paper_says: str
    source: str


CLAIMS = {
    "gap": Claim("posterior-mean gap filled",
                 "the gap between the DPM's predicted posterior mean and the true one is \"significantly filled\" "
                 "by PDAE's mean shift (no number given; the shift is 0 at t = 0)", "paper §4.2, Fig. 5 right"),
    "recon_random": Claim("random-x_T reconstruction on par with Diff-AE",
                          "with random x_T (T = 100) PDAE is on par with Diff-AE: better SSIM (0.696 vs 0.677) and "
                          "MSE (0.005 vs 0.007), worse LPIPS (0.094 vs 0.073)", "paper §4.3, Table 1"),
    "recon_inferred_ddim": Claim("inferred-x_T reconstruction better than DDIM",
                                 "with inferred x_T PDAE reconstructs better than DDIM inversion (SSIM 0.993 vs "
                                 "0.917, MSE 5.48e-5 vs 2e-3 at T = 100)", "paper §4.3, Table 1"),
    "recon_inferred_diffae": Claim("inferred-x_T reconstruction better than Diff-AE",
                                   "with inferred x_T PDAE is slightly better than Diff-AE (SSIM 0.993 vs 0.991, "
                                   "MSE 5.48e-5 vs 6.07e-5 at T = 100)", "paper §4.3, Table 1"),
    "efficiency": Claim("PDAE needs <= 1/2 of Diff-AE's training images",
                        "PDAE needs about 1/3-1/2 of the training batches Diff-AE needs \"for loss convergence\" "
                        "(FFHQ128: PDAE 64M images vs Diff-AE 130M)", "paper §4.1"),
    "throughput": Claim("PDAE trains faster per image",
                        "PDAE trains at 81.57 vs Diff-AE 75.41 images/s per A100 (fewer trainable parameters, "
                        "the DPM's encoder half reused)", "paper §4.1"),
    "uncond_ddim": Claim("unconditional FID: PDAE below DDIM",
                         "sampling z from a latent DPM, PDAE's FID is below DDIM's at every T (FFHQ128 T = 10: "
                         "20.16 vs 31.87)", "paper §4.8, Table 2"),
    "uncond_diffae": Claim("unconditional FID: PDAE below Diff-AE",
                           "PDAE's FID is below Diff-AE's at T = 10 and 20 on every dataset (FFHQ128 T = 10: 20.16 "
                           "vs 21.95; two entries at T >= 50 are uncertain)", "paper §4.8, Table 2"),
    "fewshot_diffae": Claim("few-shot FID: PDAE below Diff-AE",
                            "PDAE \"achieves better FID scores than Diff-AE and D2C\" in few-shot conditional "
                            "generation (7 of 8 cells of Table 3)", "paper §4.7, Table 3"),
    "fewshot_naive": Claim("few-shot FID: PDAE below naive",
                           "the naive baseline (training images of the class) is worse than PDAE except where the "
                           "class is most of the data (Non-Blond: naive 1.12 vs PDAE 8.13)", "paper §4.7, Table 3"),
    "weighting": Claim("loss weighting beats lambda_t = 1",
                       "with lambda_t = 1 training is \"extremely unstable\"; the weighting "
                       "SNR^gamma/(1+SNR) (Eq. 10) trains a better G and encoder", "paper §3.4, Eq. 10"),
    "sanity_random_ddim": Claim("sanity: PDAE random-x_T beats DDIM random-x_T",
                                "no claim: with random x_T, DDIM's reconstruction carries nothing about the input, "
                                "so any autoencoder that uses z must beat it", "-"),
}


def _datasets(rows: Sequence[Mapping[str, Any]], table: str) -> list[str]:
    return sorted({str(r.get("dataset", "-")) for r in rows if r.get("table") == table})


def claim_row(kind: str, key: str, dataset: str, setting: str, comparison: str, interval: tuple[float, float, float] | None,
              n_seeds: int, verdict: str, reason: str, evidence: str) -> dict[str, Any]:
    c = CLAIMS[key]
    est, lo, hi = interval if interval is not None else ("-", "-", "-")
    assert verdict in VERDICTS or kind == "sanity"
    return {"kind": kind, "claim": c.key, "dataset": dataset, "setting": setting, "comparison": comparison,
            "estimate": est, "ci_low": lo, "ci_high": hi, "n_seeds": n_seeds, "verdict": verdict, "reason": reason,
            "evidence": evidence, "paper_says": c.paper_says, "source": c.source}


def missing(key: str, dataset: str, what: str) -> dict[str, Any]:
    return claim_row("claim", key, dataset, "-", "-", None, 0, "inconclusive", f"no {what} records", "-")
