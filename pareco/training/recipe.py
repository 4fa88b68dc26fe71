"""Training recipes: YAML files validated into frozen dataclasses.

A recipe names everything a run needs except the seed, the data folder and the device::

    name: resnet20-fashionmnist
    model: {arch: resnet20, kwargs: {}, init: none}
    data: {dataset: fashion-mnist, val_size: 5000, augment: {}}
    train: {epochs: 4, batch_size: 128, lr: 0.1, momentum: 0.9, nesterov: true,
            weight_decay: 5.0e-4, schedule: cosine, warmup_epochs: 0, label_smoothing: 0.1}
    method: pareco
    pareco: {m: 2, history_size: 200, warmup_configs: 20, eval_batch: 256, solver: direct}
    independent: {widths: [0.316, 0.5, 0.75, 1.0], epochs: 2}
    front: {calib_images: 2000, max_configs: 12}

``train.epochs`` is the length of a slimmable run (slim, pareco, twostage). ``independent.epochs``
is the length of each independent run (the paper trains independent CIFAR models for half as long:
200 vs 400 epochs); ``null`` means ``train.epochs``. ``pareco.m`` is M, the number of middle
configurations of the sandwich: it is shared by every sandwich method (slim draws M uniform widths,
PareCO proposes M per-layer configurations), so that comparisons are fair.

Every section and key is optional except ``name``, ``model.arch``, ``data.dataset`` and
``train.epochs``; unknown keys and bad values raise :class:`RecipeError` naming the key.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pareco import models
from pareco.data import DATASETS

METHODS = ("slim", "pareco", "twostage", "independent")
SCHEDULES = ("cosine", "linear", "constant")
PRECISIONS = ("fp32", "bf16")
INITS = ("none", "torchvision")
RECIPE_DIR = Path(__file__).resolve().parents[2] / "zoo" / "recipes"
"""The zoo's recipes (``zoo/recipes/*.yaml`` of the repository)."""
ZOO_DIR = Path(os.environ.get("PARECO_ZOO", RECIPE_DIR.parent))
"""Where models are built by default (``$PARECO_ZOO``, default the repository's ``zoo/``)."""
DEFAULT_RECIPE = "resnet20-fashionmnist"


class RecipeError(ValueError):
    """A recipe that cannot be found, parsed or validated; the message names the key."""


@dataclass(frozen=True)
class ModelSpec:
    """The architecture (a name of :func:`pareco.models.available`) and its initialization.

    ``init: torchvision`` loads torchvision weights from ``init_source`` (``imagenet`` for the
    torchvision weights API, or a path to a state_dict file). ``divisor`` rounds every channel
    group's count to a multiple of it (:class:`pareco.width.WidthSpace`; 1 = no rounding, the
    paper's choice; 8 matches the blocked kernels of CPU runtimes such as ONNX Runtime)."""

    arch: str
    kwargs: dict = field(default_factory=dict)
    init: str = "none"
    init_source: str = "imagenet"
    divisor: int = 1

    @property
    def build_kwargs(self) -> dict:
        """The keyword arguments of :func:`pareco.models.build` besides the dataset's (the
        divisor only when it is not the default 1, so default models keep their metadata)."""
        return {**self.kwargs, **({"divisor": self.divisor} if self.divisor != 1 else {})}

    def check(self) -> None:
        if self.arch not in models.available():
            raise RecipeError(f"model.arch: unknown model {self.arch!r}; available: "
                              f"{', '.join(models.available())}")
        reserved = {"num_classes", "in_channels", "image_size"} & set(self.kwargs)
        if reserved:
            raise RecipeError(f"model.kwargs: {sorted(reserved)} come from the dataset, drop them")
        if "divisor" in self.kwargs:
            raise RecipeError("model.kwargs.divisor: set model.divisor instead")
        _choice("model.init", self.init, INITS)
        _at_least("model.divisor", self.divisor, 1)


@dataclass(frozen=True)
class DataSpec:
    """The dataset and its options (see :func:`pareco.data.load_data`); ``workers`` are
    DataLoader worker processes (0: load in the training process, exactly resumable)."""

    dataset: str
    val_size: int | float | None = None
    image_size: int | None = None
    augment: dict = field(default_factory=dict)
    workers: int = 0

    def check(self) -> None:
        _choice("data.dataset", self.dataset, DATASETS)
        _at_least("data.workers", self.workers, 0)
        if self.val_size is not None:
            if isinstance(self.val_size, float) and not 0 < self.val_size < 1:
                raise RecipeError(f"data.val_size: a fraction must lie in (0, 1), got {self.val_size}")
            _at_least("data.val_size", self.val_size, 1)


@dataclass(frozen=True)
class TrainSpec:
    """Optimization: SGD (nesterov) with decoupled-from-BN weight decay and a per-step schedule.

    ``lr`` is the peak learning rate, reached after ``warmup_epochs`` of linear warm-up from 0,
    then decayed to 0 by ``schedule``. ``label_smoothing`` applies to the full network's loss.
    ``precision: bf16`` runs the training passes' forward (and so their backward) under
    ``torch.autocast`` in bfloat16; the weights, the optimizer, the losses, the H
    re-evaluation and the front's calibration and accuracies stay float32."""

    epochs: int
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.1
    precision: str = "fp32"

    def check(self) -> None:
        _at_least("train.epochs", self.epochs, 1)
        _at_least("train.batch_size", self.batch_size, 2)  # batch-statistics BN needs 2 images
        _positive("train.lr", self.lr)
        _in_range("train.momentum", self.momentum, 0.0, 1.0, hi_open=True)
        _at_least("train.weight_decay", self.weight_decay, 0.0)
        _choice("train.schedule", self.schedule, SCHEDULES)
        _choice("train.precision", self.precision, PRECISIONS)
        _in_range("train.warmup_epochs", self.warmup_epochs, 0.0, float(self.epochs))
        _in_range("train.label_smoothing", self.label_smoothing, 0.0, 1.0, hi_open=True)
        if self.nesterov and self.momentum == 0:
            raise RecipeError("train.nesterov needs train.momentum > 0")


PROPOSALS_MAX = 256
"""Most configurations one refresh may propose (the direct solver's pool holds 2048)."""


@dataclass(frozen=True)
class ParecoSpec:
    """The sandwich's M and PareCO's search: target |H| (``history_size``, capped by
    ``max_overhead``, see :func:`pareco.training.methods.history_budget`), uniform warm-up
    configurations, the target rule (``front`` | ``uniform``) and the solver that reaches a
    target (``direct`` | ``tchebyshev``, the paper's binary search of at most ``max_steps``
    optimizations) within ``eps`` normalized FLOPs, the held-out batch size of the H
    re-evaluation, and the LCB weight ``beta`` (g_CE = mu - sqrt(beta) sigma; ``None``:
    :data:`pareco.search.DEFAULT_BETA`). ``uniform_middle`` of the M middle configurations are
    uniform widths re-drawn every step as in slim (0: all M are searched, the paper's PareCO;
    the search then proposes ``m - uniform_middle`` per refresh). ``proposals`` (``None``: as
    many as are searched per step, the paper) is how many configurations the search proposes per
    refresh, each for its own target: the searched ones of every step are drawn from them, and
    only the first ``m - uniform_middle`` join H. ``proposals_from`` (``None``: from the start)
    is the fraction of the training steps before which every step trains those first ones, as
    the paper does, and after which the steps draw from the proposal set. ``cost`` is the
    search's cost objective (``macs``, the paper's FLOPs, or ``latency``: the additive
    per-layer table at ``latency_table``, a JSON file written by ``python -m pareco.profile``);
    ``eps`` and the targets are in units of that cost normalized by the full network's."""

    m: int = 2
    history_size: int = 1000
    warmup_configs: int = 20
    eps: float = 0.02
    max_steps: int = 10
    eval_batch: int = 256
    beta: float | None = None
    solver: str = "direct"
    targets: str = "front"
    uniform_middle: int = 0
    proposals: int | None = None
    proposals_from: float | None = None
    max_overhead: float = 0.05
    cost: str = "macs"
    latency_table: str | None = None

    def check(self) -> None:
        from pareco.search import COSTS, SOLVERS, TARGET_RULES

        _at_least("pareco.m", self.m, 1)
        _at_least("pareco.warmup_configs", self.warmup_configs, 2)
        if self.history_size < self.warmup_configs + self.m:
            raise RecipeError(f"pareco.history_size ({self.history_size}) must exceed "
                              f"pareco.warmup_configs + pareco.m ({self.warmup_configs + self.m})")
        if not 0 <= self.uniform_middle < self.m:
            raise RecipeError(f"pareco.uniform_middle must be in [0, pareco.m - 1 = {self.m - 1}] "
                              f"(at least one middle configuration is searched), got "
                              f"{self.uniform_middle}")
        searched = self.m - self.uniform_middle
        if self.proposals is not None and not searched <= self.proposals <= PROPOSALS_MAX:
            raise RecipeError(f"pareco.proposals must be in [pareco.m - pareco.uniform_middle = "
                              f"{searched}, {PROPOSALS_MAX}] (null: {searched}, the paper), got "
                              f"{self.proposals}")
        if self.proposals_from is not None:
            if self.proposals is None or self.proposals == searched:
                raise RecipeError(f"pareco.proposals_from needs a proposal set to switch to: "
                                  f"pareco.proposals > pareco.m - pareco.uniform_middle = "
                                  f"{searched}, got {self.proposals}")
            _in_range("pareco.proposals_from", self.proposals_from, 0.0, 1.0,
                      lo_open=True, hi_open=True)
        _at_least("pareco.eps", self.eps, 0.0)
        _at_least("pareco.max_steps", self.max_steps, 1)
        _at_least("pareco.eval_batch", self.eval_batch, 2)
        if self.beta is not None:
            _at_least("pareco.beta", self.beta, 0.0)
        _choice("pareco.solver", self.solver, SOLVERS)
        _choice("pareco.targets", self.targets, TARGET_RULES)
        _in_range("pareco.max_overhead", self.max_overhead, 0.0, 1.0, lo_open=True)
        _choice("pareco.cost", self.cost, COSTS)
        if self.cost == "latency" and not self.latency_table:
            raise RecipeError("pareco.cost: latency needs pareco.latency_table (a JSON table "
                              "written by python -m pareco.profile)")
        if self.cost != "latency" and self.latency_table is not None:
            raise RecipeError("pareco.latency_table is only read with pareco.cost: latency "
                              f"(the cost is {self.cost!r}); drop it or set the cost")


@dataclass(frozen=True)
class IndependentSpec:
    """Uniform widths trained alone, each for ``epochs`` (``None``: ``train.epochs``)."""

    widths: tuple[float, ...] = (0.316, 0.5, 0.75, 1.0)
    epochs: int | None = None

    def check(self) -> None:
        if not self.widths:
            raise RecipeError("independent.widths must list at least one width")
        for w in self.widths:
            _in_range("independent.widths", w, 0.0, 1.0, lo_open=True)
        if len(set(self.widths)) != len(self.widths):
            raise RecipeError(f"independent.widths has duplicates: {list(self.widths)}")
        if self.epochs is not None:
            _at_least("independent.epochs", self.epochs, 1)


@dataclass(frozen=True)
class FrontSpec:
    """Front construction (:func:`pareco.front.build_front`): BN calibration images per
    candidate, the front's size bound, validation images used for selection (``None``: all),
    uniform widths added to the candidates, and the evaluation batch size."""

    calib_images: int = 2000
    max_configs: int = 12
    val_images: int | None = None
    uniform_grid: int = 24
    batch_size: int = 256

    def check(self) -> None:
        _at_least("front.calib_images", self.calib_images, 2)
        _at_least("front.max_configs", self.max_configs, 2)
        if self.val_images is not None:
            _at_least("front.val_images", self.val_images, 1)
        if self.uniform_grid == 1:
            raise RecipeError("front.uniform_grid must be 0 or >= 2 (it includes w0 and 1)")
        _at_least("front.uniform_grid", self.uniform_grid, 0)
        _at_least("front.batch_size", self.batch_size, 2)


@dataclass(frozen=True)
class Recipe:
    """A complete, validated training recipe."""

    name: str
    model: ModelSpec
    data: DataSpec
    train: TrainSpec
    method: str = "pareco"
    pareco: ParecoSpec = field(default_factory=ParecoSpec)
    independent: IndependentSpec = field(default_factory=IndependentSpec)
    front: FrontSpec = field(default_factory=FrontSpec)
    description: str = ""

    def check(self) -> "Recipe":
        if not self.name or "/" in self.name:
            raise RecipeError(f"name must be a non-empty string without '/', got {self.name!r}")
        _choice("method", self.method, METHODS)
        for section in (self.model, self.data, self.train, self.pareco, self.independent,
                        self.front):
            section.check()
        if self.pareco.cost != "macs" and self.method not in ("pareco", "twostage"):
            raise RecipeError(f"pareco.cost: {self.pareco.cost} steers the width search, which "
                              f"method {self.method!r} does not run (use pareco or twostage)")
        return self

    @property
    def run_epochs(self) -> int:
        """Epochs of one training run of ``method`` (each width, for independent)."""
        if self.method == "independent" and self.independent.epochs is not None:
            return self.independent.epochs
        return self.train.epochs

    def to_dict(self) -> dict[str, Any]:
        """The fully resolved recipe as plain JSON/YAML-able data (round-trips :func:`from_dict`)."""
        d = dataclasses.asdict(self)
        d["independent"]["widths"] = list(self.independent.widths)
        return d

    def override(self, updates: Mapping[str, Any]) -> "Recipe":
        """A validated copy with dotted keys replaced, e.g. ``{"train.lr": 0.05}``."""
        d = self.to_dict()
        for key, value in updates.items():
            node, parts = d, key.split(".")
            for part in parts[:-1]:
                if not isinstance(node.get(part), dict):
                    raise RecipeError(f"unknown recipe key {key!r}")
                node = node[part]
            if parts[-1] not in node and not (len(parts) > 1 and parts[-2] in ("kwargs", "augment")):
                raise RecipeError(f"unknown recipe key {key!r}")
            node[parts[-1]] = value
        return from_dict(d, source=f"{self.name} with overrides")


# ----------------------------------------------------------------------------------- loading
def from_dict(raw: Any, source: str = "recipe") -> Recipe:
    """Validate a parsed YAML document into a :class:`Recipe`; :class:`RecipeError` on problems."""
    if not isinstance(raw, Mapping):
        raise RecipeError(f"{source}: a recipe must be a mapping, got {type(raw).__name__}")
    try:
        return _build(Recipe, raw, "").check()
    except RecipeError as e:
        raise RecipeError(f"{source}: {e}") from None


def load_recipe(name_or_path: str | os.PathLike) -> Recipe:
    """A recipe by name (``zoo/recipes/<name>.yaml``) or by path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = RECIPE_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise RecipeError(f"unknown recipe {str(name_or_path)!r}; available: "
                              f"{', '.join(list_recipes())} (or pass a path to a .yaml file)")
    if not path.is_file():
        raise RecipeError(f"recipe file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise RecipeError(f"{path}: cannot read YAML ({' '.join(str(e).split())})") from None
    return from_dict(raw, source=str(path))


def list_recipes() -> list[str]:
    """Names of the recipes in the zoo's recipe folder."""
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


# -------------------------------------------------------------------------------- validation
def _build(cls: type, raw: Mapping, prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in raw if k not in fields]
    if unknown:
        raise RecipeError(f"unknown key {prefix + str(unknown[0])!r}; valid keys here: "
                          f"{', '.join(fields)}")
    values = {}
    for name, f in fields.items():
        key = prefix + name
        if name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise RecipeError(f"missing required key {key!r}")
            continue
        values[name] = _coerce(hints[name], raw[name], key)
    return cls(**values)


def _coerce(tp: Any, value: Any, key: str) -> Any:
    if dataclasses.is_dataclass(tp):
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise RecipeError(f"{key} must be a mapping, got {value!r}")
        return _build(tp, value, key + ".")
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, key)
            except RecipeError as e:
                errors.append(str(e))
        raise RecipeError(errors[-1] if len(errors) == 1 else
                          f"{key} must be one of {_names(args)}, got {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"{key} must be a list, got {value!r}")
        return tuple(_coerce(args[0], v, key) for v in value)
    if tp is dict:
        if value is None:
            return {}
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise RecipeError(f"{key} must be a mapping with string keys, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
    elif tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 5e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    raise RecipeError(f"{key} must be {_names((tp,))}, got {value!r}")


def _names(types_: tuple) -> str:
    names = {bool: "true/false", int: "an integer", float: "a number", str: "a string",
             type(None): "null", dict: "a mapping"}
    return " or ".join(names.get(t, getattr(t, "__name__", str(t))) for t in types_)


def _choice(key: str, value: str, options: tuple[str, ...]) -> None:
    if value not in options:
        raise RecipeError(f"{key}: unknown value {value!r}; choose one of {', '.join(options)}")


def _at_least(key: str, value: float, lo: float) -> None:
    if value < lo:
        raise RecipeError(f"{key} must be >= {lo}, got {value}")


def _positive(key: str, value: float) -> None:
    if not value > 0:
        raise RecipeError(f"{key} must be > 0, got {value}")


def _in_range(key: str, value: float, lo: float, hi: float, *, lo_open: bool = False,
              hi_open: bool = False) -> None:
    ok_lo = value > lo if lo_open else value >= lo
    ok_hi = value < hi if hi_open else value <= hi
    if not (ok_lo and ok_hi):
        raise RecipeError(f"{key} must lie in {'(' if lo_open else '['}{lo}, {hi}"
                          f"{')' if hi_open else ']'}, got {value}")
