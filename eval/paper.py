"""The paper's numbers (PDAE, Zhang, Zhao and Lin, NeurIPS 2022) as data, keyed by the record vocabulary.

Source: the paper's Tables 1-3 and §4.1 (throughput, images-to-convergence), as transcribed in
docs/protocol.md §6. Every entry
is a `PaperEntry` whose key uses the same column names and values as the records that `eval/*` writes
(`table`, `dataset`, `method`, `steps`, `x_T`, `scenario`, `class`, `metric`), so `eval.tables` can put
the paper's number beside ours. `note` carries the caveats of docs/protocol.md §6: entries marked
* there (placed from the garbled PDF extraction order) say "uncertain".

Matching rules (`paper_entry(row)`):
- `dataset` is the paper slug (ffhq128, celebahq128, celeba64, horse128, bedroom128). A record whose
  `dataset` column is not a slug (e.g. "lmdb") is resolved through its `config` path: the first path
  component that is a slug names it (the workflow writes `results/{dataset}/...`); see `dataset_slug`.
- Table 1 (`recon`) was measured on CelebA-HQ (30k) with models trained on FFHQ128. It is keyed by the
  MODEL's dataset, `ffhq128`, so a run of the ffhq128 config evaluated on CelebA-HQ matches. When a
  record names its evaluation data (`eval_dataset` or `eval_data` column, a slug or a path containing
  one) that must be `celebahq128`; records without such a column match and the note says what the paper
  evaluated on. Table 1 rows are DDIM T = 100 (`sampler` ddim); the number of encoding steps is not
  stated by the paper, so `encode_steps` is not part of the key.
- Class names (Table 3) match case-insensitively, ignoring non-alphanumerics ("Non-Blond" = "non_blond").
- Numbers are compared as given: MSE on [0, 1] images, FID on 50k vs 50k (Table 2), 5k per class
  (Table 3). Our backends and sample counts differ; `eval.tables` names the backend beside every row.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import PurePath
from typing import Any, Iterable, Mapping

PAPER_DATASETS = ("ffhq128", "celebahq128", "celeba64", "horse128", "bedroom128")
# Record columns that form the key of a paper number (absent -> "-").
KEY_COLUMNS = ("table", "dataset", "method", "steps", "x_T", "scenario", "class", "metric")
UNCERTAIN = "uncertain: placed from the PDF extraction order (docs/protocol.md §6, *)"
TABLE1_EVAL = "celebahq128"
TABLE1_NOTE = "CelebA-HQ 30k, FFHQ128 model"


@dataclasses.dataclass(frozen=True)
class PaperEntry:
    """One number of the paper. `value` is a float, or (low, high) for a stated range."""

    table: str
    dataset: str
    method: str
    metric: str
    value: float | tuple[float, float]
    steps: int | str = "-"
    x_T: str = "-"
    scenario: str = "-"
    klass: str = "-"  # the record column `class`
    note: str = ""
    source: str = ""

    def key(self) -> tuple[str, ...]:
        cols = {"table": self.table, "dataset": self.dataset, "method": self.method, "steps": self.steps,
                "x_T": self.x_T, "scenario": self.scenario, "class": self.klass, "metric": self.metric}
        return tuple(_norm(c, cols[c]) for c in KEY_COLUMNS)

    @property
    def text(self) -> str:
        """The number as the tables print it ("0.696", "1/3-1/2" ranges as "0.333-0.5")."""
        if isinstance(self.value, tuple):
            return f"{format_number(self.value[0])}-{format_number(self.value[1])}"
        return format_number(self.value)


def format_number(x: float) -> str:
    """Up to 4 significant digits; scientific notation below 1e-3 (paper style: 6.07e-5)."""
    if x != 0 and abs(x) < 1e-3:
        return f"{x:.3g}".replace("e-0", "e-")
    return f"{x:.4g}"


def _norm(column: str, value: Any) -> str:
    """Canonical text of a key value: ints without ".0", class names lower-case alphanumerics."""
    if value is None:
        return "-"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    if column == "steps" and re.fullmatch(r"\d+\.0+", text):
        text = text.split(".")[0]
    if column in ("class", "scenario", "method", "dataset", "metric", "x_T"):
        text = text.lower()
    if column == "class":
        text = re.sub(r"[^a-z0-9]", "", text) or "-"
    return text


# Table 1's LPIPS column is LPIPS-AlexNet: only records of the metric "lpips" (the standard backend) match it.
# The domain backend's distance is the metric "feat_dist" and never gets a paper number.
LPIPS_METRIC = "lpips"


def _t1(method: str, x_T: str, latent_dim: int, ssim: float, lpips: float, mse: float, note: str = "") -> list[PaperEntry]:
    base = f"{TABLE1_NOTE}; DDIM T=100; latent dim {latent_dim:,}"
    return [PaperEntry("recon", "ffhq128", method, metric, value, steps=100 if method in ("pdae", "diffae", "ddim") else "-",
                       x_T=x_T, note=f"{base}; {note}".rstrip("; "), source="Table 1")
            for metric, value in (("ssim", ssim), (LPIPS_METRIC, lpips), ("mse", mse))]


# Table 1 — autoencoding reconstruction on CelebA-HQ (30k), FFHQ128 models (paper §4.3, Table 1).
# MSE on [0, 1] images. Baseline rows (StyleGAN2, VQ-GAN, ...) are kept for completeness; no record matches them.
_TABLE1 = [
    *_t1("stylegan2_w", "-", 512, 0.677, 0.168, 0.016),
    *_t1("stylegan2_wplus", "-", 7_168, 0.827, 0.114, 0.006),
    *_t1("vqgan", "-", 65_536, 0.782, 0.109, 3.61e-3),
    *_t1("vqvae2", "-", 327_680, 0.947, 0.012, 4.87e-4),
    *_t1("nvae", "-", 6_005_760, 0.984, 0.001, 4.85e-5),
    *_t1("diffae", "random", 512, 0.677, 0.073, 0.007, "Diff-AE @130M"),
    *_t1("pdae", "random", 512, 0.696, 0.094, 0.005, "PDAE @64M"),
    *_t1("ddim", "inferred", 49_152, 0.917, 0.063, 0.002, "DDIM @130M, DDIM-inverted x_T"),
    *_t1("diffae", "inferred", 49_664, 0.991, 0.011, 6.07e-5, "Diff-AE @130M"),
    *_t1("pdae", "inferred", 49_664, 0.993, 0.008, 5.48e-5,
         "PDAE @64M; official README (new DDIM, encode ddim1000): SSIM 0.994, MSE 3.84e-5"),
]

# Table 2 — unconditional sampling FID, 50k vs 50k (paper §4.8, Table 2). (dataset, method) -> T=10, 20, 50, 100;
# a trailing "*" marks the uncertain entries.
_TABLE2_TEXT = {
    ("ffhq128", "ddim"): "31.87 20.53 15.82 11.95",
    ("ffhq128", "diffae"): "21.95 18.10 13.14 10.55",
    ("ffhq128", "pdae"): "20.16 17.18 12.81 10.31",
    ("horse128", "ddim"): "25.24 14.41 7.98 5.93",
    ("horse128", "diffae"): "12.66 9.21 7.12 5.27",
    ("horse128", "pdae"): "11.94 8.51 6.83 5.09",
    ("bedroom128", "ddim"): "14.07 9.29 7.31* 5.88*",
    ("bedroom128", "diffae"): "10.79 8.42 6.49* 5.32*",
    ("bedroom128", "pdae"): "10.05 7.89 6.33* 5.47*",
    ("celeba64", "ddim"): "18.89 13.82 8.48 5.94*",
    ("celeba64", "diffae"): "12.92 10.18 7.05 5.30*",
    ("celeba64", "pdae"): "11.84 9.65 7.23* 5.19*",
}
TABLE2_STEPS = (10, 20, 50, 100)


def _table2() -> list[PaperEntry]:
    out = []
    for (dataset, method), text in _TABLE2_TEXT.items():
        for steps, cell in zip(TABLE2_STEPS, text.split()):
            starred = cell.endswith("*")
            note = "FID 50k vs 50k" + (f"; {UNCERTAIN}" if starred else "")
            out.append(PaperEntry("uncond", dataset, method, "fid", float(cell.rstrip("*")), steps=steps,
                                  note=note, source="Table 2"))
    return out


# Table 3 — few-shot conditional generation FID, CelebA64-72M-z512-38M (paper §4.7, Table 3).
# (scenario, class) -> PDAE, Diff-AE, D2C, naive.
_TABLE3_TEXT = {
    ("binary", "Male"): "11.21 11.52 13.44 25.70",
    ("binary", "Female"): "6.81 7.29 9.51 14.16",
    ("binary", "Blond"): "16.96* 16.10 17.61 24.78",
    ("binary", "Non-Blond"): "8.13 8.48 8.94 1.12",
    ("pu", "Male"): "9.41 9.54 16.39 25.70",
    ("pu", "Female"): "8.97 9.21 12.21 14.16",
    ("pu", "Blond"): "6.34 7.01 10.09 24.78",
    ("pu", "Non-Blond"): "7.17 7.91 9.09 1.12",
}
TABLE3_METHODS = ("pdae", "diffae", "d2c", "naive")


def _table3() -> list[PaperEntry]:
    out = []
    for (scenario, klass), text in _TABLE3_TEXT.items():
        for method, cell in zip(TABLE3_METHODS, text.split()):
            note = "FID of 5k samples vs all images of the class"
            if method == "naive":
                note = "naive: FID of the whole dataset vs the class subset (inferred, docs/protocol.md §5.6)"
            if cell.endswith("*"):
                note += "; uncertain: extraction order swapped (docs/protocol.md §6.3, *)"
            out.append(PaperEntry("fewshot", "celeba64", method, "fid", float(cell.rstrip("*")), scenario=scenario,
                                  klass=klass, note=note, source="Table 3"))
    return out


# Training efficiency (paper §4.1). Throughput: 4x A100-SXM4, batch 128, 128x128 (dataset not stated).
_EFFICIENCY = [
    PaperEntry("efficiency", "ffhq128", "pdae", "images_per_s", 81.57,
               note="imgs/s per A100 (4x A100-SXM4, batch 128, 128x128; dataset not stated)", source="§4.1"),
    PaperEntry("efficiency", "ffhq128", "diffae", "images_per_s", 75.41,
               note="imgs/s per A100 (4x A100-SXM4, batch 128, 128x128; dataset not stated)", source="§4.1"),
    PaperEntry("efficiency", "ffhq128", "pdae", "images_ratio", (1 / 3, 1 / 2),
               note="PDAE needs 1/3-1/2 of Diff-AE's training images 'for loss convergence' (curve not found)",
               source="§4.1"),
]

PAPER_ENTRIES: tuple[PaperEntry, ...] = (*_TABLE1, *_table2(), *_table3(), *_EFFICIENCY)
_BY_KEY: dict[tuple[str, ...], PaperEntry] = {}
for _entry in PAPER_ENTRIES:
    if _entry.key() in _BY_KEY:
        raise RuntimeError(f"duplicate paper entry {_entry.key()}")
    _BY_KEY[_entry.key()] = _entry

# The images-ratio claim holds for any dataset of the comparison: keyed on every slug and "-".
IMAGES_RATIO = (1 / 3, 1 / 2)


def dataset_slug(row: Mapping[str, Any]) -> str:
    """The paper slug of a record's dataset: `dataset` if it is one, else the first slug among the path
    components of `config` (the workflow's `results/{dataset}/...`), else `dataset` unchanged."""
    dataset = str(row.get("dataset", "-"))
    if dataset.lower() in PAPER_DATASETS:
        return dataset.lower()
    slug = _slug_in_path(row.get("config"))
    return slug or dataset


def _slug_in_path(path: Any) -> str | None:
    if path in (None, "-", ""):
        return None
    for part in PurePath(str(path)).parts:
        if part.lower() in PAPER_DATASETS:
            return part.lower()
    return None


def _eval_dataset(row: Mapping[str, Any]) -> str | None:
    """The evaluation data a record names (`eval_dataset` / `eval_data`), as a slug when recognisable."""
    for column in ("eval_dataset", "eval_data"):
        value = row.get(column)
        if value not in (None, "-", ""):
            text = str(value)
            return text.lower() if text.lower() in PAPER_DATASETS else (_slug_in_path(text) or text)
    return None


def row_key(row: Mapping[str, Any]) -> tuple[str, ...]:
    """The paper key of a record (see the module docstring)."""
    cols = {c: row.get(c, "-") for c in KEY_COLUMNS}
    cols["dataset"] = dataset_slug(row)
    return tuple(_norm(c, cols[c]) for c in KEY_COLUMNS)


def _real_lpips_or_other(row: Mapping[str, Any]) -> bool:
    """False for an "lpips" record of the domain backend (files written before the metric "feat_dist" existed
    labelled the domain feature distance "lpips"): the paper's LPIPS must only sit beside real LPIPS."""
    return not (str(row.get("metric")).lower() == LPIPS_METRIC and str(row.get("backend", "-")).lower() == "domain")


def paper_entry(row: Mapping[str, Any]) -> PaperEntry | None:
    """The paper's number for the same quantity as `row`, or None."""
    if not _real_lpips_or_other(row):
        return None
    table = str(row.get("table", "-"))
    if table == "recon":
        if str(row.get("sampler", "ddim")).lower() not in ("ddim", "-"):
            return None
        evaluated = _eval_dataset(row)
        if evaluated is not None and evaluated != TABLE1_EVAL:
            return None
    if table == "efficiency" and str(row.get("metric")) == "images_ratio":
        # The ratio claim is not tied to a dataset or an evaluation setting (paper §4.1).
        key = list(row_key(row))
        key[KEY_COLUMNS.index("dataset")] = "ffhq128"
        key[KEY_COLUMNS.index("steps")] = "-"
        return _BY_KEY.get(tuple(key))
    return _BY_KEY.get(row_key(row))


def paper_value(row: Mapping[str, Any]) -> tuple[str, str]:
    """(paper number as text, note) for `row`; ("", "") when the paper has no such number."""
    entry = paper_entry(row)
    if entry is None:
        return "", ""
    return entry.text, entry.note


def entries(table: str | None = None, **where: Any) -> list[PaperEntry]:
    """Paper entries of `table` whose key columns equal `where` (e.g. dataset="ffhq128", metric="fid")."""
    out = []
    for entry in PAPER_ENTRIES:
        if table is not None and entry.table != table:
            continue
        cols = dict(zip(KEY_COLUMNS, entry.key()))
        if all(cols.get("class" if k == "klass" else k) == _norm("class" if k == "klass" else k, v)
               for k, v in where.items()):
            out.append(entry)
    return out


def as_rows(selection: Iterable[PaperEntry] = PAPER_ENTRIES) -> list[dict[str, Any]]:
    """The entries as plain dicts (CSV-ready): key columns, `paper`, `paper_note`, `source`."""
    rows = []
    for e in selection:
        rows.append({"table": e.table, "dataset": e.dataset, "method": e.method, "steps": e.steps, "x_T": e.x_T,
                     "scenario": e.scenario, "class": e.klass, "metric": e.metric, "paper": e.text,
                     "paper_note": e.note, "source": e.source})
    return rows
