"""The paper's protocol options of the eval commands (PDAE paper, Tables 1-3): a seeded random FID
reference set, Table 1 on another dataset's images (all of them), the official latent clamp, and records that
name what was evaluated. Defaults keep the previous behaviour (checked against the default run)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from eval import cli, common
from eval.fid import load_stats
from eval.sample import latent_health, reference_indices, sample_unconditional, set_clip_latent
from pdae.data import build_dataset
from tests.test_eval_sample import save_models, tiny_models


def eval_main(argv: list[str]) -> int:
    return cli.main(argv)


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    yield


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    return save_models(tiny_models(), tmp_path_factory.mktemp("models"))


def backend(folders: dict[str, Path]) -> list[str]:
    return ["--backend", "domain", "--feature-net", str(folders["feature_net"]), "--device", "cpu"]


def test_reference_indices_first_and_seeded_random():
    assert reference_indices(10, 4) == [0, 1, 2, 3]
    assert reference_indices(3, 10) == [0, 1, 2]                      # capped at the split
    a, b = reference_indices(1000, 50, "random", 7), reference_indices(1000, 50, "random", 7)
    assert a == b and len(set(a)) == 50 and a == sorted(a)           # seeded, without replacement
    assert a != reference_indices(1000, 50, "random", 8) and a != list(range(50))
    # An independent draw with the same generator gives the same set.
    assert a == sorted(np.random.default_rng(7).choice(1000, size=50, replace=False).tolist())
    assert reference_indices(5, 9, "random", 0) == [0, 1, 2, 3, 4]  # all of them when N >= the split
    with pytest.raises(ValueError, match="--selection"):
        reference_indices(10, 4, "last")


def test_ref_stats_random_selection_is_recorded_and_reproducible(folders, tmp_path):
    files = {}
    for name, extra in (("first", []), ("r1", ["--selection", "random", "--selection-seed", "3"]),
                        ("r2", ["--selection", "random", "--selection-seed", "3"])):
        files[name] = tmp_path / f"{name}.npz"
        assert eval_main(["ref-stats", "--model", str(folders["dpm"]), "--num-images", "20", "--out",
                          str(files[name]), *extra, *backend(folders)]) == 0
    first, r1, r2 = (load_stats(files[k]) for k in ("first", "r1", "r2"))
    train = build_dataset({"name": "digits", "image_size": 8, "channels": 1}, split="train")
    assert first.meta["selection"] == "first" and "selection_seed" not in first.meta
    assert first.meta["source_indices"] == [int(j) for j in train.source_indices[:20]]
    assert r1.meta["selection"] == "random" and r1.meta["selection_seed"] == 3
    picked = reference_indices(len(train), 20, "random", 3)
    assert r1.meta["source_indices"] == [int(train.source_indices[j]) for j in picked]
    assert r1.meta["source_indices"] != first.meta["source_indices"]
    np.testing.assert_array_equal(r1.mu, r2.mu)
    assert not np.allclose(r1.mu, first.mu)
    # Table 2's records name the reference set.
    out = tmp_path / "uncond.json"
    assert eval_main(["uncond", "--dpm", str(folders["dpm"]), "--steps", "2", "--num-samples", "6", "--bootstrap",
                      "5", "--ref-stats", str(files["r1"]), "--out", str(out), *backend(folders)]) == 0
    meta = json.loads(out.read_text())["meta"]
    assert (meta["ref_images"], meta["ref_split"], meta["ref_selection"]) == (20, "train", "random (seed 3)")


def test_clip_latent_flag_overrides_the_model_and_model_keeps_it(folders, tmp_path):
    from pdae.checkpoint import load_method

    latent = load_method(folders["latent"], "cpu")
    assert latent.method_kwargs["clip_latent"] is True               # the tiny latent DPM clamps
    runs = {}
    for mode in (None, "model", "off", "on"):
        out, arrays = tmp_path / f"u_{mode}.json", tmp_path / f"u_{mode}.npz"
        extra = [] if mode is None else ["--clip-latent", mode]
        assert eval_main(["uncond", "--autoencoder", str(folders["pdae"]), "--latent", str(folders["latent"]),
                          "--steps", "3", "--num-samples", "6", "--bootstrap", "5", "--no-kid", "--ref-stats",
                          str(_stats(folders, tmp_path)), "--out", str(out), "--arrays", str(arrays),
                          "--grid-samples", "6", *extra, *backend(folders)]) == 0
        with np.load(arrays) as data:
            stds = {r["metric"]: r["value"] for r in common.read_records(out) if r["metric"].startswith("latent")}
            runs[mode] = (json.loads(out.read_text())["meta"]["clip_latent"], data["grid"].copy(), stds)
    assert runs[None][0] is True and runs["model"][0] is True and runs["on"][0] is True and runs["off"][0] is False
    np.testing.assert_array_equal(runs[None][1], runs["model"][1])    # the default is today's behaviour
    assert runs[None][2] == runs["model"][2] == runs["on"][2]
    assert runs["off"][2] != runs["model"][2]                          # the clamp changes the latents drawn
    # `off` is the same as sampling from the model with its clamp removed.
    latent_off = load_method(folders["latent"], "cpu")
    assert set_clip_latent(latent_off, "off") is False
    from pdae import precision

    _, z = sample_unconditional(load_method(folders["pdae"], "cpu"), latent_off, 6, 3, seed=0, return_latents=True,
                                precision=precision.resolve("auto", torch.device("cpu")))  # as the CLI samples
    assert latent_health(latent_off, z)["latent_std"] == pytest.approx(runs["off"][2]["latent_std"], rel=1e-6)
    with pytest.raises(ValueError, match="--clip-latent"):
        set_clip_latent(latent_off, "yes")


def _stats(folders: dict[str, Path], tmp_path: Path) -> Path:
    path = tmp_path / "ref_first.npz"
    if not path.exists():
        assert eval_main(["ref-stats", "--model", str(folders["dpm"]), "--num-images", "20", "--out", str(path),
                          *backend(folders)]) == 0
    return path


def test_reconstruct_on_all_images_of_another_dataset_spec(folders, tmp_path):
    spec = tmp_path / "eval_data.yaml"
    spec.write_text(yaml.safe_dump({"data": {"name": "digits", "image_size": 8, "channels": 1}}))
    out = tmp_path / "recon_all.json"
    assert eval_main(["reconstruct", "--model", str(folders["pdae"]), "--steps", "2", "--x-T", "random",
                      "--num-images", "40", "--data", str(spec), "--split", "all", "--no-unrelated-floor",
                      "--out", str(out), *backend(folders)]) == 0
    meta = json.loads(out.read_text())["meta"]
    every = build_dataset({"name": "digits", "image_size": 8, "channels": 1}, split="all")
    test = build_dataset({"name": "digits", "image_size": 8, "channels": 1}, split="test")
    assert meta["split"] == "all" and meta["eval_data"] == "digits8 (digits)" and meta["num_images"] == 40
    rows = common.read_records(out)
    assert {(r["eval_data"], r["split"]) for r in rows} == {("digits8", "all")}
    assert meta["image_indices"] == [int(j) for j in every.source_indices[:40]]
    assert not set(meta["image_indices"]) <= {int(j) for j in test.source_indices}   # beyond the held-out split
    default = tmp_path / "recon_test.json"
    assert eval_main(["reconstruct", "--model", str(folders["pdae"]), "--steps", "2", "--x-T", "random",
                      "--num-images", "4", "--no-unrelated-floor", "--out", str(default), *backend(folders)]) == 0
    assert json.loads(default.read_text())["meta"]["split"] == "test"


def test_reconstruct_data_errors_are_one_line(folders, tmp_path, capsys):
    wrong = tmp_path / "big.yaml"
    wrong.write_text(yaml.safe_dump({"name": "digits", "image_size": 16, "channels": 1}))
    cases = [(["--data", str(wrong)], "the model takes 8 x 8"),
             (["--data", str(tmp_path / "missing.yaml")], "data spec file or dataset folder not found"),
             (["--split", "everything"], None)]
    for extra, message in cases:
        capsys.readouterr()
        with pytest.raises(SystemExit) if message is None else contextlib.nullcontext():
            code = eval_main(["reconstruct", "--model", str(folders["pdae"]), "--steps", "2", "--num-images", "2",
                              "--out", str(tmp_path / "o.json"), *extra, *backend(folders)])
            assert code == 2
        err = capsys.readouterr().err.strip()
        if message is not None:
            assert err.startswith("error:") and message in err and len(err.splitlines()) == 1, err
        else:
            assert "--split" in err and "Traceback" not in err
        assert not (tmp_path / "o.json").exists()


def test_eval_data_folder_replaces_the_model_data_path(folders, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    from pdae.checkpoint import load_method

    spec = common.data_spec(load_method(folders["pdae"], "cpu"), str(folder))
    # A folder of images for a model of digits: an image-folder spec at the model's size (a digits spec has no path).
    assert spec == {"name": "folder", "path": str(folder), "image_size": 8, "channels": 1}
    celebahq = {"name": "lmdb", "variant": "celebahq", "path": "data/celebahq256.lmdb", "image_size": 128}
    assert common.data_slug(celebahq) == "celebahq128"
    assert common.describe_data(celebahq) == "celebahq128 (lmdb data/celebahq256.lmdb)"
    torch.manual_seed(0)


def test_tables_name_a_shared_protocol_once_and_never_average_across_protocols():
    from eval import paper, tables

    base = {"table": "recon", "dataset": "lmdb", "config": "results/ffhq128/pdae/seed0/model", "method": "pdae",
            "steps": 100, "sampler": "ddim", "x_T": "random", "metric": "ssim", "backend": "standard",
            "code_version": "abc", "encode_steps": "-"}
    rows = [{**base, "seed": s, "value": v, "eval_data": "celebahq128", "split": "all"}
            for s, v in enumerate((0.69, 0.70))]
    agg = tables.aggregate(tables.tidy(rows))
    assert len(agg) == 1 and agg[0]["paper"] == "0.696"          # the paper's Table 1 set: its number beside ours
    md = tables.render_markdown("recon", agg)
    assert "protocol: eval_data = celebahq128; split = all; backend(s): standard" in md
    assert "| eval_data |" not in md.replace(" ", " ")            # a shared protocol is not a column
    # The model's own data is not the paper's evaluation set: no paper number.
    own = [{**r, "eval_data": "ffhq128", "split": "test"} for r in rows]
    assert tables.aggregate(tables.tidy(own))[0]["paper"] == ""
    assert paper.paper_value({**base, "eval_data": "ffhq128"}) == ("", "")
    # Two latent clamps in one table: a column, and two groups.
    uncond = [{**base, "table": "uncond", "metric": "fid", "seed": 0, "value": v, "clip_latent": c,
               "ref_images": 50000, "ref_selection": "random (seed 0)"} for v, c in ((5.0, True), (6.0, False))]
    agg = tables.aggregate(tables.tidy(uncond))
    assert sorted(r["clip_latent"] for r in agg) == [False, True] and all(r["n"] == 1 for r in agg)
    md = tables.render_markdown("uncond", agg)
    assert "clip_latent" in md.splitlines()[2] and "protocol: ref_images = 50000; ref_selection = random (seed 0);" in md


def test_reconstruct_in_chunks_gives_the_same_numbers(folders, tmp_path):
    """--chunk-images bounds memory at the paper's 30k images; image i's noise depends on i only."""
    outs = {}
    for chunk in (1024, 2, 3):
        out = tmp_path / f"recon_{chunk}.json"
        assert eval_main(["reconstruct", "--model", str(folders["pdae"]), "--steps", "2", "--ddpm", "--num-images",
                          "5", "--no-unrelated-floor", "--chunk-images", str(chunk), "--out", str(out),
                          *backend(folders)]) == 0
        outs[chunk] = [(r["x_T"], r["steps"], r["sampler"], r["metric"], r["values"])
                       for r in common.read_records(out)]
    assert len(outs[2]) > 0 and all(len(v[-1]) == 5 for v in outs[2])
    for chunked in (outs[2], outs[3]):  # the same images, noise and reconstructions; the feature net's batched
        assert [v[:4] for v in chunked] == [v[:4] for v in outs[1024]]  # convolutions round at ~1e-8
        for a, b in zip(chunked, outs[1024]):
            np.testing.assert_allclose(a[-1], b[-1], rtol=1e-6, atol=0)
            if a[3] in ("ssim", "mse"):
                assert a[-1] == b[-1]
