"""The protocol options of the eval commands end to end (issue 13): Table 1 on every image of another dataset given
as an image folder, the official latent clamp (`--clip-latent on`) against an independent run of a clamping model,
few-shot classes from two attributes (CelebA's `Blond_Hair`, `Male`) of one model in one table, and the tables
naming their protocol (data and split, sample counts, FID implementation, encode/decode step rule)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from eval import cli, common, tables
from eval.sample import sample_unconditional, set_clip_latent
from pdae.data import build_dataset, read_attribute_file
from tests.test_eval_sample import save_models, tiny_models

DIGITS = {"name": "digits", "image_size": 8, "channels": 1}


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    yield


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    models = tiny_models()
    out = save_models(models, tmp_path_factory.mktemp("models"))
    # The same latent DPM without the clamp: `--clip-latent on` must turn it into the clamping one exactly.
    models["latent"].method_kwargs = {"clip_latent": False}
    out["latent_noclip"] = save_models({"latent_noclip": models["latent"]}, tmp_path_factory.mktemp("noclip"))[
        "latent_noclip"]
    return out


def backend(folders: dict[str, Path]) -> list[str]:
    return ["--backend", "domain", "--feature-net", str(folders["feature_net"]), "--device", "cpu"]


def image_folder(root: Path, count: int, attributes: bool = False) -> Path:
    """`count` digits as 8x8 grey PNGs (another dataset for a digits model); with `attributes`, a labels CSV whose
    columns are two CelebA attribute names: Male = digit < 5, Blond_Hair = odd digit (values -1/1 as CelebA)."""
    ds = build_dataset(DIGITS, split="all")
    root.mkdir()
    rows = []
    for i in range(count):
        x, label = ds[i][0], int(ds.labels[i])
        Image.fromarray(((x[0] + 1) * 127.5).round().clamp(0, 255).byte().numpy(), mode="L").save(root / f"{i:04d}.png")
        rows.append({"file": f"{i:04d}.png", "Male": 1 if label < 5 else -1, "Blond_Hair": 1 if label % 2 else -1})
    if attributes:
        with open(root.parent / f"{root.name}_labels.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["file", "Male", "Blond_Hair"])
            writer.writeheader()
            writer.writerows(rows)
    return root


# ---------------------------------------------------------------------------------------------- Table 1, --split all

def test_reconstruct_every_image_of_an_image_folder_beyond_the_held_out_split(folders, tmp_path):
    folder = image_folder(tmp_path / "other", 30)
    held_out = build_dataset({"name": "folder", "path": str(folder), "image_size": 8, "channels": 1}, split="test")
    assert len(held_out) == 3  # 10% of 30: --split test could not evaluate more
    out = tmp_path / "all.json"
    assert cli.main(["reconstruct", "--model", str(folders["pdae"]), "--steps", "2", "--num-images", "30",
                     "--data", str(folder), "--split", "all", "--chunk-images", "16", "--out", str(out),
                     *backend(folders)]) == 0
    meta, rows = json.loads(out.read_text())["meta"], common.read_records(out)
    assert meta["split"] == "all" and meta["num_images"] == 30 and meta["image_indices"] == list(range(30))
    assert str(folder) in meta["eval_data"]
    assert {(r["eval_data"], r["split"], r["n_images"]) for r in rows if r["method"] != "unrelated"} == {
        (str(folder), "all", 30)}
    assert all(len(r["values"]) == 30 for r in rows if r["method"] == "pdae")
    # The step rule: inferred x_T encoded with the decode steps; nothing encoded elsewhere.
    assert {(r["x_T"], r["step_rule"]) for r in rows} == {
        ("inferred", "encode T -> decode T"), ("random", "-"), ("-", "-")}
    # The images are the folder's, in order: the PNG round trip of the digits is within 1/255 of them.
    every = build_dataset({"name": "folder", "path": str(folder), "image_size": 8, "channels": 1}, split="all")
    digits = build_dataset(DIGITS, split="all")
    assert torch.allclose(every[29][0], digits[29][0], atol=1.01 / 127.5)
    # An LMDB folder for a model of other data: a one-line error naming --data.
    lmdb = tmp_path / "db"
    lmdb.mkdir()
    (lmdb / "data.mdb").write_bytes(b"")
    with pytest.raises(ValueError, match="--data .*variant"):
        common.data_spec(__import__("pdae.checkpoint", fromlist=["load_method"]).load_method(folders["pdae"], "cpu"),
                         str(lmdb))


def test_reconstruct_encode_steps_rule_in_rows(folders, tmp_path):
    out = tmp_path / "enc.json"
    assert cli.main(["reconstruct", "--model", str(folders["pdae"]), "--steps", "2", "--x-T", "inferred",
                     "--encode-steps", "same", "5", "--num-images", "4", "--no-unrelated-floor", "--out", str(out),
                     *backend(folders)]) == 0
    rules = {(r["encode_steps"], r["step_rule"]) for r in common.read_records(out)}
    assert rules == {(2, "encode T -> decode T"), (5, "encode 5 -> decode T")}


# ---------------------------------------------------------------------------------------------- --clip-latent

def _uncond(folders, tmp_path, name: str, latent: str, *extra: str) -> tuple[dict, np.ndarray, list[dict]]:
    stats = tmp_path / "ref.npz"
    if not stats.exists():
        assert cli.main(["ref-stats", "--model", str(folders["dpm"]), "--num-images", "20", "--out", str(stats),
                         "--selection", "random", "--selection-seed", "1", *backend(folders)]) == 0
    out, arrays = tmp_path / f"{name}.json", tmp_path / f"{name}.npz"
    assert cli.main(["uncond", "--autoencoder", str(folders["pdae"]), "--latent", str(folders[latent]), "--steps",
                     "3", "--num-samples", "6", "--bootstrap", "5", "--no-kid", "--ref-stats", str(stats), "--out",
                     str(out), "--arrays", str(arrays), "--grid-samples", "6", *extra, *backend(folders)]) == 0
    with np.load(arrays) as data:
        return json.loads(out.read_text())["meta"], data["grid"].copy(), common.read_records(out)


def test_clip_latent_on_is_the_official_clamp(folders, tmp_path):
    clamping, grid_clamping, rows_clamping = _uncond(folders, tmp_path, "clamping", "latent")
    plain, grid_plain, rows_plain = _uncond(folders, tmp_path, "plain", "latent_noclip")
    on, grid_on, rows_on = _uncond(folders, tmp_path, "on", "latent_noclip", "--clip-latent", "on")
    assert (clamping["clip_latent"], plain["clip_latent"], on["clip_latent"]) == (True, False, True)
    # `on` turns the non-clamping model into the clamping one bit for bit (samples, FID, latent statistics);
    # without it the latents drawn differ (the tiny PDAE's G is zero, so its images do not show it).
    np.testing.assert_array_equal(grid_on, grid_clamping)
    assert [r["value"] for r in rows_on] == [r["value"] for r in rows_clamping]
    latent_stats = lambda rows: [r["value"] for r in rows if r["metric"].startswith("latent")]  # noqa: E731
    assert latent_stats(rows_on) and latent_stats(rows_plain) != latent_stats(rows_clamping)
    assert {r["clip_latent"] for r in rows_on} == {True}
    # The clamp itself: every sampled normalised z lies in [-1, 1] (the last DDIM step returns the clamped z_0).
    from pdae import precision
    from pdae.checkpoint import load_method

    latent = load_method(folders["latent_noclip"], "cpu")
    z_runs = {}
    for mode in ("on", "off"):
        set_clip_latent(latent, mode)
        _, z = sample_unconditional(load_method(folders["pdae"], "cpu"), latent, 64, 3, seed=0, return_latents=True,
                                    precision=precision.resolve("fp32", torch.device("cpu")))
        z_runs[mode] = latent.stats.normalize(z)
    assert z_runs["on"].abs().max() <= 1.0 + 1e-5
    assert not torch.equal(z_runs["on"], z_runs["off"])
    # The records name the FID reference: its data, size, split and seeded random selection.
    assert {(r["eval_data"], r["ref_images"], r["ref_split"], r["ref_selection"], r["step_rule"]) for r in rows_on} \
        == {("digits8", 20, "train", "random (seed 1)", "latent T -> decode T")}


# ---------------------------------------------------------------------------------------------- fewshot attributes

def test_celeba_attribute_file_names_blond_hair(tmp_path):
    attr = tmp_path / "list_attr_celeba.txt"
    attr.write_text("2\nBlond_Hair Male Smiling\n000001.jpg 1 -1 1\n000002.jpg -1 1 -1\n")
    values, names = read_attribute_file(attr, 2, index_offset=1)
    assert names == ["Blond_Hair", "Male", "Smiling"]
    assert values[:, names.index("Blond_Hair")].tolist() == [1.0, 0.0]


def test_fewshot_two_attributes_of_one_model_are_distinct_rows(folders, tmp_path):
    folder = image_folder(tmp_path / "faces", 120, attributes=True)
    spec = tmp_path / "faces.yaml"
    spec.write_text(yaml.safe_dump({"data": {"name": "folder", "path": str(folder), "image_size": 8, "channels": 1,
                                             "labels": str(tmp_path / "faces_labels.csv")}}))
    outs = {}
    for attribute, names in (("Male", ["Male", "Female"]), ("Blond_Hair", ["Blond", "Non-Blond"]), ("Male", None)):
        out = tmp_path / f"fewshot_{attribute}_{names is None}.json"
        argv = ["fewshot", "--autoencoder", str(folders["pdae"]), "--latent", str(folders["latent"]), "--scenario",
                "binary", "--attribute", attribute, "--num-labelled", "20", "--num-samples", "6", "--steps", "2",
                "--bootstrap", "5", "--data", str(spec), "--out", str(out), *backend(folders)]
        assert cli.main(argv + (["--class-names", *names] if names else [])) == 0
        outs[(attribute, names is None)] = out
    rows = {k: common.read_records(v) for k, v in outs.items()}
    assert {r["class"] for r in rows[("Blond_Hair", False)]} == {"Blond", "Non-Blond"}
    assert {r["class"] for r in rows[("Male", True)]} == {"Male", "Non-Male"}  # default class names
    for (attribute, _), members in rows.items():
        assert {r["attribute"] for r in members} == {attribute}
        assert {(r["eval_data"], r["split"]) for r in members} == {("folder8", "train")}
        assert all(r["step_rule"] == ("-" if r["method"] == "naive" else "latent T -> decode T") for r in members)
        assert all(r["clip_latent"] == ("-" if r["method"] == "naive" else True) for r in members)
    # Each class's FID reference: all training images of the class.
    ds = build_dataset({"name": "folder", "path": str(folder), "image_size": 8, "channels": 1,
                        "labels": str(tmp_path / "faces_labels.csv")}, split="train")
    blond = int(ds.attributes[:, ds.attribute_names.index("Blond_Hair")].sum())
    assert {(r["class"], r["ref_images"]) for r in rows[("Blond_Hair", False)]} == {
        ("Blond", blond), ("Non-Blond", len(ds) - blond)}
    meta = json.loads(outs[("Blond_Hair", False)].read_text())["meta"]
    assert meta["class_definition"] == {"attribute": "Blond_Hair"} and meta["clip_latent"] is True
    # Both attributes in one table: a row per (attribute, class, method), nothing averaged across attributes.
    both = tables.tidy(rows[("Male", False)] + rows[("Blond_Hair", False)])
    agg = [r for r in tables.aggregate(both) if r["metric"] == "fid"]
    assert sorted((r["attribute"], r["class"], r["method"]) for r in agg) == sorted(
        (a, c, m) for a, cs in (("Male", ("Male", "Female")), ("Blond_Hair", ("Blond", "Non-Blond")))
        for c in cs for m in ("pdae", "naive"))
    assert all(r["n"] == 1 for r in agg)
    md = tables.render_markdown("fewshot", tables.aggregate(both))
    header = md.splitlines()[2]
    assert "attribute" in header and "ref_images" in header and "n_samples" in header
    assert "protocol: eval_data = folder8; split = train; step_rule = latent T -> decode T; clip_latent = True;" in md
    assert "backend(s): -, domain" in md
    # Even with the same class names for both attributes, the attribute keeps the rows apart.
    same = [{**r, "class": {"Male": "pos", "Female": "neg", "Blond": "pos", "Non-Blond": "neg"}[r["class"]]}
            for r in rows[("Male", False)] + rows[("Blond_Hair", False)]]
    agg = [r for r in tables.aggregate(tables.tidy(same)) if r["metric"] == "fid"]
    assert len(agg) == 8 and all(r["n"] == 1 for r in agg)
    # --clip-latent on the few-shot command: recorded as the effective value.
    out = tmp_path / "fewshot_off.json"
    assert cli.main(["fewshot", "--autoencoder", str(folders["pdae"]), "--latent", str(folders["latent"]),
                     "--scenario", "binary", "--attribute", "Male", "--num-labelled", "20", "--num-samples", "6",
                     "--steps", "2", "--bootstrap", "5", "--data", str(spec), "--clip-latent", "off", "--out",
                     str(out), *backend(folders)]) == 0
    assert json.loads(out.read_text())["meta"]["clip_latent"] is False
    assert {(r["method"], r["clip_latent"]) for r in common.read_records(out)} == {("pdae", False), ("naive", "-")}


def test_fewshot_unknown_attribute_is_a_one_line_error(folders, tmp_path, capsys):
    code = cli.main(["fewshot", "--autoencoder", str(folders["pdae"]), "--latent", str(folders["latent"]),
                     "--scenario", "binary", "--attribute", "Blond_Hair", "--num-samples", "6", "--steps", "2",
                     "--out", str(tmp_path / "x.json"), *backend(folders)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: --attribute 'Blond_Hair'") and len(err.splitlines()) == 1


# ---------------------------------------------------------------------------------------------- tables

def _recon_rows(**protocol) -> list[dict]:
    base = {"table": "recon", "dataset": "lmdb", "config": "results/ffhq128/pdae/seed0/model", "method": "pdae",
            "steps": 100, "sampler": "ddim", "metric": "ssim", "backend": "standard", "code_version": "abc",
            "eval_data": "celebahq128", "split": "all", "n_images": 30000, **protocol}
    return [{**base, "seed": s, "value": 0.7 + s / 100, "x_T": x_T, "encode_steps": e,
             "step_rule": "-" if x_T == "random" else f"encode {'T' if e == 100 else e} -> decode T"}
            for s in (0, 1) for x_T, e in (("random", "-"), ("inferred", 100), ("inferred", 1000))]


def test_tables_state_the_protocol_of_tables_1_to_3(tmp_path):
    # Table 1 with one encode rule: data, split, image count and step rule once under the table; the FID-free table
    # names its metric backend.
    one = [r for r in _recon_rows() if r["encode_steps"] != 1000]
    md = tables.render_markdown("recon", tables.aggregate(tables.tidy(one)))
    assert ("protocol: eval_data = celebahq128; split = all; n_images = 30000; step_rule = encode T -> decode T; "
            "backend(s): standard") in md
    assert "step_rule" not in md.splitlines()[2]
    # Two encode rules: a column, one row each, never averaged together.
    agg = tables.aggregate(tables.tidy(_recon_rows()))
    assert sorted(r["step_rule"] for r in agg) == ["-", "encode 1000 -> decode T", "encode T -> decode T"]
    assert all(r["n"] == 2 for r in agg)
    md = tables.render_markdown("recon", agg)
    assert "step_rule" in md.splitlines()[2] and "encode 1000 -> decode T" in md
    # Table 2: reference set, sample counts and the FID implementation (pytorch-fid) named.
    uncond = [{"table": "uncond", "dataset": "ffhq128", "method": m, "steps": 10, "metric": "fid", "seed": 0,
               "value": v, "backend": "pytorch-fid", "code_version": "abc", "config": "-", "n_samples": 50000,
               "eval_data": "ffhq128", "ref_images": 50000, "ref_split": "train", "ref_selection": "random (seed 0)",
               "clip_latent": True if m == "pdae" else "-", "step_rule": "latent T -> decode T" if m == "pdae" else "-"}
              for m, v in (("pdae", 20.0), ("ddim", 25.0))]
    written = tables.write_tables(uncond, tmp_path)
    md = (tmp_path / "uncond.md").read_text()
    assert ("protocol: eval_data = ffhq128; ref_images = 50000; ref_split = train; ref_selection = random (seed 0); "
            "step_rule = latent T -> decode T; clip_latent = True; backend(s): pytorch-fid") in md
    assert "n_samples" in md.splitlines()[2]
    assert "protocol: eval_data = ffhq128" in (tmp_path / "uncond.html").read_text()
    assert r"% uncond: protocol: eval\_data = ffhq128" in (tmp_path / "uncond.tex").read_text()
    with open(tmp_path / "uncond.csv") as f:
        header = next(csv.reader(f))
    assert {"eval_data", "ref_images", "ref_selection", "n_samples", "backend", "step_rule"} <= set(header)
    assert tmp_path / "uncond.csv" in written
