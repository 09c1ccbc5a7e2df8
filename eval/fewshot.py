"""Few-shot conditional generation (PDAE paper §4.7, Table 3) with the D2C protocol (docs/protocol.md §5.6).

A class is a binary split of the training images: an attribute (`--attribute Male`: positive = attribute
present) or a set of labels (`--positive-classes 0 1 2 3 4`: positive = label in the set); the negative class
is the rest. For each scenario:

    binary  `num_labelled` labelled images, half from each class; a logistic regression on z gives p(pos | z);
            class "positive" accepts z with probability p, class "negative" with 1 - p.
    pu      for each class in turn: `num_labelled` images of the class (labelled positive) and `num_unlabelled`
            unlabelled training images (disjoint, drawn uniformly from the rest of the split); a logistic model
            trained with the non-negative PU risk (Kiryo et al. 2017, logistic loss, beta = 0, gamma = 1) gives
            p(class | z); the class prior pi is the class's frequency in the training split (nnPU assumes a
            known prior) unless `--class-prior` sets it for the positive class.

Then, per class: draw z from the latent DPM (`eval.sample.sample_latents`, per-draw noise), accept each draw
with probability p(class | z) (seeded uniforms) until `num_samples` are accepted, decode the accepted z with
the autoencoder (`eval.sample.decode`, PDAE's shift off for the last `stop_fraction` of the steps, paper §4.8), and
report FID against all training images of the class. "naive" = FID of `num_samples` training images drawn
without replacement from the whole split (seed `--seed`, the same for every class and scenario) against the
class: the baseline of drawing from the unconditional data, at the same sample count as PDAE's samples so
that both carry the same finite-n FID bias (the paper's naive column repeats across scenarios). Every FID
record carries `n_samples` and B bootstrap replicates as `values` (units "bootstrap"; `--bootstrap`).
Classifiers work on z normalised with the latent DPM's dataset statistics; training is full batch from zero
(deterministic).

Notation: z -> raw semantic latents [N, D]; y -> 0/1 targets [N] (1 = labelled positive); p -> p(class | z) [N].
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from eval import common
from eval.reconstruct import encode_all
from pdae import precision as precision_mod
from eval.sample import (
    DEFAULT_STOP_FRACTION,
    bootstrap_seed,
    decode,
    image_shape,
    latent_noise,
    real_sample_indices,
    sample_latents,
    reference_protocol,
    set_clip_latent,
    add_clip_latent_arg,
    write_arrays,
)
from eval.stats import FID_BOOTSTRAP

SCENARIOS = ("binary", "pu")
RISKS = ("logistic", "nnpu")
DEFAULT_L2 = 1e-2          # lambda / 2 ||w||^2 added to the mean risk (normalised z)
DEFAULT_LBFGS_ITER = 200   # binary: L-BFGS iterations (convex; reaches the optimum)
DEFAULT_PU_STEPS = 500     # nnPU: full-batch Adam steps
DEFAULT_PU_LR = 0.05
# Seed stream of the few-shot draws, distinct from the other evaluations' x_T / z_T streams of the same seed.
FEWSHOT_SEED_OFFSET = 800_000
DRAW_BATCH = 256           # latent draws per acceptance round (fixed: results do not depend on --batch-size)


# ------------------------------------------------------------------------------------------------
# The latent classifier p(class | z).


@dataclass(frozen=True)
class LogisticClassifier:
    """p(class | z) = sigmoid(w . (z - mean) / std + b).

    Attributes: mean, std [D] (normalisation of raw z), weight [D], bias [] (float64).
    """

    mean: Tensor
    std: Tensor
    weight: Tensor
    bias: Tensor

    def logits(self, z: Tensor) -> Tensor:
        """Raw z [N, D] -> logits [N] (float64, on z's device)."""
        u = (z.double() - self.mean.to(z.device)) / self.std.to(z.device)
        return u @ self.weight.to(z.device) + self.bias.to(z.device)

    def prob(self, z: Tensor) -> Tensor:
        """Raw z [N, D] -> p(class | z) [N]."""
        return torch.sigmoid(self.logits(z))

    def complement(self) -> LogisticClassifier:
        """The classifier of the other class: 1 - sigmoid(g) = sigmoid(-g)."""
        return LogisticClassifier(self.mean, self.std, -self.weight, -self.bias)


# Non-negative PU risk (Kiryo et al. 2017, eq. 4 / Algorithm 1) with the logistic loss l(g, +-1) = softplus(-+g).
def nnpu_risk(g_pos: Tensor, g_unl: Tensor, prior: float) -> tuple[Tensor, Tensor]:
    """(positive part pi R_p^+, negative part R_u^- - pi R_p^-) of the unbiased PU risk; nnPU = pos + max(0, neg).

    :param g_pos: logits of the labelled positives [P]; :param g_unl: logits of the unlabelled [U].
    """
    positive = prior * F.softplus(-g_pos).mean()
    negative = F.softplus(g_unl).mean() - prior * F.softplus(g_pos).mean()
    return positive, negative


def train_latent_classifier(
    z: Tensor,
    y: Tensor,
    *,
    risk: str = "logistic",
    class_prior: float | None = None,
    mean: Tensor | None = None,
    std: Tensor | None = None,
    l2: float = DEFAULT_L2,
    steps: int | None = None,
    lr: float = DEFAULT_PU_LR,
) -> LogisticClassifier:
    """Fit p(class | z) on latents z [N, D] with targets y [N] in {0, 1}, deterministically (zero init, full batch).

    risk "logistic": y = class labels; mean cross-entropy + l2/2 ||w||^2 by L-BFGS (`steps` iterations, default
    DEFAULT_LBFGS_ITER). risk "nnpu": y = 1 for labelled positives, 0 for unlabelled; the nnPU risk with
    `class_prior` pi plus l2/2 ||w||^2 by Adam (`steps`, default DEFAULT_PU_STEPS, `lr`); on a step where the
    negative part is below 0, Kiryo's rule descends on -(negative part) instead. z is normalised with (mean, std)
    (default: z's own statistics; pass the latent DPM's dataset statistics).
    """
    if risk not in RISKS:
        raise ValueError(f"risk must be one of {RISKS}, got {risk!r}")
    if z.ndim != 2 or y.shape != (z.shape[0],):
        raise ValueError(f"train_latent_classifier: z [N, D] and y [N] expected, "
                         f"got {tuple(z.shape)}, {tuple(y.shape)}")
    y = y.double().cpu()
    if not bool(((y == 0) | (y == 1)).all()) or int(y.sum()) in (0, len(y)):
        raise ValueError("train_latent_classifier: y must be 0/1 with both values present")
    z = z.double().cpu()
    mean = z.mean(0) if mean is None else mean.double().cpu()
    std = z.std(0).clamp_min(1e-8) if std is None else std.double().cpu()
    u = (z - mean) / std
    weight = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros((), dtype=torch.float64, requires_grad=True)
    with torch.enable_grad():
        if risk == "logistic":
            opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=steps or DEFAULT_LBFGS_ITER, tolerance_grad=1e-9,
                                    tolerance_change=1e-12, history_size=20, line_search_fn="strong_wolfe")

            def closure() -> Tensor:
                opt.zero_grad()
                loss = F.binary_cross_entropy_with_logits(u @ weight + bias, y) + 0.5 * l2 * weight.pow(2).sum()
                loss.backward()
                return loss

            opt.step(closure)
        else:
            if class_prior is None or not 0.0 < class_prior < 1.0:
                raise ValueError(f"nnPU needs a class prior in (0, 1), got {class_prior!r}")
            pos, unl = u[y == 1], u[y == 0]
            opt = torch.optim.Adam([weight, bias], lr=lr)
            for _ in range(steps or DEFAULT_PU_STEPS):
                opt.zero_grad()
                positive, negative = nnpu_risk(pos @ weight + bias, unl @ weight + bias, class_prior)
                objective = positive + negative if negative.item() >= 0.0 else -negative
                (objective + 0.5 * l2 * weight.pow(2).sum()).backward()
                opt.step()
    return LogisticClassifier(mean, std, weight.detach(), bias.detach())


# ------------------------------------------------------------------------------------------------
# Acceptance sampling (D2C; paper §4.7): accepted draws are distributed as p(z | class).


@dataclass(frozen=True)
class AcceptanceResult:
    """samples: the first n accepted draws [n, ...] (draw order); draws / accepted: totals over all rounds."""

    samples: Tensor
    draws: int
    accepted: int

    @property
    def rate(self) -> float:
        return self.accepted / self.draws


def acceptance_sample(
    draw_fn: Callable[[int], Tensor],
    prob_fn: Callable[[Tensor], Tensor],
    n: int,
    generator: torch.Generator,
    max_draws: int,
    batch_size: int = DRAW_BATCH,
) -> AcceptanceResult:
    """Draw x ~ p(x) in rounds of `batch_size` (`draw_fn(k) -> [k, ...]`) and keep each with probability
    `prob_fn(x) -> [k]` in [0, 1] (u < p, u ~ U[0, 1) from `generator`), until n are kept.

    If p(c | x) = p(x | c) p(c) / p(x), the kept draws are i.i.d. from p(x | c) and the acceptance rate
    estimates p(c). Raises a one-line ValueError if fewer than n are kept within `max_draws` draws.
    """
    if n < 1 or max_draws < 1 or batch_size < 1:
        raise ValueError(f"acceptance_sample: n, max_draws, batch_size must be >= 1, "
                         f"got {n}, {max_draws}, {batch_size}")
    kept: list[Tensor] = []
    draws = accepted = 0
    while accepted < n:
        if draws >= max_draws:
            raise ValueError(
                f"acceptance sampling: only {accepted} of {n} samples accepted after {draws} draws (rate "
                f"{accepted / draws:.2g}); the classifier rarely accepts this class; raise --max-draws or check it"
            )
        k = min(batch_size, max_draws - draws)
        x = draw_fn(k)
        p = prob_fn(x).detach().double().cpu().reshape(-1)
        if p.shape[0] != x.shape[0]:
            raise ValueError(f"prob_fn returned {p.shape[0]} probabilities for {x.shape[0]} draws")
        u = torch.rand(k, generator=generator, dtype=torch.float64, device=generator.device).cpu()
        keep = u < p
        kept.append(x[keep.to(x.device)])
        draws += k
        accepted += int(keep.sum())
    return AcceptanceResult(torch.cat(kept)[:n], draws, accepted)


# ------------------------------------------------------------------------------------------------
# Class definitions and labelled subsets.


@dataclass(frozen=True)
class ClassSplit:
    """A binary split of a dataset: `positive` [N] bool over its images, and the two class names."""

    positive: Tensor
    names: tuple[str, str]


def class_split(dataset: Any, attribute: str | None, positive_classes: Sequence[str] | None,
                names: Sequence[str] | None = None) -> ClassSplit:
    """positive = attribute present (`attribute`) or label among `positive_classes` (indices or class names).

    Default names: (attribute, "Non-" + attribute), or ("positive", "negative").
    """
    if (attribute is None) == (not positive_classes):
        raise ValueError("fewshot: give exactly one of --attribute NAME or --positive-classes C ...")
    if attribute is not None:
        attr_names = list(getattr(dataset, "attribute_names", []))
        if attribute not in attr_names:
            raise ValueError(f"--attribute {attribute!r}: not an attribute of the dataset "
                             f"({', '.join(attr_names) or 'none'})")
        positive = torch.as_tensor(dataset.attributes)[:, attr_names.index(attribute)] > 0
        default = (attribute, f"Non-{attribute}")
    else:
        class_names = list(getattr(dataset, "class_names", []))
        ids = []
        for c in positive_classes or []:
            if str(c) in class_names:
                ids.append(class_names.index(str(c)))
            elif str(c).isdigit() and int(c) < len(class_names):
                ids.append(int(c))
            else:
                raise ValueError(f"--positive-classes: unknown class {c!r} "
                                 f"(classes: {', '.join(class_names) or 'none'})")
        positive = torch.isin(torch.as_tensor(dataset.labels).long(), torch.tensor(ids))
        default = ("positive", "negative")
    if names is not None and len(names) != 2:
        raise ValueError(f"--class-names needs two names (positive, negative), got {list(names)}")
    if int(positive.sum()) in (0, len(positive)):
        raise ValueError("fewshot: the class definition selects all or none of the training images")
    return ClassSplit(positive.bool(), tuple(names) if names else default)  # type: ignore[arg-type]


def choose_labelled(
    positive: Tensor, scenario: str, num_labelled: int, num_unlabelled: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Indices [M] into the split and targets y [M] of the training set of the latent classifier.

    binary: num_labelled // 2 random images of each class, y = class (1 = positive). pu: num_labelled random
    positives (y = 1) and min(num_unlabelled, rest) random other images (y = 0), drawn from the rest of the
    split whatever their class. Both sorted by index within each group.
    """
    pos = torch.nonzero(positive).flatten()
    neg = torch.nonzero(~positive).flatten()
    if scenario == "binary":
        half = num_labelled // 2
        if half < 1 or half > min(len(pos), len(neg)):
            raise ValueError(f"--num-labelled {num_labelled}: need {half} images per class, the split has "
                             f"{len(pos)} / {len(neg)}")
        a = pos[torch.randperm(len(pos), generator=generator)[:half]].sort().values
        b = neg[torch.randperm(len(neg), generator=generator)[:half]].sort().values
        return torch.cat([a, b]), torch.cat([torch.ones(half), torch.zeros(half)])
    if scenario != "pu":
        raise ValueError(f"--scenario must be one of {SCENARIOS}, got {scenario!r}")
    if not 1 <= num_labelled <= len(pos):
        raise ValueError(f"--num-labelled {num_labelled}: the class has {len(pos)} training images")
    labelled = pos[torch.randperm(len(pos), generator=generator)[:num_labelled]].sort().values
    rest = torch.ones(len(positive), dtype=torch.bool)
    rest[labelled] = False
    rest_idx = torch.nonzero(rest).flatten()
    unl = rest_idx[torch.randperm(len(rest_idx), generator=generator)[:num_unlabelled]].sort().values
    if len(unl) == 0:
        raise ValueError("--num-unlabelled: no unlabelled images left")
    return torch.cat([labelled, unl]), torch.cat([torch.ones(len(labelled)), torch.zeros(len(unl))])


def stream_seed(seed: int, scenario: str, k: int) -> int:
    """Seed of the draws of class k (0 positive, 1 negative) in a scenario."""
    return (seed + FEWSHOT_SEED_OFFSET) * 100 + 10 * SCENARIOS.index(scenario) + k


# ------------------------------------------------------------------------------------------------
# CLI: `python -m eval fewshot`.


def _latent_drawer(latent: Any, steps: int, seed: int, convention: str,
                   precision: str = "fp32") -> Callable[[int], Tensor]:
    """draw_fn(k): the next k raw z from the latent DPM; draw i always uses z_T = latent_noise(i, seed)."""
    dim = int(latent.latent_dim)
    state = {"next": 0}

    def draw(k: int) -> Tensor:
        z_T = latent_noise(k, dim, seed, start=state["next"])
        state["next"] += k
        return sample_latents(latent, k, steps, z_T=z_T, convention=convention, precision=precision)

    return draw


def run_fewshot(args: argparse.Namespace) -> int:
    from eval.fid import compute_fid, fid_records, reference_stats
    from pdae.data import build_dataset

    device = common.resolve_device(args.device)
    ae = common.load_model(args.autoencoder, "autoencoder", device)
    latent = common.load_model(args.latent, "latent", device, companion_of=ae)
    clip_latent = set_clip_latent(latent, args.clip_latent)
    for name in ("num_labelled", "num_samples", "max_draws"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
    spec = common.data_spec(ae, args.data)
    ds = build_dataset(spec, split="train")
    split = class_split(ds, args.attribute, args.positive_classes, args.class_names)
    images = torch.stack([ds[i][0] for i in range(len(ds))])  # [N, C, H, W], the whole training split
    backend = common.backend_from_args(args, device)
    shape = image_shape(ae, args.data)
    cuda = device.type == "cuda"
    generator = torch.Generator().manual_seed(args.seed * 1_000_003 + SCENARIOS.index(args.scenario))

    lat_mean, lat_std = latent.latent_statistics()
    # One classifier per class: p(class | z).
    classes: list[tuple[str, LogisticClassifier, dict[str, Any]]] = []
    if args.scenario == "binary":
        idx, y = choose_labelled(split.positive, "binary", args.num_labelled, 0, generator)
        clf = train_latent_classifier(encode_all(ae, images[idx], args.batch_size), y, risk="logistic",
                                      mean=lat_mean, std=lat_std, l2=args.l2)
        info = {"labelled": idx.tolist()}
        classes = [(split.names[0], clf, info), (split.names[1], clf.complement(), info)]
    else:
        for k, member in enumerate((split.positive, ~split.positive)):
            idx, y = choose_labelled(member, "pu", args.num_labelled, args.num_unlabelled, generator)
            prior = float(member.double().mean()) if args.class_prior is None else (
                args.class_prior if k == 0 else 1.0 - args.class_prior)
            clf = train_latent_classifier(encode_all(ae, images[idx], args.batch_size), y, risk="nnpu",
                                          class_prior=prior, mean=lat_mean, std=lat_std, l2=args.l2)
            info = {"labelled": idx[y == 1].tolist(), "num_unlabelled": int((y == 0).sum()), "class_prior": prior}
            classes.append((split.names[k], clf, info))

    # Accuracy of each classifier on the whole training split (diagnostic).
    z_all = encode_all(ae, images, args.batch_size)
    prov = common.provenance(ae, eval_seed=args.seed)
    rows, grid, meta_classes, ref_images = [], [], {}, {}
    # The naive baseline: num_samples real training images of any class, the same for both classes.
    naive_images = images[torch.from_numpy(real_sample_indices(len(images), args.num_samples, args.seed))]
    fid_kw = dict(kid=False, batch_size=args.batch_size, cuda=cuda, bootstrap=args.bootstrap)
    for k, (name, clf, info) in enumerate(classes):
        member = split.positive if k == 0 else ~split.positive
        accuracy = float(((clf.prob(z_all) > 0.5) == member).double().mean())
        seed_k = stream_seed(args.seed, args.scenario, k)
        result = acceptance_sample(
            _latent_drawer(latent, args.steps, seed_k, args.convention, args.precision),
            clf.prob,
            args.num_samples, torch.Generator().manual_seed(seed_k), args.max_draws,
        )
        x_T = common.image_noise(shape, range(args.num_samples), seed_k)
        samples = decode(ae, result.samples, x_T, args.steps, args.stop_fraction, convention=args.convention,
                         batch_size=args.batch_size, precision=args.precision).clamp(-1.0, 1.0)
        reference, _ = reference_stats(args.reference_stats[k] if args.reference_stats else images[member], backend,
                                       batch_size=args.batch_size, cuda=cuda)
        cols = dict(table="fewshot", scenario=args.scenario, **{"class": name})
        # Bootstrap seeds: PDAE's per scenario and class; naive's per class only, so its rows repeat exactly.
        res = compute_fid(samples, reference, backend, bootstrap_seed=bootstrap_seed(
            args.seed, 1 + SCENARIOS.index(args.scenario), k), **fid_kw)
        naive = compute_fid(naive_images, reference, backend, bootstrap_seed=bootstrap_seed(args.seed, 0, k), **fid_kw)
        rows += fid_records(prov, res, **cols)
        rows.append(common.record(prov, "acceptance_rate", result.rate, "-", **cols))
        rows += fid_records({**prov, "method": "naive"}, naive, **cols)
        # The FID reference of the class (eval.tables names it): its image count, and where it came from a
        # statistics file (--reference-stats), that file's split and selection (eval.sample.reference_protocol).
        ref = reference_protocol(reference) if args.reference_stats else {"ref_images": int(member.sum())}
        ref_images[name] = ref["ref_images"]
        meta_classes[name] = {**info, "num_class_images": int(member.sum()), "draws": result.draws,
                              "classifier_train_split_accuracy": accuracy,
                              **({"reference": ref} if args.reference_stats else {})}
        grid.append(samples[: args.grid_samples])
    meta = dict(
        command="fewshot", scenario=args.scenario, steps=args.steps, convention=args.convention,
        stop_fraction=args.stop_fraction, num_samples=args.num_samples, num_labelled=args.num_labelled,
        precision=precision_mod.resolve(args.precision, device),
        naive_images=int(len(naive_images)), bootstrap=args.bootstrap,
        num_unlabelled=args.num_unlabelled if args.scenario == "pu" else "-", l2=args.l2, seed_eval=args.seed,
        class_definition=({"attribute": args.attribute} if args.attribute
                          else {"positive_classes": args.positive_classes}),
        latent=str(args.latent), clip_latent=clip_latent, classes=meta_classes,
        reference=list(args.reference_stats) if args.reference_stats else "all training images of each class",
        notes="D2C protocol (Sinha et al. 2021; PDAE paper Table 3): latent logistic classifier on z normalised "
              "with the latent DPM's statistics (binary: cross-entropy on num_labelled/2 per class, L-BFGS; pu: "
              "nnPU risk, Kiryo et al. 2017, prior = class frequency in the training split unless --class-prior), "
              "acceptance sampling from the latent DPM with probability p(class|z), decoding with the shift off for "
              "the last stop_fraction of steps; fid vs all training images of the class; naive = fid(n_samples "
              "training images of any class drawn without replacement with the eval seed, class subset), at the "
              "same n as the samples; the naive images may overlap the class reference. fid rows: values = "
              "bootstrap replicates (units 'bootstrap': samples resampled with replacement, reference fixed)",
    )
    # The protocol of every row (eval.tables names it): the class definition (`attribute`: the attribute of
    # --attribute, e.g. Blond_Hair, so several attributes' records of one model stay distinct rows), the data
    # (training split of --data) and each class's reference size, the latent clamp and the DDIM step rule (latent
    # DPM and decoder with the same steps); neither of the last two applies to the naive baseline, which samples
    # nothing (so its rows stay equal across the autoencoders' records files, and eval.tables keeps them once).
    attribute = args.attribute if args.attribute else "-"
    rows = [{**r, "attribute": attribute, "eval_data": common.data_slug(spec), "split": "train",
             "ref_images": ref_images[r["class"]],
             **({"clip_latent": "-", "step_rule": "-"} if r["method"] == "naive"
                else {"clip_latent": clip_latent, "step_rule": "latent T -> decode T"})} for r in rows]
    common.write_records(args.out, rows, **meta)
    if args.arrays:
        write_arrays(args.arrays, {"grid": torch.stack(grid), "row_labels": [c[0] for c in classes],
                                   "col_labels": [f"sample {i}" for i in range(grid[0].shape[0])]},
                     **prov, table="fewshot", **meta)
    return 0


def register_cli(subparsers: Any) -> None:
    p = subparsers.add_parser("fewshot", help="Table 3: few-shot conditional generation (D2C protocol), FID per class",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--autoencoder", required=True, help="pdae or diffae model folder")
    p.add_argument("--latent", required=True, help="latent DPM folder trained on this autoencoder's z")
    p.add_argument("--scenario", choices=SCENARIOS, required=True, help="binary (labelled pos/neg) or pu")
    p.add_argument("--attribute", default=None, help="positive class = images with this attribute")
    p.add_argument("--positive-classes", nargs="+", default=None,
                   help="positive class = these labels (indices or names)")
    p.add_argument("--class-names", nargs=2, default=None, metavar=("POS", "NEG"),
                   help="names of the positive / negative class in the records (e.g. Male Female)")
    p.add_argument("--num-labelled", type=int, default=100, help="binary: total (half per class); pu: positives")
    p.add_argument("--num-unlabelled", type=int, default=10_000, help="pu: unlabelled images (capped by the split)")
    p.add_argument("--class-prior", type=float, default=None, help="pu: prior of the positive class (default: its "
                   "frequency in the training split)")
    p.add_argument("--l2", type=float, default=DEFAULT_L2, help="L2 penalty of the latent classifier")
    p.add_argument("--num-samples", type=int, default=100, help="accepted samples per class (paper: 5000)")
    p.add_argument("--max-draws", type=int, default=100_000, help="cap on latent draws per class")
    p.add_argument("--steps", type=int, default=20, help="DDIM steps (latent and image)")
    p.add_argument("--stop-fraction", type=float, default=DEFAULT_STOP_FRACTION,
                   help="last fraction of image DDIM steps without PDAE's shift (paper §4.8: 0.3)")
    p.add_argument("--convention", choices=("paper", "current"), default="paper",
                   help="DDIM respacing (docs/protocol.md §1.6)")
    p.add_argument("--reference-stats", nargs=2, default=None, metavar=("POS.npz", "NEG.npz"),
                   help="statistics files of all training images of each class (default: computed here)")
    p.add_argument("--bootstrap", type=int, default=FID_BOOTSTRAP,
                   help=f"bootstrap replicates of each FID, stored as the record's values (default {FID_BOOTSTRAP})")
    p.add_argument("--out", required=True, help="records JSON")
    p.add_argument("--arrays", default=None, help="NPZ grid of samples per class (+ JSON sidecar)")
    p.add_argument("--grid-samples", type=int, default=8, help="samples per class in the grid")
    p.add_argument("--data", default=None, help="dataset spec YAML (default: the autoencoder's training data)")
    add_clip_latent_arg(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the labelled subset, the draws and the x_T noise")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--batch-size", type=int, default=64)
    common.add_backend_args(p)
    common.add_precision_arg(p, "auto")
    p.set_defaults(func=run_fewshot)
