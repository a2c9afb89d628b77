"""Declarative search spaces: YAML files -> validated ``SearchSpace`` -> Optuna suggestions -> configs.

A space is data, not code (see ``docs/search-spaces.md``). This is the only module that calls
``trial.suggest_*``; the model and trainer only ever see plain ``NetConfig`` / ``TrainConfig`` values.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from automl_dnn.config import NetConfig, TrainConfig, TrialSettings
from automl_dnn.data import TARGET_TRANSFORMS
from automl_dnn.errors import SpaceError, first_line
from automl_dnn.model import build_mlp
from automl_dnn.tasks import TASKS
from automl_dnn.train import check_config

#: Fields a space may set besides those of NetConfig and TrainConfig.
PREPROCESSING_FIELDS = {
    "scaling": ("standard", "quantile", "robust"),
    "target_transform": TARGET_TRANSFORMS,  # regression only: ignored for classification
}
NET_FIELDS = {f.name for f in dataclasses.fields(NetConfig)}
TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)} - {"seed"}
CONFIG_FIELDS = NET_FIELDS | TRAIN_FIELDS | set(PREPROCESSING_FIELDS)
#: NetConfig fields the search sets from the data's columns: a space's value would be overwritten or refused later.
DATA_FIELDS = {"embedded_columns", "bin_counts", "categorical_columns", "categorical_cardinalities"}

SPACE_KEYS = {"name", "description", "params", "enqueue"}
PARAM_KEYS = {"type", "low", "high", "log", "step", "choices", "value", "when", "field"}
PARAM_TYPES = ("int", "float", "categorical", "fixed")
#: An enqueued trial's key that is not a parameter: the tasks it runs for (all when absent). A first trial's best
#: settings can differ by task (docs/benchmarks.md, "The TabM-like first trial without dropout for regression").
ENQUEUE_TASKS_KEY = "tasks"


@dataclass(frozen=True)
class Param:
    """One entry of a space: an Optuna parameter, or a fixed value, possibly conditional."""

    name: str
    type: str
    field: str | None  # None: a switch that only other parameters' conditions read
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()
    value: Any = None
    when: dict[str, tuple[tuple[Any, ...], bool]] = dataclasses.field(default_factory=dict)

    def is_active(self, chosen: dict[str, Any]) -> bool:
        """True when every condition holds on the values chosen so far (by Optuna name)."""
        for other, (values, negate) in self.when.items():
            if other not in chosen:
                return False
            if (chosen[other] in values) == negate:
                return False
        return True

    def contains(self, value: Any) -> bool:
        """Whether ``value`` lies in this parameter's distribution (used to check enqueued trials)."""
        if self.type == "categorical":
            return value in self.choices
        if self.type == "fixed":
            return value == self.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.type == "int" and int(value) != value:
            return False
        return self.low <= value <= self.high  # type: ignore[operator]


@dataclass(frozen=True)
class SearchSpace:
    name: str
    description: str
    params: tuple[Param, ...]
    enqueue: tuple[dict[str, Any], ...] = ()
    source: dict[str, Any] = field(default_factory=dict, compare=False)

    def first_trials(self, task: str) -> list[dict[str, Any]]:
        """The enqueued trials that run for ``task``, in file order, as parameter values."""
        return [{k: v for k, v in trial.items() if k != ENQUEUE_TASKS_KEY} for trial in self.enqueue
                if task in trial.get(ENQUEUE_TASKS_KEY, TASKS)]

    def fingerprint(self) -> str:
        """A hash of the space's content: a resumed search must use the same space."""
        canonical = json.dumps(self.source, sort_keys=True, default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def bundled_spaces() -> list[str]:
    """Names of the spaces shipped with the package."""
    folder = resources.files("automl_dnn.search_spaces")
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_space(name_or_path: str | Path) -> SearchSpace:
    """Load a bundled space by name (``default``) or a YAML file by path, and validate it."""
    text, origin = _read_space_text(str(name_or_path))
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise SpaceError(f"search space {origin} is not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    return parse_space(raw, origin=origin)


def _read_space_text(name_or_path: str) -> tuple[str, str]:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise SpaceError(f"search space file {name_or_path!r} does not exist")
        return path.read_text(encoding="utf-8"), repr(str(path))
    bundled = resources.files("automl_dnn.search_spaces") / f"{name_or_path}.yaml"
    if not bundled.is_file():
        raise SpaceError(
            f"unknown search space {name_or_path!r}: use one of {', '.join(bundled_spaces())} or a path to a .yaml file"
        )
    return bundled.read_text(encoding="utf-8"), repr(name_or_path)


def parse_space(raw: Any, *, origin: str = "<space>") -> SearchSpace:
    """Validate a space given as plain data (what YAML gives) and build the typed ``SearchSpace``."""
    if not isinstance(raw, dict):
        raise SpaceError(f"search space {origin} must be a mapping with a 'params' key")
    _no_unknown_keys(raw, SPACE_KEYS, f"search space {origin}")
    raw_params = raw.get("params")
    if not isinstance(raw_params, dict) or not raw_params:
        raise SpaceError(f"search space {origin} needs a non-empty 'params' mapping")
    params: list[Param] = []
    for name, spec in raw_params.items():
        params.append(_parse_param(str(name), spec, params, origin))
    space = SearchSpace(
        name=str(raw.get("name", origin.strip("'"))),
        description=str(raw.get("description", "")),
        params=tuple(params),
        source=raw,
    )
    for param in params:
        _check_values(param, origin)
    enqueue = raw.get("enqueue") or []
    if not isinstance(enqueue, list) or not all(isinstance(t, dict) for t in enqueue):
        raise SpaceError(f"search space {origin}: 'enqueue' must be a list of mappings of parameter values")
    for i, trial in enumerate(enqueue):
        _check_enqueued(space, trial, f"search space {origin}, enqueue[{i}]")
    return dataclasses.replace(space, enqueue=tuple(enqueue))


def _parse_param(name: str, spec: Any, earlier: list[Param], origin: str) -> Param:
    where = f"search space {origin}, parameter {name!r}"
    if not isinstance(spec, dict):
        spec = {"type": "fixed", "value": spec}
    _no_unknown_keys(spec, PARAM_KEYS, where)
    kind = spec.get("type") or _implied_type(spec)
    if kind not in PARAM_TYPES:
        raise SpaceError(f"{where}: unknown type {kind!r}; use one of {', '.join(PARAM_TYPES)}")
    target = spec.get("field", name)
    if target in DATA_FIELDS:
        raise SpaceError(f"{where}: {target!r} is set by the search from the data's columns, not by a space")
    if target is not None and target not in CONFIG_FIELDS:
        hint = f"; did you mean {_closest(target)!r}?" if _closest(target) else ""
        raise SpaceError(f"{where}: unknown key {target!r} (not a model, training or preprocessing setting){hint}")
    when = _parse_when(spec.get("when") or {}, earlier, where)
    common = {"name": name, "type": kind, "field": target, "when": when}
    if kind == "fixed":
        if "value" not in spec:
            raise SpaceError(f"{where}: a fixed parameter needs a 'value'")
        return Param(**common, value=spec["value"])
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise SpaceError(f"{where}: 'choices' must be a non-empty list, got {choices!r}")
        return Param(**common, choices=tuple(choices))
    return _parse_numeric(spec, common, where)


def _implied_type(spec: dict[str, Any]) -> str:
    if "choices" in spec:
        return "categorical"
    if "value" in spec:
        return "fixed"
    low, high = spec.get("low"), spec.get("high")
    if isinstance(low, int) and isinstance(high, int) and not isinstance(spec.get("step"), float):
        return "int"
    return "float"


def _parse_numeric(spec: dict[str, Any], common: dict[str, Any], where: str) -> Param:
    low, high = spec.get("low"), spec.get("high")
    for key, value in (("low", low), ("high", high)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpaceError(f"{where}: '{key}' must be a number, got {value!r}")
    if low > high:
        raise SpaceError(f"{where}: low <= high must hold, got low={low}, high={high}")
    log = bool(spec.get("log", False))
    if log and low <= 0:
        raise SpaceError(f"{where}: a log range must be > 0, got low={low} (use log: false or a positive low)")
    step = spec.get("step")
    if step is not None and (not isinstance(step, (int, float)) or step <= 0):
        raise SpaceError(f"{where}: 'step' must be a positive number, got {step!r}")
    if log and step is not None and common["type"] == "float":
        raise SpaceError(f"{where}: 'step' cannot be combined with log: true")
    if common["type"] == "int":
        if int(low) != low or int(high) != high:
            raise SpaceError(f"{where}: an int parameter needs whole-number bounds, got low={low}, high={high}")
        low, high = int(low), int(high)
    return Param(**common, low=low, high=high, log=log, step=step)


def _parse_when(raw: Any, earlier: list[Param], where: str) -> dict[str, tuple[tuple[Any, ...], bool]]:
    if not isinstance(raw, dict):
        raise SpaceError(f"{where}: 'when' must map a parameter to a value, a list of values or {{not: [...]}}")
    by_name = {p.name: p for p in earlier}
    when: dict[str, tuple[tuple[Any, ...], bool]] = {}
    for other, cond in raw.items():
        if other not in by_name:
            raise SpaceError(f"{where}: 'when' refers to {other!r}, which is not a parameter defined above it")
        negate = isinstance(cond, dict)
        if negate:
            if set(cond) != {"not"}:
                raise SpaceError(f"{where}: a condition mapping must be {{not: [...]}}, got {cond!r}")
            cond = cond["not"]
        values = tuple(cond) if isinstance(cond, list) else (cond,)
        ref = by_name[other]
        allowed = ref.choices if ref.type == "categorical" else (ref.value,) if ref.type == "fixed" else None
        bad = [v for v in values if allowed is not None and v not in allowed]
        if bad or not values:
            raise SpaceError(f"{where}: condition on {other!r} uses {bad or values!r}, not among its values {allowed!r}")
        when[other] = (values, negate)
    return when


def _check_values(param: Param, origin: str) -> None:
    """Refuse values the model or trainer would reject, at load time rather than inside every trial."""
    if param.field is None:
        return
    if param.type == "fixed":
        candidates = [param.value]
    elif param.type == "categorical":
        candidates = list(param.choices)
    else:
        candidates = [param.low, param.high]
    for value in candidates:
        problem = settings_problem({param.field: value})
        if problem:
            raise SpaceError(f"search space {origin}, parameter {param.name!r}: value {value!r} is refused: {problem}")


def settings_problem(values: dict[str, Any]) -> str | None:
    """Why these settings (others at their defaults) cannot build or train a net, or None."""
    try:
        settings = settings_from_values(values)
        build_mlp(settings.net, d_in=2, d_out=1)
        check_config(settings.train)
    except (ValueError, TypeError, SpaceError) as exc:
        return first_line(exc, limit=1000)
    return None


def _check_enqueued(space: SearchSpace, trial: dict[str, Any], where: str) -> None:
    by_name = {p.name: p for p in space.params}
    tasks = trial.get(ENQUEUE_TASKS_KEY, TASKS)
    if not isinstance(tasks, list | tuple) or not tasks or not all(isinstance(t, str) and t in TASKS for t in tasks):
        raise SpaceError(f"{where}: {ENQUEUE_TASKS_KEY!r} must be a non-empty list of {', '.join(TASKS)}, "
                         f"got {tasks!r}")
    for key, value in trial.items():
        if key == ENQUEUE_TASKS_KEY:
            continue
        if key not in by_name:
            raise SpaceError(f"{where}: {key!r} is not a parameter of the space")
        if not by_name[key].contains(value):
            raise SpaceError(f"{where}: {key}={value!r} lies outside the parameter's range or choices")


def _no_unknown_keys(mapping: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(map(str, mapping)) - allowed)
    if unknown:
        raise SpaceError(f"{where}: unknown key {unknown[0]!r}; allowed keys are {', '.join(sorted(allowed))}")


def _closest(name: str) -> str | None:
    matches = difflib.get_close_matches(name, sorted(CONFIG_FIELDS - DATA_FIELDS), n=1)
    return matches[0] if matches else None


# --- Optuna side --------------------------------------------------------------------------------


def suggest(trial: Any, space: SearchSpace) -> dict[str, Any]:
    """Ask ``trial`` for every active parameter, in file order; returns values keyed by config field.

    Works with any object that has Optuna's ``suggest_*`` methods (``optuna.trial.FixedTrial`` too).
    """
    chosen: dict[str, Any] = {}
    settings: dict[str, Any] = {}
    for param in space.params:
        if not param.is_active(chosen):
            continue
        chosen[param.name] = _suggest_one(trial, param)
        if param.field is not None:
            settings[param.field] = chosen[param.name]
    return settings


def _suggest_one(trial: Any, param: Param) -> Any:
    if param.type == "fixed":
        return param.value
    if param.type == "categorical":
        return trial.suggest_categorical(param.name, list(param.choices))
    if param.type == "int":
        return trial.suggest_int(param.name, param.low, param.high, step=int(param.step or 1), log=param.log)
    return trial.suggest_float(param.name, param.low, param.high, step=param.step, log=param.log)


def settings_from_values(values: dict[str, Any], *, seed: int = 0) -> TrialSettings:
    """Split flat ``{field: value}`` settings into the net, training and preprocessing configs."""
    net = {k: v for k, v in values.items() if k in NET_FIELDS}
    train = {k: v for k, v in values.items() if k in TRAIN_FIELDS}
    chosen = {name: values.get(name, choices[0]) for name, choices in PREPROCESSING_FIELDS.items()}
    for name, value in chosen.items():
        if value not in PREPROCESSING_FIELDS[name]:
            raise SpaceError(f"{name} must be one of {PREPROCESSING_FIELDS[name]}, got {value!r}")
    return TrialSettings(net=NetConfig(**net), train=TrainConfig(**train, seed=seed), **chosen)
