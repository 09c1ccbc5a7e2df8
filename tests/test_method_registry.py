"""The method registry (pdae.methods.registry) and the networks' own config record (pdae.nets.configurable).

A toy method defined here, one class plus one registry line, goes through every public path: `pdae train`'s
method list, the config check, `pdae.training.train` (the shared `train_step`), the model folder, `load_method`,
and DDIM sampling (`eval.sample.decode`). The built-in methods' config.json contents are pinned, so that folders
written before the registry still load and new ones are written byte for byte as before.
"""

from __future__ import annotations

import inspect
import json
import typing
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pdae import checkpoint
from pdae.checkpoint import CheckpointError, load_method, load_model_folder
from pdae.cli import train_methods
from pdae.config import RunConfig, TrainConfig, check_run_config
from pdae.diffusion.gaussian import q_sample
from pdae.methods import DPM, METHOD_NAMES, build_method, export_method, registry
from pdae.methods.base import per_sample_mean
from pdae.methods.registry import LINEAR_1000, MethodSpec, Net, register
from pdae.nets.configurable import register_to_config
from pdae.nets.unet import UNet

INFO = {"image_size": 8, "channels": 1, "num_classes": 10, "num_attributes": 3}
TINY_UNET = {"base_channels": 32, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_ds": [2], "dropout": 0.0}


class ToyL1DPM(DPM):
    """A trivial DPM variant: the eps loss with L1 instead of the squared error."""

    name = "toy_l1_dpm"

    def loss_from(self, x, y, draws):
        t, noise = draws["t"], draws["noise"]
        eps = self.unet.eps_from_output(self.unet(q_sample(self.schedule, x, t, noise), t))
        return per_sample_mean((noise - eps).abs().float())


@pytest.fixture
def toy():
    # The one line that adds the method:
    spec = register(MethodSpec("toy_l1_dpm", ToyL1DPM, nets={"unet": Net(UNet, fixed=("in_channels",))}, diffusion=LINEAR_1000))
    yield spec
    registry.unregister("toy_l1_dpm")


def test_a_toy_method_trains_saves_loads_and_samples_through_the_public_paths(toy, tmp_path: Path) -> None:
    from eval.sample import decode
    from pdae.training import train

    assert train_methods()["toy-l1-dpm"] == "toy_l1_dpm"  # `pdae train toy-l1-dpm`
    cfg = RunConfig(data={"name": "digits", "image_size": 8, "channels": 1}, nets={"unet": dict(TINY_UNET)},
                    diffusion={"kind": "linear", "T": 100},
                    train=TrainConfig(images=32, batch_size=16, lr=1e-3, ema_decay=0.9, log_every_images=16,
                                      resume_every_images=32))
    check_run_config("toy_l1_dpm", cfg)
    out = train("toy_l1_dpm", cfg, tmp_path / "toy", seed=0, progress=False).out_dir
    config = json.loads((out / "config.json").read_text())
    assert config["method"] == "toy_l1_dpm" and config["components"]["unet"]["class"] == "UNet"
    assert config["components"]["unet"]["kwargs"] == UNet(in_channels=1, **TINY_UNET).config
    assert json.loads((out / "metadata.json").read_text())["steps"] == 2

    method = load_method(out)
    assert type(method) is ToyL1DPM and method.schedule.T == 100
    # Round trip: export of the loaded method == the folder's tensors and config.
    saved = load_file(out / "model.safetensors")
    tensors, exported = export_method(method)
    assert exported == config and saved.keys() == tensors.keys()
    assert all(torch.equal(saved[k], tensors[k]) for k in saved)
    # It trains (the loss is the toy's own) and samples through eval's DDIM decoder.
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    g = torch.Generator().manual_seed(0)
    draws = method.draw(x, g)
    eps = method.unet(q_sample(method.schedule, x, draws["t"], draws["noise"]), draws["t"])
    torch.testing.assert_close(method.loss_from(x, None, draws), (draws["noise"] - eps).abs().mean(dim=(1, 2, 3)))
    x_T = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    images = decode(method, None, x_T, steps=3)
    assert images.shape == (2, 1, 8, 8) and torch.isfinite(images).all()


def test_a_toy_method_builds_from_a_config_and_round_trips_a_folder(toy, tmp_path: Path) -> None:
    torch.manual_seed(0)
    method = build_method("toy_l1_dpm", {"unet": dict(TINY_UNET)}, {}, {}, INFO)
    assert type(method) is ToyL1DPM and (method.schedule.kind, method.schedule.T) == ("linear", 1000)
    tensors, config = export_method(method)
    checkpoint.save_model_folder(tmp_path / "m", tensors, config, {"seed": 0})
    back = load_method(tmp_path / "m")
    assert type(back) is ToyL1DPM and export_method(back)[1] == config
    assert all(torch.equal(v, tensors[k]) for k, v in export_method(back)[0].items())
    registry.unregister("toy_l1_dpm")
    with pytest.raises(CheckpointError, match="unknown method 'toy_l1_dpm'"):
        load_model_folder(tmp_path / "m")


def test_register_refuses_a_second_method_of_the_same_name_and_a_class_name_clash(toy) -> None:
    assert register(toy) is toy  # the same spec again: no-op
    with pytest.raises(ValueError, match="already registered"):
        register(MethodSpec("toy_l1_dpm", DPM, nets={"unet": Net(UNet, fixed=("in_channels",))}))

    class UNet2(UNet):
        pass

    UNet2.__name__ = "UNet"
    with pytest.raises(ValueError, match="already named 'UNet'"):
        register(MethodSpec("toy_clash", DPM, nets={"unet": Net(UNet2, fixed=("in_channels",))}))
    assert "toy_clash" not in registry.names()
    with pytest.raises(ValueError, match="needs must be"):
        MethodSpec("x", DPM, nets={}, needs="prior")


# ------------------------------------------------------------------------------------------------
# The built-in methods: one table, and their folders as before.


def test_the_registry_is_the_one_list_of_methods() -> None:
    assert registry.names() == METHOD_NAMES == (
        "dpm", "pdae", "pdae_class", "diffae", "latent", "classifier", "feature_net")
    assert train_methods() == {"dpm": "dpm", "pdae": "pdae", "pdae-class": "pdae_class", "diffae": "diffae",
                               "latent": "latent", "classifier": "classifier", "feature-net": "feature_net"}
    assert sorted(registry.component_classes()) == [
        "AdmUNet", "DiffAEUNet", "DiffusersPrior", "FeatureNet", "GradientEstimator", "LatentMLP", "LatentStats",
        "LinearHead", "SemanticEncoder", "UNet"]
    needs = {s.name: s.needs for s in registry.specs() if s.needs}
    assert needs == {"pdae": "dpm", "pdae_class": "dpm", "latent": "encoder", "classifier": "encoder"}
    with pytest.raises(ValueError, match="unknown method 'gan'"):
        build_method("gan", {}, {}, {}, INFO)


def _tiny_methods() -> dict:
    torch.manual_seed(0)
    dpm = build_method("dpm", {"unet": dict(TINY_UNET)}, {}, {"kind": "linear", "T": 50}, INFO)
    pdae = build_method("pdae", {"encoder": {"channels": [32], "attention_resolutions": []},
                                 "estimator": {"latent_dim": 8}}, {"gamma": 0.2}, {}, INFO, prior=dpm)
    return {
        "dpm": dpm, "pdae": pdae,
        "pdae_class": build_method("pdae_class", {"estimator": {}}, {"weighting": "uniform"}, {}, INFO, prior=dpm),
        "diffae": build_method("diffae", {"model": {
            "base_channels": 32, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_resolutions": [],
            "latent_dim": 8, "enc_channel_mult": [1, 2], "enc_attention_resolutions": []}}, {}, {}, INFO),
        "latent": build_method("latent", {"net": {"hidden": 32, "num_layers": 3, "time_dim": 16, "time_out": 16}},
                               {"clip_latent": True}, {}, INFO, encoder=pdae),
        "classifier": build_method("classifier", {"head": {}}, {"targets": "attributes"}, {}, INFO, encoder=pdae),
        "feature_net": build_method("feature_net", {"net": {"channels": [16, 32], "feature_dim": 16}}, {}, {}, INFO),
    }


UNET_KWARGS = {"in_channels": 1, "base_channels": 32, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_ds": [2],
               "num_heads": 1, "head_channels": -1, "new_attention_order": False, "dropout": 0.0,
               "learn_sigma": False, "num_classes": None}
# config.json of each tiny method, as written before the registry (pinned: old folders load, new ones match).
EXPECTED_COMPONENTS = {
    "dpm": {"unet": ("UNet", UNET_KWARGS)},
    "pdae": {"prior": ("UNet", UNET_KWARGS),
             "estimator": ("GradientEstimator", {"latent_dim": 8, "num_classes": None, "dropout": 0.0}),
             "encoder": ("SemanticEncoder", {"image_size": 8, "in_channels": 1, "latent_dim": 8, "channels": [32],
                                             "attention_resolutions": [], "num_heads": 4})},
    "pdae_class": {"prior": ("UNet", UNET_KWARGS),
                   "estimator": ("GradientEstimator", {"latent_dim": 512, "num_classes": 10, "dropout": 0.0})},
    "diffae": {"model": ("DiffAEUNet", {
        "image_size": 8, "in_channels": 1, "base_channels": 32, "channel_mult": [1, 2], "num_res_blocks": 1,
        "attention_resolutions": [], "num_heads": 1, "dropout": 0.1, "latent_dim": 8, "enc_channel_mult": [1, 2],
        "enc_attention_resolutions": [], "embed_channels": 512, "head_channels": -1, "new_attention_order": False,
        "enc_num_res_blocks": 2})},
    "latent": {"net": ("LatentMLP", {"latent_dim": 8, "hidden": 32, "num_layers": 3, "time_dim": 16, "time_out": 16,
                                     "dropout": 0.0, "use_norm": True}),
               "stats": ("LatentStats", {"dim": 8})},
    "classifier": {"head": ("LinearHead", {"latent_dim": 8, "num_outputs": 3}), "stats": ("LatentStats", {"dim": 8})},
    "feature_net": {"net": ("FeatureNet", {"image_size": 8, "in_channels": 1, "num_classes": 10, "channels": [16, 32],
                                           "feature_dim": 16})},
}
LINEAR_50 = {"kind": "linear", "T": 50, "start": 0.0001, "end": 0.02}
EXPECTED_REST = {  # diffusion, method_kwargs
    "dpm": (LINEAR_50, {}),
    "pdae": (LINEAR_50, {"gamma": 0.2, "weighting": "snr"}),
    "pdae_class": (LINEAR_50, {"gamma": 0.1, "weighting": "uniform"}),
    "diffae": ({**LINEAR_50, "T": 1000}, {}),
    "latent": ({"kind": "const", "T": 1000, "beta": 0.008}, {"clip_latent": True}),
    "classifier": (None, {"targets": "attributes"}),
    "feature_net": (None, {}),
}


def test_config_json_of_every_method_is_as_before_and_round_trips(tmp_path: Path) -> None:
    for name, method in _tiny_methods().items():
        tensors, config = export_method(method)
        components = {c: (spec["class"], spec["kwargs"]) for c, spec in config["components"].items()}
        assert components == EXPECTED_COMPONENTS[name], name
        assert list(components) == list(EXPECTED_COMPONENTS[name]), name  # key order: the bytes of config.json
        for cname, (_, kwargs) in components.items():
            assert list(kwargs) == list(EXPECTED_COMPONENTS[name][cname][1]), (name, cname)
        diffusion, method_kwargs = EXPECTED_REST[name]
        assert (config["format"], config["method"]) == ("pdae-bench/1", name)
        assert (config["diffusion"], config["method_kwargs"]) == (diffusion, method_kwargs), name
        checkpoint.save_model_folder(tmp_path / name, tensors, config, {})
        back = load_method(tmp_path / name)
        assert type(back) is type(method)
        tensors_back, config_back = export_method(back)
        assert config_back == config and tensors_back.keys() == tensors.keys()
        assert all(torch.equal(tensors_back[k], v) for k, v in tensors.items()), name


def test_a_folder_missing_a_component_of_its_method_is_refused(tmp_path: Path) -> None:
    latent = _tiny_methods()["latent"]
    tensors, config = export_method(latent)
    del config["components"]["stats"]
    tensors = {k: v for k, v in tensors.items() if not k.startswith("stats.")}
    checkpoint.save_model_folder(tmp_path / "m", tensors, config, {})
    with pytest.raises(ValueError, match="component 'stats' missing for method 'latent'"):
        load_method(tmp_path / "m")


def test_config_checks_read_the_registry() -> None:
    from pdae.config import ConfigError, check_method_options, check_nets

    check_nets("pdae", {"encoder": {"latent_dim": 8}, "estimator": {}})
    with pytest.raises(ConfigError, match=r"config.nets.unet: not used by method 'pdae' \(expected encoder, estimator\)"):
        check_nets("pdae", {"unet": {}})
    with pytest.raises(ConfigError, match="config.nets.estimator.prior: set from the data or the prior"):
        check_nets("pdae", {"estimator": {"prior": 1}})
    with pytest.raises(ConfigError, match="unknown key for PDAE"):
        check_method_options("pdae", {"beta": 1})


# ------------------------------------------------------------------------------------------------
# The networks' own config record.


class _Net(torch.nn.Module):
    @register_to_config(ignore=("other",))
    def __init__(self, size: int, other: object = None, widths: typing.Sequence[int] = (1, 2), scale: float | None = None,
                 **extra: object) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(size, size)
        self.config.update(scale=1.0 if scale is None else scale)  # a normalised value


def test_register_to_config_records_the_call_with_defaults() -> None:
    net = _Net(3, other=object(), flag=True)
    assert net.config == {"size": 3, "widths": [1, 2], "scale": 1.0}
    assert list(net.config) == ["size", "widths", "scale"]
    assert _Net(4, None, [3, (4, 5)], 0.5).config == {"size": 4, "widths": [3, [4, 5]], "scale": 0.5}
    assert list(inspect.signature(_Net.__init__).parameters)[:3] == ["self", "size", "other"]
    assert typing.get_type_hints(_Net.__init__)["size"] is int
    with pytest.raises(TypeError):
        _Net()
    with pytest.raises(TypeError, match="has no argument"):
        register_to_config(lambda self, a: None, ignore=("b",))


def test_every_component_class_rebuilds_from_its_config() -> None:
    for name, method in _tiny_methods().items():
        parts = method.components()
        for cname, module in parts.items():
            inputs = {arg: parts[src] for arg, src in getattr(type(module), "component_inputs", {}).items()}
            rebuilt = type(module)(**module.config, **inputs)
            assert rebuilt.config == module.config, (name, cname)
            assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
                k: v.shape for k, v in module.state_dict().items()}, (name, cname)
