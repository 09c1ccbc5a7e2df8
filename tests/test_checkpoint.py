"""Model-folder format, atomic writes and safe loading of pickled checkpoints (pdae/checkpoint.py)."""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import pickle
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

from pdae import checkpoint as ckpt
from pdae.checkpoint import (
    FORMAT,
    CheckpointError,
    atomic_write_json,
    build_components,
    load_model_folder,
    load_state_dict_strict,
    make_config,
    safe_torch_load,
    save_model_folder,
    sha256_file,
    split_components,
    state_dict_with_prefix,
)

TINY_UNET = {
    "in_channels": 3,
    "base_channels": 32,
    "channel_mult": [1, 2],
    "num_res_blocks": 1,
    "attention_ds": [2],
    "num_heads": 1,
    "head_channels": -1,
    "new_attention_order": False,
    "dropout": 0.0,
    "learn_sigma": False,
    "num_classes": None,
}


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message and message
    return message


def sample_tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "unet.weight": torch.randn(4, 3, generator=g),
        "unet.half": torch.randn(5, generator=g).half(),
        "unet.bf16": torch.randn(2, 2, generator=g).bfloat16(),
        "unet.steps": torch.arange(7, dtype=torch.int64),
        "unet.mask": torch.tensor([True, False]),
        "unet.scalar": torch.tensor(3.25),
        "stats.mean": torch.randn(8, generator=g),
        "stats.std": torch.rand(8, generator=g) + 0.5,
    }


def sample_config() -> dict:
    return make_config("dpm", {"unet": {"class": "UNet", "kwargs": TINY_UNET}}, {"kind": "linear", "T": 1000})


def write_folder(path: Path) -> dict[str, torch.Tensor]:
    tensors = sample_tensors()
    save_model_folder(path, tensors, sample_config(), {"seed": 3, "images_seen": 128})
    return tensors


# Round trip.


def test_round_trip_is_bit_exact(tmp_path):
    tensors = write_folder(tmp_path / "m")
    folder = load_model_folder(tmp_path / "m")
    assert sorted(os.listdir(tmp_path)) == ["m"]  # no temporary siblings left
    assert sorted(os.listdir(tmp_path / "m")) == sorted(ckpt.MODEL_FILES)
    assert set(folder.tensors) == set(tensors)
    for key, value in tensors.items():
        assert folder.tensors[key].dtype == value.dtype
        assert torch.equal(folder.tensors[key], value), key
    assert folder.config == sample_config()
    assert folder.config["format"] == FORMAT == "pdae-bench/1"
    assert folder.metadata == {"seed": 3, "images_seen": 128}
    assert folder.method == "dpm"
    assert set(folder.components()) == {"unet", "stats"}


def test_save_handles_views_and_shared_storage(tmp_path):
    base = torch.arange(12.0)
    tensors = {"unet.a": base[:6], "unet.b": base[6:], "unet.t": base.view(3, 4).t(), "unet.same": base}
    save_model_folder(tmp_path / "m", tensors, sample_config(), {})
    loaded = load_model_folder(tmp_path / "m").tensors
    for key, value in tensors.items():
        assert torch.equal(loaded[key], value)


def test_overwrite_replaces_a_model_folder(tmp_path):
    write_folder(tmp_path / "m")
    save_model_folder(tmp_path / "m", {"unet.w": torch.ones(2)}, sample_config(), {"v": 2})
    folder = load_model_folder(tmp_path / "m")
    assert list(folder.tensors) == ["unet.w"] and folder.metadata == {"v": 2}
    assert sorted(os.listdir(tmp_path)) == ["m"]


def test_save_into_existing_empty_dir_and_refuses_foreign_files(tmp_path):
    (tmp_path / "empty").mkdir()
    write_folder(tmp_path / "empty")
    assert load_model_folder(tmp_path / "empty").metadata["seed"] == 3
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "stats.jsonl").write_text("{}\n")
    with pytest.raises(CheckpointError) as exc:
        write_folder(tmp_path / "run")
    assert "stats.jsonl" in one_line(exc)
    assert os.listdir(tmp_path / "run") == ["stats.jsonl"]


# Atomicity.


def test_interrupted_write_leaves_no_folder(tmp_path, monkeypatch):
    real = ckpt.atomic_write_bytes

    def crash_on_metadata(path, data):
        if Path(path).name == ckpt.METADATA_FILE:
            raise KeyboardInterrupt("simulated crash")
        real(path, data)

    monkeypatch.setattr(ckpt, "atomic_write_bytes", crash_on_metadata)
    with pytest.raises(KeyboardInterrupt):
        write_folder(tmp_path / "m")
    assert os.listdir(tmp_path) == []


def test_interrupted_overwrite_keeps_the_old_folder(tmp_path, monkeypatch):
    old = write_folder(tmp_path / "m")

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("safetensors.torch.save_file", crash)
    with pytest.raises(OSError):
        save_model_folder(tmp_path / "m", {"unet.w": torch.ones(2)}, sample_config(), {})
    assert sorted(os.listdir(tmp_path)) == ["m"]
    assert torch.equal(load_model_folder(tmp_path / "m").tensors["unet.weight"], old["unet.weight"])


def test_atomic_write_json(tmp_path, monkeypatch):
    path = tmp_path / "a.json"
    atomic_write_json(path, {"x": [1, 2], "p": Path("/a/b")})
    assert json.loads(path.read_text()) == {"x": [1, 2], "p": "/a/b"}
    with pytest.raises(CheckpointError) as exc:
        atomic_write_json(path, {"x": object()})
    assert "a.json" in one_line(exc)

    def crash(src, dst):
        raise OSError("simulated crash")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        atomic_write_json(path, {"x": 3})
    assert json.loads(path.read_text())["x"] == [1, 2]
    assert os.listdir(tmp_path) == ["a.json"]


# Validation on load.


def test_missing_file(tmp_path):
    write_folder(tmp_path / "m")
    (tmp_path / "m" / "metadata.json").unlink()
    with pytest.raises(CheckpointError) as exc:
        load_model_folder(tmp_path / "m")
    assert "missing metadata.json" in one_line(exc)
    with pytest.raises(CheckpointError) as exc:
        load_model_folder(tmp_path / "nowhere")
    assert "nowhere" in one_line(exc)


def test_truncated_safetensors(tmp_path):
    write_folder(tmp_path / "m")
    path = tmp_path / "m" / "model.safetensors"
    data = path.read_bytes()
    for cut in (len(data) - 5, 12, 3):
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError) as exc:
            load_model_folder(tmp_path / "m")
        assert "model.safetensors" in one_line(exc) and "truncated or corrupt" in str(exc.value)


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda c: c.update(format="pdae-bench/0"), "wrong format tag 'pdae-bench/0'"),
        (lambda c: c.update(method="gan"), "unknown method 'gan'"),
        (lambda c: c.pop("diffusion"), "missing key(s) diffusion"),
        (lambda c: c.update(extra=1), "unknown key(s) extra"),
        (lambda c: c["components"].update(encoder={"class": "SemanticEncoder", "kwargs": {}}), "no tensors for component(s) encoder"),
        (lambda c: c["components"]["unet"].update({"class": "Mystery"}), "unknown class 'Mystery'"),
    ],
)
def test_bad_config(tmp_path, edit, expected):
    write_folder(tmp_path / "m")
    path = tmp_path / "m" / "config.json"
    config = json.loads(path.read_text())
    edit(config)
    path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as exc:
        load_model_folder(tmp_path / "m")
    msg = one_line(exc)
    assert expected in msg and ("config.json" in msg or "model.safetensors" in msg)


def test_corrupt_json(tmp_path):
    write_folder(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text('{"format": ')
    with pytest.raises(CheckpointError) as exc:
        load_model_folder(tmp_path / "m")
    assert "config.json: not valid JSON" in one_line(exc)


def test_save_validates_before_writing(tmp_path):
    with pytest.raises(CheckpointError):
        save_model_folder(tmp_path / "m", {"unet.w": torch.ones(1)}, {**sample_config(), "format": "x"}, {})
    with pytest.raises(CheckpointError) as exc:
        save_model_folder(tmp_path / "m", {"encoder.w": torch.ones(1)}, sample_config(), {})
    assert "unet" in one_line(exc)
    with pytest.raises(CheckpointError):
        save_model_folder(tmp_path / "m", {"nodot": torch.ones(1)}, sample_config(), {})
    assert os.listdir(tmp_path) == []


# State dicts.


def test_prefix_and_split_are_inverse():
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    flat = state_dict_with_prefix("net", net)
    assert "net.0.weight" in flat and "net.1.running_mean" in flat
    parts = split_components({**flat, "stats.mean": torch.zeros(2)})
    assert set(parts) == {"net", "stats"}
    for key, value in net.state_dict().items():
        assert torch.equal(parts["net"][key], value)
    with pytest.raises(CheckpointError) as exc:
        split_components({"orphan": torch.zeros(1)})
    assert "orphan" in one_line(exc)
    with pytest.raises(CheckpointError):
        state_dict_with_prefix("a.b", net)


def test_load_state_dict_strict():
    torch.manual_seed(0)
    src, dst = nn.Sequential(nn.Linear(4, 3), nn.SiLU(), nn.Linear(3, 2)), nn.Sequential(nn.Linear(4, 3), nn.SiLU(), nn.Linear(3, 2))
    load_state_dict_strict(dst, src.state_dict(), "ckpt.pt")
    for a, b in zip(src.parameters(), dst.parameters()):
        assert torch.equal(a, b)

    wrong = nn.Sequential(nn.Linear(4, 5), nn.SiLU(), nn.Linear(5, 2))
    before = [p.clone() for p in wrong.parameters()]
    with pytest.raises(CheckpointError) as exc:
        load_state_dict_strict(wrong, src.state_dict(), "ckpt.pt")
    msg = one_line(exc)
    assert msg.startswith("ckpt.pt: ") and "wrong architecture" in msg
    assert "0.weight [3, 4] vs [5, 4]" in msg and "0.bias" in msg
    assert all(torch.equal(a, b) for a, b in zip(before, wrong.parameters()))  # nothing loaded

    sd = dict(src.state_dict())
    sd["extra.weight"] = sd.pop("2.bias")
    with pytest.raises(CheckpointError) as exc:
        load_state_dict_strict(dst, sd, "x.ckpt")
    assert "missing keys 2.bias" in one_line(exc) and "unexpected keys extra.weight" in str(exc.value)


# Building components (with the real networks, tiny configs).


def test_build_components_round_trip(tmp_path):
    from pdae.nets.gradient_estimator import GradientEstimator
    from pdae.nets.unet import UNet

    torch.manual_seed(0)
    prior = UNet(**TINY_UNET)
    estimator = GradientEstimator(prior, latent_dim=8, dropout=0.0)
    for p in estimator.new_parameters():  # make G non-zero so outputs are informative
        p.data.normal_(0, 0.02)
    tensors = {**state_dict_with_prefix("prior", prior), **state_dict_with_prefix("estimator", estimator)}
    assert not any(k.startswith("estimator.prior.") for k in tensors)
    config = make_config(
        "pdae",
        {
            "prior": {"class": "UNet", "kwargs": prior.config},
            "estimator": {"class": "GradientEstimator", "kwargs": estimator.config},
        },
        {"kind": "linear", "T": 1000},
        {"gamma": 0.1},
    )
    save_model_folder(tmp_path / "m", tensors, config, {})
    built = build_components(load_model_folder(tmp_path / "m"))
    assert built["estimator"].prior is built["prior"]
    x, t, z = torch.randn(2, 3, 8, 8), torch.tensor([3, 700]), torch.randn(2, 8)
    with torch.no_grad():
        eps_a, g_a = estimator.eval()(x, t, z)
        eps_b, g_b = built["estimator"](x, t, z)
    assert torch.equal(eps_a, eps_b) and torch.equal(g_a, g_b) and g_a.abs().sum() > 0

    # The same tensors under a wider prior config do not fit: one line naming the file and keys.
    path = tmp_path / "m" / "config.json"
    bad = json.loads(path.read_text())
    bad["components"]["prior"]["kwargs"]["base_channels"] = 64
    path.write_text(json.dumps(bad))
    with pytest.raises(CheckpointError) as exc:
        build_components(load_model_folder(tmp_path / "m"))
    assert "model.safetensors: component 'prior'" in one_line(exc) and "shape mismatch" in str(exc.value)


def test_build_component_bad_kwargs():
    with pytest.raises(CheckpointError) as exc:
        ckpt.build_component({"class": "UNet", "kwargs": {"nonsense": 1}}, "cfg: components.unet")
    assert one_line(exc).startswith("cfg: components.unet: cannot build UNet")


def test_sha256_file(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"pdae" * 1000)
    assert sha256_file(path, chunk_bytes=7) == hashlib.sha256(b"pdae" * 1000).hexdigest()


# Safe loading of pickled checkpoints.


class Payload:
    """Pickles as a call to `func(*args)`: what a malicious checkpoint would contain."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def fake_class(monkeypatch, module: str, name: str, base: type = object) -> type:
    """A class whose pickled reference is `module.name`, registered only while pickling."""
    parts = module.split(".")
    for i in range(1, len(parts) + 1):
        dotted = ".".join(parts[:i])
        if dotted not in sys.modules:
            monkeypatch.setitem(sys.modules, dotted, types.ModuleType(dotted))
    cls = type(name, (base,), {"__module__": module})
    monkeypatch.setattr(sys.modules[module], name, cls, raising=False)
    return cls


def test_plain_state_dict_loads(tmp_path):
    sd = collections.OrderedDict(w=torch.randn(3, 2), b=torch.arange(3))
    torch.save({"ema_denoise_fn": sd, "step": 5}, tmp_path / "c.pt")
    out = safe_torch_load(tmp_path / "c.pt")
    assert out["step"] == 5 and torch.equal(out["ema_denoise_fn"]["w"], sd["w"])


def test_lightning_checkpoint_loads_without_lightning(tmp_path, monkeypatch):
    attribute_dict = fake_class(monkeypatch, "pytorch_lightning.utilities.parsing", "AttributeDict", dict)
    model_checkpoint = fake_class(monkeypatch, "pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint")
    state = collections.OrderedDict({"ema_model.w": torch.randn(2, 2), "x_T": torch.randn(1, 3, 4, 4)})
    ckpt_obj = {
        "state_dict": state,
        "global_step": 7,
        "hyper_parameters": attribute_dict(net_ch=32, net_ch_mult=[1, 2], name="tiny"),
        "callbacks": {model_checkpoint: {"best_model_score": torch.tensor(0.5), "dirpath": "/x"}},
        "args": argparse.Namespace(lr=1e-4),
        "misc": {"set": {1, 2}, "bytes": b"ab", "dtype": torch.float16, "path": Path("/a/b"), "size": torch.Size([2])},
    }
    torch.save(ckpt_obj, tmp_path / "last.ckpt")
    for name in [m for m in sys.modules if m.startswith("pytorch_lightning")]:
        monkeypatch.delitem(sys.modules, name)

    out = safe_torch_load(tmp_path / "last.ckpt")
    assert not any(m.startswith("pytorch_lightning") for m in sys.modules)
    assert torch.equal(out["state_dict"]["ema_model.w"], state["ema_model.w"])
    assert out["global_step"] == 7
    assert isinstance(out["hyper_parameters"], dict) and out["hyper_parameters"] == {"net_ch": 32, "net_ch_mult": [1, 2], "name": "tiny"}
    assert out["hyper_parameters"].net_ch == 32
    assert list(out["callbacks"]) == ["pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"]
    assert out["args"].lr == 1e-4
    assert out["misc"]["set"] == {1, 2} and out["misc"]["bytes"] == b"ab" and out["misc"]["dtype"] is torch.float16
    assert str(out["misc"]["path"]) == "/a/b"


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump", "pickle-proto0", "lightning-class-call"])
def test_code_payload_is_refused_and_not_executed(tmp_path, monkeypatch, writer):
    marker = tmp_path / "PWNED"
    payload = Payload(os.system, f"touch {marker}")
    path = tmp_path / "evil.ckpt"
    if writer == "torch.save":
        torch.save({"state_dict": {"w": torch.ones(2)}, "hook": payload}, path)
    elif writer == "pickle.dump":
        path.write_bytes(pickle.dumps({"x": payload}))
    elif writer == "pickle-proto0":
        path.write_bytes(pickle.dumps(payload, protocol=0))
    else:
        callback = fake_class(monkeypatch, "pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint")
        torch.save({"cb": Payload(callback, f"touch {marker}")}, path)
    with pytest.raises(CheckpointError) as exc:
        safe_torch_load(path)
    msg = one_line(exc)
    assert not marker.exists()
    if writer == "lightning-class-call":
        assert "it references pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint (pickled code)" in msg
    else:
        assert msg == (
            f"refusing to load {path}: it references os.system (pickled code); "
            "only tensors and plain containers are accepted"
        )


def test_builtin_eval_payload_is_refused(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    torch.save([Payload(eval, f"open({str(marker)!r}, 'w')")], path)
    with pytest.raises(CheckpointError) as exc:
        safe_torch_load(path)
    assert "it references builtins.eval" in one_line(exc)
    assert not marker.exists()


def test_truncated_and_missing_torch_files(tmp_path):
    path = tmp_path / "c.pt"
    torch.save({"w": torch.randn(64, 64)}, path)
    data = path.read_bytes()
    for cut in (len(data) // 2, 100, 0):
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError) as exc:
            safe_torch_load(path)
        assert one_line(exc).startswith(f"cannot read {path}: truncated or corrupt PyTorch file")
    path.write_bytes(pickle.dumps({"a": 1})[:-3])
    with pytest.raises(CheckpointError):
        safe_torch_load(path)
    with pytest.raises(CheckpointError) as exc:
        safe_torch_load(tmp_path / "absent.pt")
    assert "absent.pt: file not found" in one_line(exc)
