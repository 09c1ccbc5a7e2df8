# Validation, wildcard constraints and path helpers (kept small: logic lives in the packages).
import os
import re
import shlex
from pathlib import Path

from snakemake.utils import validate


validate(config, schema="../schemas/config.schema.yaml")

DATASETS = list(config["datasets"])
SEEDS = [int(s) for s in config["seeds"]]
ABLATION_SEEDS = [int(s) for s in config["ablation_seeds"]]
FIGURE_SEEDS = [int(s) for s in config.get("figure_seeds", [config["seeds"][0]])]
AUTOENCODERS = ["pdae", "diffae"]
EVAL = config["eval"]
# Images per network call in every evaluation (results depend on it only through batched-network rounding: the
# noise of each image is drawn independently of the batching).
EVAL_BATCH_ARG = f"--batch-size {int(EVAL.get('batch_size', 64))}"
RES = config["resources"]
# One conda environment for all rules, built by `--sdm conda`: the dependencies only. Snakemake builds it from
# its own copy under .snakemake/conda/, where a `pip install -e .` would find no project, so the jobs import
# `pdae` and `eval` from this workflow's folder instead (PYTHONPATH, below). With the project installed
# (`pip install -e .`, environment.yml) that folder is the installed code, so nothing changes.
ENV = "../envs/pdae.yaml"
_BASEDIR = shlex.quote(workflow.basedir).replace("{", "{{").replace("}", "}}")  # braces: shell-format escaped
shell.prefix(f"set -euo pipefail; export PYTHONPATH={_BASEDIR}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; ")


def _fail(message):
    raise WorkflowError(message)


def _check_data_spec(key, path):
    """A data spec file (YAML: a `data:` mapping or the mapping) or a dataset folder, and the dataset it names."""
    import yaml

    if not Path(path).exists():
        _fail(f"config: {key}: {path} not found")
    if Path(path).is_dir():
        return
    try:
        spec = yaml.safe_load(Path(path).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        _fail(f"config: {key}: {path} is not a YAML data spec ({type(exc).__name__})")
    spec = spec.get("data", spec) if isinstance(spec, dict) else spec
    if not isinstance(spec, dict) or "name" not in spec:
        _fail(f"config: {key}: {path} holds no data spec (a mapping with name, path, image_size)")
    if spec.get("path") and not Path(spec["path"]).exists():
        _fail(f"config: {key}: dataset {spec['path']} (named in {path}) not found")


# Evaluate, don't train (dataset_settings.<d>.published): models imported from published checkpoints into the
# folders their training rules would write (rule import_published). A dataset with published models trains
# nothing: each evaluation runs iff every model it needs is published (the DPM may also be prior.path), and
# those that need models only training makes (ablation: lambda_t = 1 PDAE; truncation: class-conditional PDAE;
# manipulation: the classifiers on z; efficiency: training snapshots) are left out.
PUBLISHED_PARTS = {"dpm": "dpm/model", "pdae": "pdae/seed0/model", "diffae": "diffae/seed0/model",
                   "pdae_latent": "pdae/seed0/latent", "diffae_latent": "diffae/seed0/latent"}
PUBLISHED_EVAL_NEEDS = {
    "recon": ("dpm", "pdae", "diffae"), "gap": ("dpm", "pdae", "diffae"),
    "uncond": ("dpm", "pdae", "diffae", "pdae_latent", "diffae_latent"),
    "fewshot": ("pdae", "diffae", "pdae_latent", "diffae_latent"), "interpolation": ("pdae", "diffae"),
    "probe": ("pdae", "diffae"), "manipulation": None, "truncation": None, "efficiency": None, "ablation": None,
}
# The `pdae import` kinds each model may come from; pdae-* read the official folder, diffae-* a Lightning file.
PUBLISHED_KINDS = {"dpm": ("pdae-dpm", "diffae-ddim"), "pdae": ("pdae-autoencoder",), "diffae": ("diffae-autoencoder",),
                   "pdae_latent": ("pdae-latent",), "diffae_latent": ("diffae-latent",)}


def published(dataset):
    return config["dataset_settings"][dataset].get("published") or {}


PUBLISHED = {}  # results/<target> -> its published entry
for _name in DATASETS:
    _pub = published(_name)
    if not _pub:
        continue
    if [int(s) for s in config["seeds"]] != [0]:
        _fail(f"config: dataset_settings.{_name}.published: published models are one seed; set seeds: [0]")
    if config["metric_backend"] != "standard":
        _fail(f"config: dataset_settings.{_name}.published: evaluate published models with metric_backend: standard "
              "(the domain backend trains a feature network)")
    if not config["dataset_settings"][_name].get("data_spec"):
        _fail(f"config: dataset_settings.{_name}.data_spec: imported models do not record their data; name a data spec")
    if "dpm" in _pub and config["dataset_settings"][_name]["prior"].get("path"):
        _fail(f"config: dataset_settings.{_name}: give the DPM as prior.path or as published.dpm, not both")
    for _key, _entry in _pub.items():
        _where = f"config: dataset_settings.{_name}.published.{_key}"
        if _entry["kind"] not in PUBLISHED_KINDS[_key]:
            _fail(f"{_where}.kind: {_entry['kind']} is not a {_key} (expected {' or '.join(PUBLISHED_KINDS[_key])})")
        for _field, _kinds in (("latents", ("pdae-latent",)), ("dpm_config", ("pdae-autoencoder",)),
                               ("preset", ("diffae-ddim", "diffae-autoencoder", "diffae-latent"))):
            if _entry.get(_field) and _entry["kind"] not in _kinds:
                _fail(f"{_where}.{_field}: applies to {' or '.join(_kinds)} only, not {_entry['kind']}")
        for _field in ("path", "latents"):
            if _entry.get(_field) and not Path(_entry[_field]).exists():
                _fail(f"{_where}.{_field}: {_entry[_field]} not found")
        _want_dir = _entry["kind"].startswith("pdae-")
        if Path(_entry["path"]).is_dir() != _want_dir:
            _reads = "the official folder (config.yml + checkpoint.pt)" if _want_dir else "a Lightning file (last.ckpt)"
            _is = "a file" if _want_dir else "a folder"
            _fail(f"{_where}.path: {_entry['path']} is {_is}; {_entry['kind']} reads {_reads}")
        PUBLISHED[f"{_name}/{PUBLISHED_PARTS[_key]}"] = _entry


def available(dataset, model):
    """Whether a model of the comparison exists for a published dataset (always, for one trained here)."""
    pub = published(dataset)
    if not pub:
        return True
    if model == "dpm":
        return "dpm" in pub or bool(config["dataset_settings"][dataset]["prior"].get("path"))
    return model in pub


def published_regex():
    """Wildcard constraint of import_published: exactly the published folders (never matches if none)."""
    return "|".join(re.escape(t) for t in PUBLISHED) if PUBLISHED else "(?!)"


def import_options(wildcards):
    """`pdae import` options of a published entry: --latents, --preset, --dpm-config where given."""
    entry = PUBLISHED[wildcards.target]
    opts = [f"--{k.replace('_', '-')} {shlex.quote(str(entry[k]))}" for k in ("latents", "preset", "dpm_config")
            if entry.get(k)]
    return " ".join(opts)


for _name in DATASETS:
    if _name not in config["dataset_settings"]:
        _fail(f"config: datasets lists {_name!r} but dataset_settings.{_name} is missing")
    _dir = Path(config["dataset_settings"][_name]["train_configs"])
    for _m in ("dpm", "pdae", "pdae_uniform", "pdae_class", "diffae", "latent", "classifier", "feature_net"):
        _file = _dir / f"{_m}.yaml"
        if not _file.is_file():
            _fail(f"config: dataset_settings.{_name}.train_configs: {_file} not found")
    _prior = config["dataset_settings"][_name]["prior"]
    if _prior.get("path") and not Path(_prior["path"]).exists():
        _fail(f"config: dataset_settings.{_name}.prior.path: {_prior['path']} not found")
    if _prior["kind"] != "native" and not _prior.get("path"):
        _fail(f"config: dataset_settings.{_name}.prior.path: a {_prior['kind']} prior needs the path of its files")
    _data = config["dataset_settings"][_name].get("data_path")
    if _data and not Path(_data).exists():
        _fail(f"config: dataset_settings.{_name}.data_path: dataset {_data} not found")
    for _key in ("data_spec", "recon_data"):
        _spec = config["dataset_settings"][_name].get(_key)
        _spec = _spec.get("spec") if isinstance(_spec, dict) else _spec
        if _spec:
            _check_data_spec(f"dataset_settings.{_name}.{_key}", _spec)
if str(config["device"]).startswith("cuda") and RES["train_gpus"] < 1:
    _fail(f"config: device {config['device']} needs resources.train_gpus >= 1 (the GPUs of a training job)")
for _key, _list in (("ablation_seeds", ABLATION_SEEDS), ("figure_seeds", FIGURE_SEEDS)):
    for _s in _list:
        if _s not in SEEDS:
            _fail(f"config: {_key}: seed {_s} is not in seeds {SEEDS}")


wildcard_constraints:
    dataset="|".join(DATASETS),
    seed=r"\d+",
    ae="pdae|diffae",
    variant="pdae|pdae_uniform|diffae",


ALL_EVALUATIONS = ["recon", "gap", "uncond", "fewshot", "interpolation", "manipulation", "truncation", "probe",
                   "efficiency", "ablation"]


def settings(dataset):
    return config["dataset_settings"][dataset]


def enabled(dataset, evaluation):
    if evaluation not in settings(dataset).get("evaluations", ALL_EVALUATIONS):
        return False
    if not published(dataset):
        return True
    needs = PUBLISHED_EVAL_NEEDS[evaluation]
    return needs is not None and all(available(dataset, m) for m in needs)


def train_config(dataset, method):
    return os.path.join(settings(dataset)["train_configs"], f"{method}.yaml")


def ablation_images(wildcards):
    """Budget of the weighting ablation: the uniform-weighting run's train.images; the paper-weighted PDAE is
    compared at its snapshot after as many images (train.snapshot_images of pdae.yaml must contain it)."""
    import yaml

    path = train_config(wildcards.dataset, "pdae_uniform")
    try:
        return int(yaml.safe_load(Path(path).read_text())["train"]["images"])
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError) as exc:
        _fail(f"{path}: cannot read train.images ({type(exc).__name__})")


def data_override(wildcards):
    """--data of the training rules: data_path replaces data.path of the train configs."""
    path = settings(wildcards.dataset).get("data_path")
    return f"--data {path}" if path else ""


def eval_data(wildcards):
    """--data of the evaluation rules: data_spec (a spec file: what imported models need), else data_path (the
    dataset folder in place of the model's own data path), else nothing (the model's training data)."""
    spec = settings(wildcards.dataset).get("data_spec")
    return f"--data {shlex.quote(spec)}" if spec else data_override(wildcards)


def recon_data(wildcards):
    """--data and --split of Table 1: recon_data (e.g. all CelebA-HQ images for the FFHQ models), else eval_data."""
    rd = settings(wildcards.dataset).get("recon_data") or {}
    data = f"--data {shlex.quote(rd['spec'])}" if rd.get("spec") else eval_data(wildcards)
    split = rd.get("split", "test")
    return data + (f" --split {split}" if split != "test" else "")


def fid_args(wildcards=None):
    """--fid-backend / --fid-weights of the FID evaluations (config fid_backend, fid_weights)."""
    if config.get("fid_backend", "backend") == "backend":
        return ""
    weights = config.get("fid_weights")
    return f"--fid-backend {config['fid_backend']}" + (f" --fid-weights {shlex.quote(weights)}" if weights else "")


def ref_selection_args(wildcards=None):
    """--selection of ref-stats: the first ref_images (default) or a seeded random draw (the paper)."""
    if EVAL.get("ref_selection", "first") == "first":
        return ""
    return f"--selection random --selection-seed {EVAL.get('ref_seed', 0)}"


def ref_stats_model(wildcards):
    """A model folder whose data spec ref-stats reads: the feature net (domain backend), else the DPM; none when
    data_spec names the data."""
    if config["metric_backend"] == "domain":
        return [f"results/{wildcards.dataset}/feature_net/model"]
    return [] if settings(wildcards.dataset).get("data_spec") else [prior_folder(wildcards.dataset)]


def clip_args(method):
    """--clip-latent of Table 2/3 sampling for an autoencoder's latent DPM (eval.uncond.clip_latent)."""
    mode = (EVAL["uncond"].get("clip_latent") or {}).get(method, "model")
    mode = {True: "on", False: "off"}.get(mode, mode)  # YAML 1.1 reads an unquoted on/off as a boolean
    return "" if mode == "model" or method == "ddim" else f"--clip-latent {mode}"


def fewshot_runs(dataset):
    """(records suffix, class arguments) of each few-shot run: one per fewshot.attributes entry
    (fewshot_<scenario>_<attribute>.json), else the one class definition (fewshot_<scenario>.json)."""
    if not enabled(dataset, "fewshot"):
        return []
    attrs = settings(dataset)["fewshot"].get("attributes")
    if attrs:
        return [(f"_{a}", f"--attribute {shlex.quote(a)}") for a in attrs]
    return [("", fewshot_class_args(dataset))]


def fewshot_attributes_regex():
    names = {a for d in DATASETS for a in (settings(d)["fewshot"].get("attributes") or [])}
    return "|".join(re.escape(a) for a in sorted(names)) if names else "(?!)"


def prior_folder(dataset):
    """The frozen prior: a native model folder given in the config, else results/{dataset}/dpm/model, which
    `train_dpm` trains, `import_prior` converts from a diffusers / openai ADM checkpoint or `import_published`
    from the official PDAE / Diff-AE files."""
    prior = settings(dataset)["prior"]
    if prior["kind"] == "native" and prior.get("path"):
        return prior["path"]
    return f"results/{dataset}/dpm/model"


def dpm_folder(wildcards):
    return prior_folder(wildcards.dataset)


def datasets_with_prior(kinds):
    """Regex of the datasets whose prior kind is in `kinds` and that do not take their DPM from published
    checkpoints (a wildcard constraint; never matches if none)."""
    names = [d for d in DATASETS if settings(d)["prior"]["kind"] in kinds and not published(d)]
    return "|".join(names) if names else "(?!)"


# GPUs and CPUs of a job (what a cluster executor asks for; see profiles/slurm). The multi-GPU trainings (DPM,
# autoencoders, class-conditional PDAE) take resources.train_gpus GPUs, one torchrun process each; every other
# job that runs on a device (evaluations, latent DPM, classifier, feature net) takes one GPU when the config
# runs on GPUs (device cuda, or auto with train_gpus > 0), none otherwise. A job has resources.train_threads CPUs
# per process (OMP threads, DataLoader workers): its `threads`, which the SLURM executor submits as --cpus-per-task.
ON_GPU = str(config["device"]).startswith("cuda") or (config["device"] == "auto" and RES["train_gpus"] > 0)
TRAIN_GPUS = RES["train_gpus"]
TRAIN_THREADS = RES["train_threads"] * max(1, TRAIN_GPUS)
JOB_GPU = {"gpu": 1 if ON_GPU else 0}
JOB_THREADS = RES["train_threads"] if ON_GPU else 1


def gpu_count(resources):
    """GPUs a job holds: its `gpu` resource, or N of a `gres` resource gpu:N / gpu:<model>:N (sites that refuse
    --gpus set gres in profiles/slurm and gpu: 0)."""
    gpus = int(getattr(resources, "gpu", 0) or 0)
    match = re.fullmatch(r"gpu(?::[\w.-]+)?:(\d+)", str(getattr(resources, "gres", "") or ""))
    return max(gpus, int(match.group(1)) if match else 0)


def omp_threads(wildcards, threads, resources):
    """OMP_NUM_THREADS of each training process: the job's CPUs shared by its processes (one per GPU)."""
    return max(1, threads // max(1, gpu_count(resources)))


def launcher(wildcards, resources):
    """`pdae`, or torchrun with one process per GPU for multi-GPU training jobs."""
    gpus = gpu_count(resources)
    if gpus > 1:
        return f"torchrun --standalone --nproc_per_node {gpus} -m pdae"
    return "python -m pdae"


def recon_x_T_modes(wildcards):
    """x_T modes of evaluate_reconstruction. The plain DPM's inferred x_T (DDIM inversion, then decoding) is
    deterministic and the DPM is shared by all seeds: measured once, on the first seed; its random-x_T rows
    vary with the noise seed and are measured on every seed."""
    if wildcards.rmethod == "ddim" and int(wildcards.seed) != SEEDS[0]:
        return "random"
    return "random inferred"


def recon_encode_steps(wildcards):
    """--encode-steps of evaluate_reconstruction: 'same' (Diff-AE's inv<T>), plus eval.recon.fixed_encode_steps
    (e.g. the official script's ddim1000) for fixed_encode_methods. A fixed count costs a full-length inversion
    per image, so it is measured on the figure seeds (the DPM: on the seed that measures its inferred x_T)."""
    recon = EVAL["recon"]
    inferred = "inferred" in recon_x_T_modes(wildcards)
    on_seed = inferred and (wildcards.rmethod == "ddim" or int(wildcards.seed) in FIGURE_SEEDS)
    fixed = recon.get("fixed_encode_steps", []) if wildcards.rmethod in recon.get("fixed_encode_methods", []) else []
    return " ".join(["same"] + [str(s) for s in fixed if on_seed])


def backend_args(wildcards, input=None):
    """Metric backend options of every evaluation, with the FID implementation (fid_backend, fid_weights)."""
    if config["metric_backend"] == "standard":
        w = config["standard_weights"]
        opts = "--backend standard"
        opts += f" --alexnet-weights {w['alexnet']}" if w.get("alexnet") else ""
        opts += f" --inception-weights {w['inception']}" if w.get("inception") else ""
    else:
        opts = f"--backend domain --feature-net results/{wildcards.dataset}/feature_net/model"
    fid = fid_args()
    return f"{opts} {fid}" if fid else opts


def backend_inputs(wildcards):
    if config["metric_backend"] == "standard":
        return []
    return [f"results/{wildcards.dataset}/feature_net/model"]


def model_outputs():
    """Every trained (or imported) model folder: targets too, so deleting one retrains it and reruns what
    depends on it. A dataset with published models: its imported folders only."""
    out = []
    for d in DATASETS:
        if published(d):
            out += [f"results/{t}" for t in PUBLISHED if t.startswith(f"{d}/")]
            continue
        out += [prior_folder(d)]
        for s in SEEDS:
            out += [f"results/{d}/{ae}/seed{s}/{part}" for ae in AUTOENCODERS for part in ("model", "latent", "classifier")]
        out += [f"results/{d}/pdae_uniform/seed{s}/model" for s in ABLATION_SEEDS]
        out += [f"results/{d}/pdae_class/seed{s}/model" for s in FIGURE_SEEDS]
        if config["metric_backend"] == "domain":
            out += [f"results/{d}/feature_net/model"]
    return out


def final_outputs():
    return [*table_outputs(), *plot_outputs(), *model_outputs()]


def recon_model(wc):
    return dpm_folder(wc) if wc.rmethod == "ddim" else f"results/{wc.dataset}/{wc.rmethod}/seed{wc.seed}/model"


def fewshot_class_args(dataset):
    fs = settings(dataset)["fewshot"]
    if fs.get("attribute"):
        return f"--attribute {fs['attribute']}"
    names = " ".join(f"'{n}'" for n in fs["class_names"])
    return "--positive-classes " + " ".join(str(c) for c in fs["positive_classes"]) + f" --class-names {names}"


def record_files(dataset):
    """Every records file of one dataset (its enabled evaluations)."""
    on = lambda e: enabled(dataset, e)  # noqa: E731
    files = [f"results/{dataset}/efficiency.json"] if on("efficiency") else []
    for seed in SEEDS:
        files += [f"results/{dataset}/{m}/seed{seed}/eval/recon.json" for m in ("pdae", "diffae", "ddim") if on("recon")]
        files += [f"results/{dataset}/{m}/seed{seed}/eval/uncond.json" for m in ("pdae", "diffae", "ddim") if on("uncond")]
        files += [f"results/{dataset}/gap/seed{seed}.json"] if on("gap") else []
        files += [f"results/{dataset}/probe/seed{seed}.json"] if on("probe") else []
        for ae in AUTOENCODERS:
            files += [f"results/{dataset}/{ae}/seed{seed}/eval/fewshot_{sc}{suffix}.json" for sc in ("binary", "pu")
                      for suffix, _ in fewshot_runs(dataset) if on("fewshot")]
            files += [f"results/{dataset}/{ae}/seed{seed}/eval/{e}.json" for e in ("interpolation", "manipulation") if on(e)]
    for seed in ABLATION_SEEDS:
        files += [f"results/{dataset}/ablation/seed{seed}.json"] if on("ablation") else []
    for seed in FIGURE_SEEDS:
        files += [f"results/{dataset}/pdae_class/seed{seed}/eval/truncation.json"] if on("truncation") else []
    return files


def all_record_files(wildcards=None):
    return [f for d in DATASETS for f in record_files(d)]


def table_outputs():
    return [f"results/tables/{t}.{ext}" for t in TABLES for ext in ("csv", "md")] + [
        f"results/tables/{name}.{ext}" for name in ("claims", "health") for ext in ("csv", "md")]


def plot_inputs(dataset, kind):
    s, a = FIRST_SEED, FIRST_FIGURE_SEED
    seeds = SEEDS
    return {
        "gap": [f"results/{dataset}/gap/seed{x}.json" for x in seeds],
        "recon": [f"results/{dataset}/{m}/seed{s}/eval/recon.npz" for m in ("pdae", "diffae", "ddim")],
        "denoise": [f"results/{dataset}/pdae/seed{s}/eval/denoise.npz"],
        "g": [f"results/{dataset}/pdae/seed{s}/eval/shift.npz"],
        "interpolation": [f"results/{dataset}/{m}/seed{s}/eval/interpolation.npz" for m in AUTOENCODERS],
        "manipulation": [f"results/{dataset}/{m}/seed{s}/eval/manipulation.npz" for m in AUTOENCODERS]
        + [f"results/{dataset}/{m}/seed{x}/eval/manipulation.json" for m in AUTOENCODERS for x in seeds],
        "truncation": [f"results/{dataset}/pdae_class/seed{a}/eval/truncation.npz"]
        + [f"results/{dataset}/pdae_class/seed{x}/eval/truncation.json" for x in FIGURE_SEEDS],
        "efficiency": [f"results/{dataset}/efficiency.json"],
        "samples": [f"results/{dataset}/{m}/seed{s}/eval/uncond.npz" for m in ("pdae", "diffae", "ddim")],
        "fewshot": [f"results/{dataset}/{m}/seed{x}/eval/fewshot_{sc}{suffix}.json"
                    for m in AUTOENCODERS for x in seeds for sc in ("binary", "pu") for suffix, _ in fewshot_runs(dataset)],
        "uncond": [f"results/{dataset}/{m}/seed{x}/eval/uncond.json" for m in ("pdae", "diffae", "ddim") for x in seeds],
    }[kind]


def plot_outputs():
    return [f"results/plots/{kind}_{d}.png" for d in DATASETS for kind in PLOT_KINDS if enabled(d, PLOT_SOURCE[kind])]
