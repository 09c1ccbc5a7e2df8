# Validation, wildcard constraints and path helpers (kept small: logic lives in the packages).
import os
import sys
from pathlib import Path

from snakemake.utils import validate


validate(config, schema="../schemas/config.schema.yaml")

DATASETS = list(config["datasets"])
SEEDS = [int(s) for s in config["seeds"]]
ABLATION_SEEDS = [int(s) for s in config["ablation_seeds"]]
AUTOENCODERS = ["pdae", "diffae"]
EVAL = config["eval"]
PY = sys.executable  # the interpreter running snakemake (the project's environment)


def _fail(message):
    raise WorkflowError(message)


for _name in DATASETS:
    if _name not in config["dataset_settings"]:
        _fail(f"config: datasets lists {_name!r} but dataset_settings.{_name} is missing")
    _dir = Path(config["dataset_settings"][_name]["train_configs"])
    for _m in ("dpm", "pdae", "pdae_uniform", "pdae_class", "diffae", "latent", "classifier", "feature_net"):
        if not (_dir / f"{_m}.yaml").is_file():
            _fail(f"config: dataset_settings.{_name}.train_configs: {_dir / (_m + '.yaml')} not found")
    _prior = config["dataset_settings"][_name]["prior"]
    if _prior.get("path") and not Path(_prior["path"]).exists():
        _fail(f"config: dataset_settings.{_name}.prior.path: {_prior['path']} not found")
    if _prior["kind"] != "native" and not _prior.get("path"):
        _fail(f"config: dataset_settings.{_name}.prior.path: a {_prior['kind']} prior needs the path of its files")
    _data = config["dataset_settings"][_name].get("data_path")
    if _data and not Path(_data).exists():
        _fail(f"config: dataset_settings.{_name}.data_path: dataset {_data} not found")
for _s in ABLATION_SEEDS:
    if _s not in SEEDS:
        _fail(f"config: ablation_seeds: seed {_s} is not in seeds {SEEDS}")


wildcard_constraints:
    dataset="|".join(DATASETS),
    seed=r"\d+",
    ae="pdae|diffae",
    variant="pdae|pdae_uniform|diffae",


def settings(dataset):
    return config["dataset_settings"][dataset]


def train_config(dataset, method):
    return os.path.join(settings(dataset)["train_configs"], f"{method}.yaml")


def data_override(wildcards):
    path = settings(wildcards.dataset).get("data_path")
    return f"--data {path}" if path else ""


def dpm_folder(wildcards):
    """The frozen prior: a native model folder given in the config, else results/{dataset}/dpm/model, which
    `train_dpm` trains or `import_prior` converts from a diffusers / openai ADM checkpoint."""
    prior = settings(wildcards.dataset)["prior"]
    if prior["kind"] == "native" and prior.get("path"):
        return prior["path"]
    return f"results/{wildcards.dataset}/dpm/model"


def datasets_with_prior(kinds):
    """Regex of the datasets whose prior kind is in `kinds` (a wildcard constraint; never matches if none)."""
    names = [d for d in DATASETS if settings(d)["prior"]["kind"] in kinds]
    return "|".join(names) if names else "(?!)"


def launcher(resources):
    """`pdae`, or torchrun with one process per GPU for multi-GPU training jobs."""
    gpus = int(getattr(resources, "gpu", 0) or 0)
    if gpus > 1:
        return f"{PY} -m torch.distributed.run --standalone --nproc_per_node {gpus} -m pdae"
    return f"{PY} -m pdae"


def backend_args(wildcards, input=None):
    if config["metric_backend"] == "standard":
        w = config["standard_weights"]
        opts = "--backend standard"
        opts += f" --alexnet-weights {w['alexnet']}" if w.get("alexnet") else ""
        opts += f" --inception-weights {w['inception']}" if w.get("inception") else ""
        return opts
    return f"--backend domain --feature-net results/{wildcards.dataset}/feature_net/model"


def backend_inputs(wildcards):
    if config["metric_backend"] == "standard":
        return []
    return [f"results/{wildcards.dataset}/feature_net/model"]


def final_outputs():
    return [*table_outputs(), *plot_outputs()]
