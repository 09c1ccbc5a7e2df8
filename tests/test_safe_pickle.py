"""Pickled config objects and enums load as inert stand-ins; calls into code are refused (pdae/safe_pickle/).

The checkpoints are built here: a throwaway module (a Diff-AE-like `TrainConfig` dataclass and enums, whose
import writes a marker file) is importable only while saving, as when a Lightning checkpoint is read on a
machine without the training code.
"""

from __future__ import annotations

import argparse
import collections
import copyreg
import functools
import importlib
import io
import os
import pickle
import shutil
import subprocess
import sys
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import pdae.checkpoint
from pdae import importers as im
from pdae import safe_pickle
from pdae.checkpoint import CheckpointError, load_model_folder
from pdae.cli import main
from pdae.nets.cond_unet import DiffAEUNet
from pdae.nets.latent_mlp import LatentMLP
from pdae.nets.unet import UNet
from pdae.safe_pickle import GlobalName, OpaqueClass, OpaqueObject, plain, safe_torch_load
from tests.test_importers import (
    TINY_DIFFAE,
    TINY_HP,
    TINY_LATENT,
    TINY_UNET,
    assert_same,
    diffae_official_keys,
    fake_class,
    one_line,
    randomized,
)

# ---------------------------------------------------------------------------------------------------
# A throwaway training-code module.

MODULE_SOURCE = '''
import dataclasses
import enum
import pathlib

pathlib.Path(__file__).with_name("IMPORTED").write_text("the module's code ran")


class TrainMode(enum.Enum):
    diffusion = "diffusion"
    latent_diffusion = "latentdiffusion"


class BetaScheduler(enum.Enum):
    linear = "linear"
    const = "const0.008"


class ModelName(enum.Enum):  # pickled by name: (getattr, (ModelName, "beatgans_autoenc"))
    __reduce_ex__ = enum.pickle_by_enum_name
    beatgans_ddpm = "beatgans_ddpm"
    beatgans_autoenc = "beatgans_autoenc"


@dataclasses.dataclass
class PretrainConfig:
    name: str
    path: str


@dataclasses.dataclass
class TrainConfig:
{fields}
    train_mode: TrainMode = TrainMode.diffusion
    pretrain: PretrainConfig = None

    def __setstate__(self, state):
        pathlib.Path(__file__).with_name("SETSTATE").write_text("__setstate__ ran")
        self.__dict__.update(state)
'''


@contextmanager
def training_code(tmp_path: Path, keep_on_path: bool = False):
    """Yield (module, folder): the module is importable only inside the block (unless `keep_on_path`, then it
    stays importable but is removed from sys.modules), and its IMPORTED marker is removed on exit."""
    name = "diffae_conf_" + uuid.uuid4().hex[:10]
    folder = tmp_path / "code"
    folder.mkdir(exist_ok=True)
    fields = "\n".join(f"    {k}: object = None" for k in TINY_HP)
    (folder / f"{name}.py").write_text(MODULE_SOURCE.replace("{fields}", fields))
    sys.path.insert(0, str(folder))
    importlib.invalidate_caches()
    try:
        yield importlib.import_module(name), folder
    finally:
        sys.modules.pop(name, None)
        if not keep_on_path:
            sys.path.remove(str(folder))
        (folder / "IMPORTED").unlink(missing_ok=True)


@pytest.fixture
def unimport(monkeypatch):
    """Remove a throwaway module's folder from sys.path at the end of a test that kept it importable."""
    folders: list[str] = []
    yield folders.append
    for folder in folders:
        if folder in sys.path:
            sys.path.remove(folder)


def hyper_parameters(mod: Any, layout: str) -> Any:
    """Diff-AE's `hyper_parameters` with config objects: `flat` (the official dict, some values enums and
    objects), `conf` (`save_hyperparameters()` inside `LitModel(conf)`), `object` (the TrainConfig itself)."""
    enums = {"beta_scheduler": mod.BetaScheduler.linear, "latent_beta_scheduler": mod.BetaScheduler.const}
    if layout == "flat":
        return {**TINY_HP, **enums, "train_mode": mod.TrainMode.diffusion, "optimizer": torch.optim.Adam,
                "pretrain": mod.PretrainConfig("base", "checkpoints/base/last.ckpt")}
    conf = mod.TrainConfig(**{**TINY_HP, **enums}, pretrain=mod.PretrainConfig("base", "x.ckpt"))
    return {"conf": conf} if layout == "conf" else conf


def save_lightning(monkeypatch, path: Path, state_dict: dict, hp: Any, writer: str) -> None:
    """A Lightning `last.ckpt` (official Diff-AE code, experiment.py) with `hp` as its hyper_parameters."""
    attribute_dict = fake_class(monkeypatch, "pytorch_lightning.utilities.parsing", "AttributeDict", dict)
    ckpt = {
        "epoch": 3,
        "global_step": 17,
        "pytorch-lightning_version": "1.4.5",
        "state_dict": state_dict,
        "callbacks": {"ModelCheckpoint{'monitor': None}": {"best_model_score": None, "dirpath": "checkpoints/x"}},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999), "params": [0]}]}],
        "lr_schedulers": [],
        "hparams_name": "conf",
        "hyper_parameters": attribute_dict(hp) if isinstance(hp, dict) else hp,
    }
    protocol, zipped = {"torch.save": (2, True), "protocol-1": (1, True), "legacy": (2, False)}[writer]
    torch.save(ckpt, path, pickle_protocol=protocol, _use_new_zipfile_serialization=zipped)
    for name in [m for m in sys.modules if m.startswith("pytorch_lightning")]:
        monkeypatch.delitem(sys.modules, name)


def ddim_state_dict() -> tuple[dict[str, torch.Tensor], UNet]:
    ema = randomized(UNet(**TINY_UNET), 2)
    sd = {f"model.{k}": torch.zeros_like(v) for k, v in ema.state_dict().items()}
    sd.update({f"ema_model.{k}": v for k, v in ema.state_dict().items()})
    sd["x_T"] = torch.randn(2, 3, 16, 16)
    return sd, ema


def latent_state_dict() -> tuple[dict[str, torch.Tensor], DiffAEUNet, LatentMLP]:
    model = randomized(DiffAEUNet(**TINY_DIFFAE), 6)
    net = randomized(LatentMLP(**TINY_LATENT), 7)
    sd = {f"ema_model.{k}": v for k, v in diffae_official_keys(model).items()}
    sd.update({f"ema_model.latent_net.{k}": v for k, v in net.state_dict().items()})
    sd["conds_mean"], sd["conds_std"] = torch.randn(1, 16), torch.rand(1, 16) + 0.5
    return sd, model, net


# ---------------------------------------------------------------------------------------------------
# Diff-AE checkpoints whose hyper_parameters pickle config objects: weights imported, nothing executed.


@pytest.mark.parametrize("writer", ["torch.save", "protocol-1", "legacy"])
@pytest.mark.parametrize("layout", ["flat", "conf", "object"])
def test_diffae_ddim_with_pickled_config_objects_imports(tmp_path, monkeypatch, capsys, layout, writer):
    path = tmp_path / "last.ckpt"
    sd, ema = ddim_state_dict()
    with training_code(tmp_path) as (mod, folder):
        save_lightning(monkeypatch, path, sd, hyper_parameters(mod, layout), writer)
    assert mod.__name__ not in sys.modules and not (folder / "IMPORTED").exists()

    out = tmp_path / "out"
    assert main(["import", "diffae-ddim", str(path), "--out", str(out), "--preset", "auto"]) == 0, capsys.readouterr().err
    folder_ = load_model_folder(out)
    assert_same(folder_.tensors, {f"unet.{k}": v for k, v in ema.state_dict().items()})
    assert folder_.config["components"]["unet"] == {"class": "UNet", "kwargs": TINY_UNET}
    assert folder_.config["diffusion"]["kind"] == "linear"  # beta_scheduler was the enum BetaScheduler.linear
    assert folder_.metadata["global_step"] == 17
    assert mod.__name__ not in sys.modules
    assert not (folder / "IMPORTED").exists() and not (folder / "SETSTATE").exists()


def test_diffae_autoencoder_and_latent_with_pickled_config_objects(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    sd, model, net = latent_state_dict()
    with training_code(tmp_path) as (mod, folder):
        save_lightning(monkeypatch, path, sd, hyper_parameters(mod, "conf"), "protocol-1")

    folder_ = load_model_folder(im.import_diffae_latent(path, tmp_path / "latent", "auto"))
    expected = {f"net.{k}": v for k, v in net.state_dict().items()}
    expected["stats.mean"], expected["stats.std"] = sd["conds_mean"][0], sd["conds_std"][0]
    assert_same(folder_.tensors, expected)
    assert folder_.config["components"]["net"] == {"class": "LatentMLP", "kwargs": TINY_LATENT}
    assert folder_.config["diffusion"] == {"kind": "const", "T": 1000, "beta": 0.008}  # from BetaScheduler.const

    folder_ = load_model_folder(im.import_diffae_autoencoder(path, tmp_path / "ae", "auto"))
    assert folder_.config["components"]["model"] == {"class": "DiffAEUNet", "kwargs": TINY_DIFFAE}
    assert torch.equal(folder_.tensors["model.out.2.weight"], model.state_dict()["out.2.weight"])
    assert len([k for k in folder_.tensors if k.startswith("model.")]) == len(model.state_dict())
    assert not (folder / "IMPORTED").exists() and not (folder / "SETSTATE").exists()

    # A named preset is cross-checked against the same (plain) hyper-parameters.
    with pytest.raises(CheckpointError) as exc:
        im.import_diffae_latent(path, tmp_path / "latent2", "ffhq128")
    assert "preset 'ffhq128' disagrees with the checkpoint's hyper_parameters" in one_line(exc)


def test_training_code_is_not_imported_even_when_importable(tmp_path, monkeypatch, unimport):
    """With the module importable (on sys.path, not yet imported), a normal unpickle runs its code; ours not."""
    path = tmp_path / "last.ckpt"
    sd, ema = ddim_state_dict()
    with training_code(tmp_path, keep_on_path=True) as (mod, folder):
        save_lightning(monkeypatch, path, sd, hyper_parameters(mod, "conf"), "torch.save")
        control = tmp_path / "hyper_parameters.pkl"  # the same objects, for the control below
        control.write_bytes(pickle.dumps(hyper_parameters(mod, "conf"), protocol=2))
    unimport(str(folder))

    out = im.import_diffae_ddim(path, tmp_path / "out", "auto")
    assert_same(load_model_folder(out).tensors, {f"unet.{k}": v for k, v in ema.state_dict().items()})
    assert mod.__name__ not in sys.modules
    assert not (folder / "IMPORTED").exists() and not (folder / "SETSTATE").exists()

    # The markers do work: Python's own unpickler imports the module and runs __setstate__.
    pickle.loads(control.read_bytes())
    assert (folder / "IMPORTED").exists() and (folder / "SETSTATE").exists()
    sys.modules.pop(mod.__name__, None)


def test_stand_ins_record_what_the_pickle_asked_for(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    with training_code(tmp_path) as (mod, _):
        save_lightning(monkeypatch, path, {}, hyper_parameters(mod, "flat"), "torch.save")
    hp = safe_torch_load(path)["hyper_parameters"]
    assert isinstance(hp, safe_pickle.AttributeDict) and hp["net_ch"] == 32
    mode = hp["train_mode"]
    assert isinstance(mode, OpaqueObject) and type(mode).dotted == f"{mod.__name__}.TrainMode"
    assert mode.value == "diffusion" and mode.args == ("diffusion",) and mode.state is None
    assert isinstance(type(mode), OpaqueClass) and type(mode).__module__ == mod.__name__
    assert hp["pretrain"].state == {"name": "base", "path": "checkpoints/base/last.ckpt"}  # NEWOBJ + BUILD
    assert isinstance(hp["optimizer"], OpaqueClass) and hp["optimizer"].dotted == "torch.optim.adam.Adam"
    assert repr(hp["optimizer"]) == "<stand-in class torch.optim.adam.Adam>"
    assert plain(hp)["train_mode"] == "diffusion" and plain(hp)["optimizer"] == "torch.optim.adam.Adam"
    with pytest.raises(TypeError, match="read-only"):
        type(mode).__setstate__ = print  # stand-in classes cannot be given behaviour


# ---------------------------------------------------------------------------------------------------
# Enum members pickled by name (`enum.pickle_by_enum_name`: `getattr(EnumClass, "NAME")`), issue 13.


@pytest.mark.parametrize("protocol", [2, 4])
def test_enum_pickled_by_name_in_hyper_parameters_imports(tmp_path, monkeypatch, protocol):
    path = tmp_path / "last.ckpt"
    sd, ema = ddim_state_dict()
    with training_code(tmp_path) as (mod, folder):
        member = mod.ModelName.beatgans_autoenc
        assert member.__reduce_ex__(protocol) == (getattr, (mod.ModelName, "beatgans_autoenc"))
        hp = {**hyper_parameters(mod, "flat"), "model_name": member}
        attribute_dict = fake_class(monkeypatch, "pytorch_lightning.utilities.parsing", "AttributeDict", dict)
        torch.save({"state_dict": sd, "global_step": 17, "hyper_parameters": attribute_dict(hp)}, path,
                   pickle_protocol=protocol)
        for name in [m for m in sys.modules if m.startswith("pytorch_lightning")]:
            monkeypatch.delitem(sys.modules, name)

    loaded = safe_torch_load(path)["hyper_parameters"]["model_name"]
    assert isinstance(loaded, OpaqueObject) and type(loaded).dotted == f"{mod.__name__}.ModelName"
    assert loaded.member == loaded.name == "beatgans_autoenc" and plain(loaded) == "beatgans_autoenc"
    assert repr(loaded) == f"<stand-in {mod.__name__}.ModelName.beatgans_autoenc>"
    with pytest.raises(AttributeError, match="pickled by name"):
        loaded.value

    out = im.import_diffae_ddim(path, tmp_path / "out", "auto")
    assert_same(load_model_folder(out).tensors, {f"unet.{k}": v for k, v in ema.state_dict().items()})
    assert mod.__name__ not in sys.modules
    assert not (folder / "IMPORTED").exists() and not (folder / "SETSTATE").exists()


class GetattrCall:
    """Pickles as `getattr(obj, name)` (what an enum pickled by name writes), on any object."""

    def __init__(self, obj: Any, name: Any) -> None:
        self.obj, self.name = obj, name

    def __reduce__(self) -> tuple:
        return getattr, (self.obj, self.name)


def test_getattr_on_real_objects_is_refused(tmp_path):
    """Only getattr(<stand-in class>, "NAME") is admitted; getattr on anything real is pickled code."""
    with training_code(tmp_path) as (mod, _):
        admitted = pickle.dumps(Call(getattr, mod.ModelName, "beatgans_ddpm"), protocol=2)
        refused = [
            GetattrCall(os.system, "__call__"),
            GetattrCall(torch.Tensor, "__reduce_ex__"),  # an allowlisted (real) torch class
            GetattrCall(collections.OrderedDict, "fromkeys"),  # an allowlisted real class
            GetattrCall(torch.optim.Adam, "step"),  # a torch global (a refused stand-in)
            GetattrCall(pdae.checkpoint.atomic_write_bytes, "__globals__"),  # a pdae global
            GetattrCall(eval, "__self__"),  # a builtins global
            GetattrCall(mod.ModelName, 3),  # a stand-in class, but not a str name
            GetattrCall(mod.PretrainConfig("base", "x"), "name"),  # a stand-in object, not a class
        ]
        data = [pickle.dumps(obj, protocol=2) for obj in refused]
    assert plain(restricted_loads(admitted)) == "beatgans_ddpm"
    for payload in data:
        with pytest.raises(safe_pickle._RefusedGlobal) as exc:
            restricted_loads(payload)
        assert exc.value.dotted == "builtins.getattr"
    # getattr(os, "system"): a module cannot be pickled, only reached by calling a refused global first.
    with pytest.raises(safe_pickle._RefusedGlobal) as exc:
        restricted_loads(b"c__builtin__\ngetattr\n(c__builtin__\n__import__\n(S'os'\ntRS'system'\ntR.")
    assert exc.value.dotted == "builtins.__import__"

    # Through safe_torch_load: the same one-line "pickled code" refusal.
    path = tmp_path / "payload.pt"
    torch.save({"w": torch.ones(1), "hook": GetattrCall(os.system, "__call__")}, path)
    with pytest.raises(CheckpointError) as err:
        safe_torch_load(path)
    assert "it references builtins.getattr (pickled code)" in one_line(err)


# ---------------------------------------------------------------------------------------------------
# Raw pickles (protocols 0 and 2) through the restricted unpickler.


def restricted_loads(data: bytes) -> Any:
    return safe_pickle._RestrictedUnpickler(io.BytesIO(data)).load()


@pytest.mark.parametrize("protocol", [0, 1, 2, 4])
def test_dataclass_and_enum_pickles_become_plain_data(tmp_path, protocol):
    with training_code(tmp_path) as (mod, folder):
        conf = mod.TrainConfig(**{**TINY_HP, "beta_scheduler": mod.BetaScheduler.linear},
                               pretrain=mod.PretrainConfig("base", "x.ckpt"))
        data = pickle.dumps({"conf": conf, "modes": [mod.TrainMode.diffusion, mod.TrainMode.latent_diffusion]},
                            protocol=protocol)
    if protocol < 2:
        assert b"_reconstructor" in data  # protocols 0/1 rebuild objects with copyreg._reconstructor
    loaded = restricted_loads(data)
    assert plain(loaded) == {
        "conf": {**TINY_HP, "beta_scheduler": "linear", "train_mode": "diffusion",
                 "pretrain": {"name": "base", "path": "x.ckpt"}},
        "modes": ["diffusion", "latentdiffusion"],
    }
    assert not (folder / "IMPORTED").exists() and not (folder / "SETSTATE").exists()


def test_plain_covers_containers_slots_cycles_and_depth():
    cls = safe_pickle._stand_in_class("somepkg.things", "Bag")
    bag = cls()
    bag["a"] = 1  # SETITEMS of a dict subclass
    bag.__setstate__((None, {"slot": OpaqueObject("v")}))  # (no __dict__, slots) as object.__reduce_ex__ writes
    items = cls()
    items.extend([1, cls("x")])  # APPENDS of a list subclass
    point = cls(1, 2)
    kw = cls(size=3)
    assert plain(bag) == {"a": 1, "slot": "v"}
    assert plain(items) == [1, "x"]
    assert plain(point) == [1, 2] and plain(kw) == {"size": 3} and plain(cls()) == {}
    assert plain(cls) == "somepkg.things.Bag" and isinstance(plain(cls), GlobalName)
    ns = argparse.Namespace(lr=1e-4, mode=cls("fast"))
    assert plain({"ns": ns, "t": (cls("e"),), "s": {1, 2}}) == {"ns": {"lr": 1e-4, "mode": "fast"}, "t": ("e",), "s": {1, 2}}
    assert ns.mode.value == "fast"  # not changed

    loop: list[Any] = [1]
    loop.append(loop)
    assert plain(loop) == [1, None]  # a cycle is cut
    shared = {"k": 1}
    out = plain({"a": shared, "b": shared})
    assert out == {"a": {"k": 1}, "b": {"k": 1}} and out["a"] is not shared

    deep: Any = 0
    for _ in range(150):
        deep = [deep]
    with pytest.raises(ValueError, match="nested more than 100 levels deep"):
        plain(deep)


def test_a_stand_in_class_cannot_be_built_upon(tmp_path):
    # GLOBAL somepkg.C, then BUILD on the class itself with a state that would give it a method.
    data = b"\x80\x02csomepkg\nC\nq\x00}q\x01X\x08\x00\x00\x00__call__q\x02cbuiltins\nprint\nq\x03sb."
    with pytest.raises(TypeError):
        restricted_loads(data)
    path = tmp_path / "c.pt"
    path.write_bytes(data)
    with pytest.raises(CheckpointError) as exc:
        safe_torch_load(path)
    assert one_line(exc).startswith(f"cannot read {path}: truncated or corrupt PyTorch file")
    assert "__call__" not in vars(safe_pickle.OpaqueObject)


# ---------------------------------------------------------------------------------------------------
# Calls into code are refused, one line naming the global; nothing runs.


class Call:
    """Pickles as `func(*args)`."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple:
        return self.func, self.args


class NewObj:
    """Pickles as NEWOBJ of `cls` (protocol 2+): `cls.__new__(cls, *args)`."""

    def __init__(self, cls: type, *args: Any) -> None:
        self.cls, self.args = cls, args

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # (pickle checks that NEWOBJ's class is the object's)
        return self.cls

    def __reduce_ex__(self, protocol: int) -> tuple:
        return copyreg.__newobj__, (self.cls, *self.args)


def payloads(marker: Path, victim: Path) -> dict[str, tuple[Any, str]]:
    """id -> (object to pickle, the global the refusal names)."""
    return {
        "os.system": (Call(os.system, f"touch {marker}"), "os.system"),
        "builtins.eval": (Call(eval, f"open({str(marker)!r}, 'w')"), "builtins.eval"),
        "subprocess.Popen": (Call(subprocess.Popen, ["touch", str(marker)]), "subprocess.Popen"),
        "Popen-newobj": (NewObj(subprocess.Popen, ["touch", str(marker)]), "subprocess.Popen"),
        "torch.load": (Call(torch.load, str(victim)), "torch.serialization.load"),
        "numpy.save": (Call(np.save, str(marker), np.zeros(2)), "numpy.save"),
        "reconstructor-real-class": (Call(copyreg._reconstructor, collections.OrderedDict, object, None),
                                     "copyreg._reconstructor"),
        "reconstructor-stdlib-class": (Call(copyreg._reconstructor, subprocess.Popen, object, None), "subprocess.Popen"),
        "partial": (Call(functools.partial(os.system, f"touch {marker}")), "functools.partial"),
        "shutil.rmtree": (Call(shutil.rmtree, str(victim.parent)), "shutil.rmtree"),
        "getattr": (Call(getattr, os.system, "__call__"), "builtins.getattr"),
        "pdae": (Call(pdae.checkpoint.atomic_write_bytes, str(marker), b"x"), "pdae.checkpoint.atomic_write_bytes"),
    }


PAYLOAD_IDS = list(payloads(Path("m"), Path("v")))


@pytest.mark.parametrize("payload", PAYLOAD_IDS)
def test_diffae_checkpoint_calling_code_is_refused(tmp_path, monkeypatch, capsys, payload):
    marker, victim = tmp_path / "PWNED", tmp_path / "victim" / "keep.pt"
    victim.parent.mkdir()
    torch.save({"w": torch.ones(1)}, victim)
    obj, dotted = payloads(marker, victim)[payload]
    path = tmp_path / "last.ckpt"
    sd, _ = ddim_state_dict()
    with training_code(tmp_path) as (mod, folder):
        hp = hyper_parameters(mod, "flat")
        save_lightning(monkeypatch, path, sd, {**hp, "hook": obj}, "torch.save")

    out = tmp_path / "out"
    assert main(["import", "diffae-ddim", str(path), "--out", str(out), "--preset", "auto"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"it references {dotted} (pickled code)" in err and str(path) in err
    assert not marker.exists() and victim.exists() and not out.exists()
    assert not (folder / "IMPORTED").exists()


def test_protocol_0_payloads_are_refused(tmp_path):
    marker = tmp_path / "PWNED"
    cases = {
        b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.": "os.system",  # GLOBAL + REDUCE
        b"(S'touch " + str(marker).encode() + b"'\nios\nsystem\n.": "os.system",  # INST
        b"ccopy_reg\n_reconstructor\n(csubprocess\nPopen\nc__builtin__\nobject\nNtR.": "subprocess.Popen",
        b"ccopy_reg\n_reconstructor\n(ccollections\nOrderedDict\nc__builtin__\ndict\nNtR.": "copyreg._reconstructor",
        b"ccopy_reg\n_reconstructor\n(cargparse\nNamespace\nc__builtin__\nobject\nS'x'\ntR.": "copyreg._reconstructor",
        b"c__builtin__\neval\n(S'1'\ntR.": "builtins.eval",
    }
    for data, dotted in cases.items():
        with pytest.raises(safe_pickle._RefusedGlobal) as exc:
            restricted_loads(data)
        assert exc.value.dotted == dotted
    assert not marker.exists()
    # The allowlisted Namespace is rebuilt as such (protocols 0/1 write it through _reconstructor + BUILD).
    ns = restricted_loads(pickle.dumps(argparse.Namespace(lr=0.5), protocol=0))
    assert type(ns) is argparse.Namespace and ns.lr == 0.5


def test_referencing_code_without_calling_it_is_harmless(tmp_path):
    """A function or class stored as a value (never called) loads as a stand-in class."""
    path = tmp_path / "c.pt"
    torch.save({"w": torch.ones(2), "fn": os.system, "opt": torch.optim.Adam, "ev": eval}, path)
    out = safe_torch_load(path)
    assert torch.equal(out["w"], torch.ones(2))
    flat = plain(out)
    assert flat.pop("w") is out["w"]
    assert flat == {"fn": f"{os.system.__module__}.system", "opt": "torch.optim.adam.Adam", "ev": "builtins.eval"}
    with pytest.raises(safe_pickle._RefusedGlobal):
        out["fn"]("echo never")  # calling a stand-in of the standard library is refused too


def test_too_many_unknown_classes_are_refused(tmp_path):
    path = tmp_path / "many.pt"
    body = b"".join(b"csomepkg\nC%d\n" % i for i in range(1001))
    path.write_bytes(b"\x80\x02(" + body + b"l.")
    with pytest.raises(CheckpointError) as exc:
        safe_torch_load(path)
    # (a raw pickle is not a torch file: torch reads its first object as the legacy magic number)
    assert "more than 1000 distinct unknown classes" in one_line(exc)


def test_protocol_0_torch_file_is_one_line(tmp_path):
    path = tmp_path / "p0.pt"
    torch.save({"w": torch.ones(2)}, path, pickle_protocol=0)
    with pytest.raises(CheckpointError) as exc:
        safe_torch_load(path)
    assert one_line(exc).startswith(f"cannot read {path}: truncated or corrupt PyTorch file")


# ---------------------------------------------------------------------------------------------------
# A stand-in where a tensor is expected: one line.


def test_stand_in_instead_of_a_tensor_is_one_line(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    sd, _ = ddim_state_dict()
    key = next(k for k in sd if k.startswith("ema_model."))
    with training_code(tmp_path) as (mod, _):
        save_lightning(monkeypatch, path, {**sd, key: mod.PretrainConfig("a", "b")}, hyper_parameters(mod, "flat"),
                       "torch.save")
    with pytest.raises(CheckpointError) as exc:
        im.import_diffae_ddim(path, tmp_path / "out", "auto")
    assert one_line(exc) == (
        f"{path}: state_dict['{key}'] is not a tensor (a pickled {mod.__name__}.PretrainConfig object, never imported)"
    )
    assert not (tmp_path / "out").exists()


def test_hyper_parameter_of_the_wrong_type_is_one_line(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    sd, _ = ddim_state_dict()
    with training_code(tmp_path) as (mod, _):
        hp = {**hyper_parameters(mod, "flat"), "net_ch": mod.PretrainConfig("a", "b")}
        save_lightning(monkeypatch, path, sd, hp, "torch.save")
    with pytest.raises(CheckpointError) as exc:
        im.import_diffae_ddim(path, tmp_path / "out", "auto")
    assert "a Diff-AE hyper-parameter has an unusable value" in one_line(exc)


def test_checkpoint_module_reexports_the_loader():
    assert pdae.checkpoint.safe_torch_load is safe_torch_load
    assert pdae.checkpoint.CheckpointError is safe_pickle.CheckpointError
    source = Path(safe_pickle.__file__).read_text()
    assert "import pdae" not in source and "from pdae" not in source  # no upward import


def test_tensor_attributes_from_a_pickle_cannot_replace_its_methods(tmp_path):
    fine = torch.ones(2)
    fine.note = "kept"  # a tensor with a Python attribute pickles through _rebuild_from_type_v2
    param = torch.nn.Parameter(torch.zeros(3))
    param.tag = 7  # ... a Parameter through _rebuild_parameter_with_state
    path = tmp_path / "ok.pt"
    torch.save({"t": fine, "p": param, "x": argparse.Namespace()}, path)
    out = safe_torch_load(path)
    assert out["t"].note == "kept" and torch.equal(out["t"], fine) and out["p"].tag == 7

    for victim in (torch.ones(2), torch.nn.Parameter(torch.ones(2))):
        victim.contiguous = functools.partial  # would shadow Tensor.contiguous once loaded
        path = tmp_path / "shadow.pt"
        torch.save({"w": victim}, path)
        with pytest.raises(CheckpointError) as exc:
            safe_torch_load(path)
        assert "a tensor's pickled state would replace its attribute 'contiguous'" in one_line(exc)
