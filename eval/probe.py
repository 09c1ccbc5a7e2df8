"""Linear probe of frozen semantic latents z (issue 4 item 9; beyond the PDAE paper, Zhang et al. 2022).

How much of a dataset's labels / attributes / generative factors can a linear classifier read off z?
Encoders: trained PDAE and Diff-AE encoders, plus two controls: an untrained encoder of the same
architecture and config (seeded initialisation) and the raw pixels. Protocol, identical for every
feature set: features of the first `num_train` images of the training split and the first `num_test`
held-out images; standardise with the training mean / std; fit an L2-regularised multinomial logistic
regression on the training features (scikit-learn's `LogisticRegression`, lbfgs, deterministic); report
held-out accuracy. Targets: the class labels, every binary attribute and, for `shapes`, every categorical
factor other than the label factor (colour, background, ...).

Notation: x -> features [N, F]; y -> integer targets [N] in {0, ..., K-1}.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from eval.common import (
    batched,
    data_spec,
    eval_images,
    provenance,
    record,
    resolve_device,
    write_records,
)

# Defaults of the probe (recorded in the output's meta).
DEFAULT_L2 = 1e-3          # lambda of the mean cross-entropy + lambda / 2 * ||W||^2 objective
DEFAULT_MAX_ITER = 200     # lbfgs iterations (LogisticRegression max_iter)
STD_FLOOR = 1e-6           # standardisation: features with smaller std are only centred
CONTROL_LABELS = ("random_encoder", "pixels")


@dataclass(frozen=True)
class LinearProbe:
    """A fitted probe: logits = ((x - mean) / std) @ weight.T + bias.

    Attributes:
        mean, std: training-feature statistics  # [F]
        weight: [K, F]; bias: [K]
    """

    mean: Tensor
    std: Tensor
    weight: Tensor
    bias: Tensor

    def logits(self, x: Tensor) -> Tensor:
        """x: [N, F] -> [N, K] (float64)."""
        return ((x.double() - self.mean) / self.std) @ self.weight.T + self.bias

    def predict(self, x: Tensor) -> Tensor:
        """x: [N, F] -> predicted class [N]."""
        return self.logits(x).argmax(dim=1)


def standardisation(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-feature mean and std (population) of x [N, F], std floored at STD_FLOOR (constant features)."""
    x = x.double()
    return x.mean(0), x.std(0, unbiased=False).clamp_min(STD_FLOOR)


# L2-regularised multinomial logistic regression (convex: a unique optimum), fitted by scikit-learn.
def fit_linear_probe(
    x: Tensor, y: Tensor, num_classes: int | None = None, l2: float = DEFAULT_L2, max_iter: int = DEFAULT_MAX_ITER
) -> LinearProbe:
    """Minimise mean_i CE(W u_i + b, y_i) + l2 / 2 ||W||_F^2 over (W, b), u = standardised x.

    scikit-learn's `LogisticRegression` (lbfgs) minimises C sum_i CE + ||W||^2 / 2, the same optimum for
    C = 1 / (l2 N). With two classes it fits one vector w (logit difference); the softmax optimum above is
    W = [-w/2, w/2], whose penalty l2 / 4 ||w||^2 needs C = 2 / (l2 N). Classes in [0, num_classes) absent
    from y get zero weights and bias -inf (never predicted); a single class is predicted everywhere.
    :param x: training features [N, F]; :param y: integer targets [N] in [0, num_classes).
    """
    if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0] or x.shape[0] < 2:
        raise ValueError(f"probe: need features [N, F] and targets [N] with N >= 2, "
                         f"got {tuple(x.shape)}, {tuple(y.shape)}")
    y = y.long()
    k = int(y.max()) + 1 if num_classes is None else num_classes
    if int(y.min()) < 0 or int(y.max()) >= k:
        raise ValueError(f"probe: targets must lie in [0, {k}), got [{int(y.min())}, {int(y.max())}]")
    mean, std = standardisation(x)
    u = ((x.double() - mean) / std).numpy()
    classes = np.unique(y.numpy())
    weight = np.zeros((k, x.shape[1]))
    bias = np.full(k, -np.inf)
    if len(classes) == 1:
        bias[classes] = 0.0
    else:
        from sklearn.exceptions import ConvergenceWarning  # here: scikit-learn takes 0.6 s to import
        from sklearn.linear_model import LogisticRegression

        c = (2.0 if len(classes) == 2 else 1.0) / (l2 * len(u)) if l2 > 0 else np.inf
        with warnings.catch_warnings():  # max_iter bounds the work; the probe reports accuracy either way
            warnings.simplefilter("ignore", ConvergenceWarning)
            fit = LogisticRegression(C=c, tol=1e-8, max_iter=max_iter).fit(u, y.numpy())
        coef, intercept = fit.coef_, fit.intercept_
        if len(classes) == 2:
            coef, intercept = np.concatenate([-coef, coef]) / 2, np.concatenate([-intercept, intercept]) / 2
        weight[classes], bias[classes] = coef, intercept
    return LinearProbe(mean, std, torch.from_numpy(weight), torch.from_numpy(bias))


def probe_accuracy(
    x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor,
    l2: float = DEFAULT_L2, max_iter: int = DEFAULT_MAX_ITER,
) -> float:
    """Held-out accuracy of `fit_linear_probe(x_train, y_train)` on (x_test, y_test)."""
    k = int(max(int(y_train.max()), int(y_test.max()))) + 1
    probe = fit_linear_probe(x_train, y_train, k, l2, max_iter)
    return float((probe.predict(x_test) == y_test.long()).double().mean())


# Targets of a dataset: labels, binary attributes, categorical factors.
def probe_targets(dataset: Any) -> dict[str, Tensor]:
    """name -> integer targets [N] of the dataset's images (in dataset order).

    `labels` when the dataset has >= 2 classes, each attribute (0/1) by its name, and each categorical
    factor of `dataset.factors` (shapes) other than the label factor. Continuous factors (size, x, y)
    enter through their binarised attributes (is_large, is_left, is_top).
    """
    from pdae.data import SHAPE_LABEL_FACTORS

    targets: dict[str, Tensor] = {}
    labels = torch.as_tensor(dataset.labels).long()
    if getattr(dataset, "num_classes", 0) >= 2 and bool((labels >= 0).all()):
        targets["labels"] = labels
    attributes = torch.as_tensor(getattr(dataset, "attributes", torch.zeros(len(labels), 0)))
    for a, name in enumerate(getattr(dataset, "attribute_names", [])):
        targets[name] = (attributes[:, a] > 0).long()
    label_factor = dataset.spec.get("label_factor") if isinstance(getattr(dataset, "spec", None), dict) else None
    for name in SHAPE_LABEL_FACTORS:
        factors = getattr(dataset, "factors", None)
        if factors is not None and name in factors and name != label_factor:
            targets[name] = torch.as_tensor(factors[name]).long()
    return targets


# Feature extractors: a trained encoder, an untrained copy, raw pixels.
def encoder_module(method: Any) -> nn.Module:
    """The semantic encoder module of an autoencoder (`Method.semantic_encoder`: PDAE's, Diff-AE's)."""
    enc = method.semantic_encoder
    if enc is None or not hasattr(enc, "config"):
        raise ValueError(f"{getattr(method, 'folder', method.name)}: model {method.name!r} has no semantic encoder")
    return enc


def random_encoder_like(encoder: nn.Module, seed: int) -> nn.Module:
    """An untrained encoder of the same class and config, initialised under `torch.manual_seed(seed)`
    (the global RNG state is restored afterwards). Eval mode, no grads."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = type(encoder)(**encoder.config)
    return fresh.eval().requires_grad_(False)


@torch.no_grad()
def extract_features(fn: Any, images: Tensor, batch_size: int, device: torch.device) -> Tensor:
    """fn(images on device) batch by batch -> float32 features on CPU [N, F] (flattened)."""
    out = batched(lambda x: fn(x.to(device)).float().reshape(x.shape[0], -1).cpu(), images, batch_size=batch_size)
    return out


def run_probe(
    features: dict[str, tuple[Tensor, Tensor]],
    targets_train: dict[str, Tensor],
    targets_test: dict[str, Tensor],
    l2: float = DEFAULT_L2,
    max_iter: int = DEFAULT_MAX_ITER,
) -> dict[tuple[str, str], float]:
    """(encoder label, target) -> held-out accuracy, for every feature set and every target whose training
    split has at least two values. features: label -> (train [N, F], test [M, F])."""
    out = {}
    for target, y_train in targets_train.items():
        if int(y_train.unique().numel()) < 2:
            continue
        for label, (x_train, x_test) in features.items():
            out[(label, target)] = probe_accuracy(x_train, y_train, x_test, targets_test[target], l2, max_iter)
    return out


# CLI.
def _parse_encoder(value: str) -> tuple[str | None, str]:
    """`DIR` or `LABEL=DIR`."""
    if "=" in value:
        label, folder = value.split("=", 1)
        return label, folder
    return None, value


def cmd_probe(args: argparse.Namespace) -> int:
    from pdae.checkpoint import load_method

    device = resolve_device(args.device)
    if not args.encoder and not args.pixels:
        raise ValueError("probe: give at least one --encoder DIR (or --pixels)")
    methods: list[tuple[str, Any]] = []
    for value in args.encoder or []:
        label, folder = _parse_encoder(value)
        method = load_method(folder, device)
        label = label or method.name
        if label in [m[0] for m in methods] or label in CONTROL_LABELS:
            raise ValueError(f"--encoder {value}: label {label!r} used twice; write LABEL=DIR")
        encoder_module(method)
        methods.append((label, method))
    if args.random_encoder and not methods:
        raise ValueError("--random-encoder copies the architecture of the first --encoder; give one")
    if methods:
        spec = data_spec(methods[0][1], args.data)
        base_prov = provenance(methods[0][1])
    elif args.data:
        spec = data_spec(None, args.data)
        base_prov = {"dataset": spec.get("name", "unknown"), "method": "-", "seed": "-", "images_seen": "-",
                     "code_version": "-", "config": "-"}
    else:
        raise ValueError("--pixels alone needs --data SPEC.yaml")

    # Images and targets of both splits.
    train_x, _, train_ds = eval_images(spec, args.num_train, split="train")
    test_x, _, test_ds = eval_images(spec, args.num_test, split="test")
    targets_train = {k: v[: len(train_x)] for k, v in probe_targets(train_ds).items()}
    targets_test = {k: v[: len(test_x)] for k, v in probe_targets(test_ds).items()}
    if not targets_train:
        raise ValueError(f"dataset {spec.get('name')!r} has no labels, attributes or factors to probe")

    # Feature sets.
    extractors: list[tuple[str, Any, dict[str, Any]]] = []
    for label, method in methods:
        extractors.append((label, method.encode, provenance(method, label)))
    if args.random_encoder:
        enc = random_encoder_like(encoder_module(methods[0][1]), args.seed).to(device)
        extractors.append(("random_encoder", enc, {**base_prov, "method": "random_encoder"}))
    if args.pixels:
        extractors.append(("pixels", lambda x: x, {**base_prov, "method": "pixels"}))
    features = {
        label: (extract_features(fn, train_x, args.batch_size, device),
                extract_features(fn, test_x, args.batch_size, device))
        for label, fn, _ in extractors
    }
    accuracy = run_probe(features, targets_train, targets_test, args.l2, args.max_iter)
    provs = {label: prov for label, _, prov in extractors}
    rows = [record(provs[label], "accuracy", acc, table="probe", encoder=label, target=target)
            for (label, target), acc in accuracy.items()]
    chance = {t: float(torch.bincount(y).max()) / len(y) for t, y in targets_test.items()}
    write_records(
        args.out, rows,
        command="probe", seed=args.seed, num_train=len(train_x), num_test=len(test_x), l2=args.l2,
        max_iter=args.max_iter, majority_baseline=chance,
        feature_dims={label: int(f[0].shape[1]) for label, f in features.items()},
        notes="held-out accuracy of an L2-regularised multinomial logistic regression on standardised frozen "
              "features (scikit-learn LogisticRegression, lbfgs); random_encoder = untrained encoder of the first "
              "--encoder's architecture seeded by --seed; pixels = raw images in [-1, 1]",
    )
    return 0


def register_cli(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "probe", help="linear probe of frozen z (labels, attributes, factors) with random-encoder and pixel controls",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--encoder", action="append", metavar="[LABEL=]DIR",
                   help="autoencoder model folder (pdae or diffae); repeat for several; "
                   "the label defaults to the method name")
    p.add_argument("--random-encoder", action="store_true",
                   help="control: an untrained encoder with the first --encoder's architecture, seeded by --seed")
    p.add_argument("--pixels", action="store_true", help="control: raw pixels as features")
    p.add_argument("--data", default=None, help="dataset spec YAML (default: the first encoder's training data)")
    p.add_argument("--num-train", type=int, default=2000, help="first N images of the training split to fit on")
    p.add_argument("--num-test", type=int, default=500, help="first N held-out images to score on")
    p.add_argument("--l2", type=float, default=DEFAULT_L2,
                   help="L2 penalty lambda (objective: mean CE + lambda/2 ||W||^2)")
    p.add_argument("--max-iter", type=int, default=DEFAULT_MAX_ITER, help="lbfgs iterations of LogisticRegression")
    p.add_argument("--out", required=True, help="records JSON to write")
    p.add_argument("--seed", type=int, default=0, help="seed of the random-encoder control")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--batch-size", type=int, default=256, help="encoding batch size")
    p.set_defaults(func=cmd_probe)


__all__: Sequence[str] = (
    "LinearProbe", "fit_linear_probe", "probe_accuracy", "probe_targets", "encoder_module",
    "random_encoder_like", "extract_features", "run_probe", "register_cli",
)
