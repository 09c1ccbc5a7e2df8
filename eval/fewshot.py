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
from torch import Tensor

from eval import common
from eval.latent_classifier import (  # the classifier and the sampler, also importable from here
    DEFAULT_L2,
    DEFAULT_LBFGS_ITER,
    DEFAULT_PU_LR,
    DEFAULT_PU_STEPS,
    DRAW_BATCH,
    RISKS,
    AcceptanceResult,
    LogisticClassifier,
    acceptance_sample,
    nnpu_risk,
    train_latent_classifier,
)
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

__all__ = [
    "DEFAULT_L2", "DEFAULT_LBFGS_ITER", "DEFAULT_PU_LR", "DEFAULT_PU_STEPS", "DRAW_BATCH", "FEWSHOT_SEED_OFFSET",
    "RISKS", "SCENARIOS", "AcceptanceResult", "ClassSplit", "LogisticClassifier", "acceptance_sample", "class_split",
    "choose_labelled", "fit_classifiers", "nnpu_risk", "register_cli", "run_fewshot", "stream_seed",
    "train_latent_classifier",
]

SCENARIOS = ("binary", "pu")
# Seed stream of the few-shot draws, distinct from the other evaluations' x_T / z_T streams of the same seed.
FEWSHOT_SEED_OFFSET = 800_000


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


@dataclass(frozen=True)
class _FewshotRun:
    """What every class of one `python -m eval fewshot` run shares: the command line, the autoencoder and the
    latent DPM, the class split of the training images [N, C, H, W], the metric backend, the image shape."""

    args: argparse.Namespace
    ae: Any
    latent: Any
    split: ClassSplit
    images: Tensor
    backend: Any
    shape: tuple[int, int, int]
    cuda: bool


def _check_counts(args: argparse.Namespace) -> None:
    for name in ("num_labelled", "num_samples", "max_draws"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1")


def _binary_classifiers(run: _FewshotRun, generator: torch.Generator, mean: Tensor,
                        std: Tensor) -> list[tuple[str, LogisticClassifier, dict[str, Any]]]:
    """binary: one logistic regression on num_labelled/2 images per class; the negative class its complement."""
    args, split = run.args, run.split
    idx, y = choose_labelled(split.positive, "binary", args.num_labelled, 0, generator)
    clf = train_latent_classifier(encode_all(run.ae, run.images[idx], args.batch_size), y, risk="logistic",
                                  mean=mean, std=std, l2=args.l2)
    info = {"labelled": idx.tolist()}
    return [(split.names[0], clf, info), (split.names[1], clf.complement(), info)]


def _pu_classifiers(run: _FewshotRun, generator: torch.Generator, mean: Tensor,
                    std: Tensor) -> list[tuple[str, LogisticClassifier, dict[str, Any]]]:
    """pu: for each class in turn, an nnPU classifier of its labelled images against unlabelled ones."""
    args, split = run.args, run.split
    classes = []
    for k, member in enumerate((split.positive, ~split.positive)):
        idx, y = choose_labelled(member, "pu", args.num_labelled, args.num_unlabelled, generator)
        prior = float(member.double().mean()) if args.class_prior is None else (
            args.class_prior if k == 0 else 1.0 - args.class_prior)
        clf = train_latent_classifier(encode_all(run.ae, run.images[idx], args.batch_size), y, risk="nnpu",
                                      class_prior=prior, mean=mean, std=std, l2=args.l2)
        info = {"labelled": idx[y == 1].tolist(), "num_unlabelled": int((y == 0).sum()), "class_prior": prior}
        classes.append((split.names[k], clf, info))
    return classes


def fit_classifiers(run: _FewshotRun, generator: torch.Generator) -> list[tuple[str, LogisticClassifier, dict[str, Any]]]:
    """One classifier per class, p(class | z) on z normalised with the latent DPM's statistics -> [(class name,
    classifier, what it was trained on)], positive class first."""
    lat_mean, lat_std = run.latent.latent_statistics()
    if run.args.scenario == "binary":
        return _binary_classifiers(run, generator, lat_mean, lat_std)
    return _pu_classifiers(run, generator, lat_mean, lat_std)


def _sample_class(run: _FewshotRun, k: int, clf: LogisticClassifier) -> tuple[AcceptanceResult, Tensor]:
    """Acceptance sampling of class k's z from the latent DPM, decoded -> (result, images in [-1, 1])."""
    args = run.args
    seed_k = stream_seed(args.seed, args.scenario, k)
    result = acceptance_sample(
        _latent_drawer(run.latent, args.steps, seed_k, args.convention, args.precision),
        clf.prob,
        args.num_samples, torch.Generator().manual_seed(seed_k), args.max_draws,
    )
    x_T = common.image_noise(run.shape, range(args.num_samples), seed_k)
    samples = decode(run.ae, result.samples, x_T, args.steps, args.stop_fraction, convention=args.convention,
                     batch_size=args.batch_size, precision=args.precision).clamp(-1.0, 1.0)
    return result, samples


ClassResult = tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any], Tensor]


def _evaluate_class(run: _FewshotRun, k: int, name: str, clf: LogisticClassifier, info: dict[str, Any],
                    z_all: Tensor, prov: dict[str, Any], naive_images: Tensor) -> ClassResult:
    """Class k: samples, their FID and the naive baseline's against the class, the acceptance rate
    -> (records, the FID reference's protocol, the class's metadata, its first grid_samples samples)."""
    from eval.fid import compute_fid, fid_records, reference_stats

    args, backend = run.args, run.backend
    member = run.split.positive if k == 0 else ~run.split.positive
    # Accuracy of each classifier on the whole training split (diagnostic).
    accuracy = float(((clf.prob(z_all) > 0.5) == member).double().mean())
    result, samples = _sample_class(run, k, clf)
    reference, _ = reference_stats(args.reference_stats[k] if args.reference_stats else run.images[member], backend,
                                   batch_size=args.batch_size, cuda=run.cuda)
    cols = dict(table="fewshot", scenario=args.scenario, **{"class": name})
    fid_kw = dict(kid=False, batch_size=args.batch_size, cuda=run.cuda, bootstrap=args.bootstrap)
    # Bootstrap seeds: PDAE's per scenario and class; naive's per class only, so its rows repeat exactly.
    res = compute_fid(samples, reference, backend, bootstrap_seed=bootstrap_seed(
        args.seed, 1 + SCENARIOS.index(args.scenario), k), **fid_kw)
    naive = compute_fid(naive_images, reference, backend, bootstrap_seed=bootstrap_seed(args.seed, 0, k), **fid_kw)
    rows = fid_records(prov, res, **cols)
    rows.append(common.record(prov, "acceptance_rate", result.rate, "-", **cols))
    rows += fid_records({**prov, "method": "naive"}, naive, **cols)
    # The FID reference of the class (eval.tables names it): its image count, and where it came from a
    # statistics file (--reference-stats), that file's split and selection (eval.sample.reference_protocol).
    ref = reference_protocol(reference) if args.reference_stats else {"ref_images": int(member.sum())}
    meta_class = {**info, "num_class_images": int(member.sum()), "draws": result.draws,
                  "classifier_train_split_accuracy": accuracy, **({"reference": ref} if args.reference_stats else {})}
    return rows, ref, meta_class, samples[: args.grid_samples]


def _fewshot_meta(args: argparse.Namespace, device: Any, clip_latent: bool, naive_images: Tensor,
                  meta_classes: dict[str, Any]) -> dict[str, Any]:
    """The records file's metadata: the protocol, its settings and each class's."""
    return dict(
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


def _with_protocol(rows: list[dict[str, Any]], args: argparse.Namespace, spec: dict[str, Any],
                   ref_images: dict[str, int], clip_latent: bool) -> list[dict[str, Any]]:
    """The protocol of every row (eval.tables names it): the class definition (`attribute`: the attribute of
    --attribute, e.g. Blond_Hair, so several attributes' records of one model stay distinct rows), the data
    (training split of --data) and each class's reference size, the latent clamp and the DDIM step rule (latent
    DPM and decoder with the same steps); neither of the last two applies to the naive baseline, which samples
    nothing (so its rows stay equal across the autoencoders' records files, and eval.tables keeps them once)."""
    attribute = args.attribute if args.attribute else "-"
    return [{**r, "attribute": attribute, "eval_data": common.data_slug(spec), "split": "train",
             "ref_images": ref_images[r["class"]],
             **({"clip_latent": "-", "step_rule": "-"} if r["method"] == "naive"
                else {"clip_latent": clip_latent, "step_rule": "latent T -> decode T"})} for r in rows]


def run_fewshot(args: argparse.Namespace) -> int:
    """`python -m eval fewshot`: classifiers, acceptance sampling and FID per class (module docstring)."""
    from pdae.data import build_dataset

    device = common.resolve_device(args.device)
    ae = common.load_model(args.autoencoder, "autoencoder", device)
    latent = common.load_model(args.latent, "latent", device, companion_of=ae)
    clip_latent = set_clip_latent(latent, args.clip_latent)
    _check_counts(args)
    spec = common.data_spec(ae, args.data)
    ds = build_dataset(spec, split="train")
    split = class_split(ds, args.attribute, args.positive_classes, args.class_names)
    images = torch.stack([ds[i][0] for i in range(len(ds))])  # [N, C, H, W], the whole training split
    backend = common.backend_from_args(args, device)
    run = _FewshotRun(args, ae, latent, split, images, backend, image_shape(ae, args.data), device.type == "cuda")
    generator = torch.Generator().manual_seed(args.seed * 1_000_003 + SCENARIOS.index(args.scenario))
    classes = fit_classifiers(run, generator)

    z_all = encode_all(ae, images, args.batch_size)
    prov = common.provenance(ae, eval_seed=args.seed)
    rows, grid, meta_classes, ref_images = [], [], {}, {}
    # The naive baseline: num_samples real training images of any class, the same for both classes.
    naive_images = images[torch.from_numpy(real_sample_indices(len(images), args.num_samples, args.seed))]
    for k, (name, clf, info) in enumerate(classes):
        class_rows, ref, meta_class, grid_samples = _evaluate_class(run, k, name, clf, info, z_all, prov, naive_images)
        rows += class_rows
        ref_images[name] = ref["ref_images"]
        meta_classes[name] = meta_class
        grid.append(grid_samples)
    meta = _fewshot_meta(args, device, clip_latent, naive_images, meta_classes)
    common.write_records(args.out, _with_protocol(rows, args, spec, ref_images, clip_latent), **meta)
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
