"""The memory guard: a trial whose net cannot fit in the memory left fails with its reason before it allocates.

Without it, a trial with wide layers and a big batch on a small machine (or container) is killed by the
kernel's OOM killer, and the whole search with it; on a GPU it raises CUDA out-of-memory after having
allocated (and fragmented) what it could. The guard estimates the trial's peak memory from its settings
and the shapes of its data (``estimate_trial_memory``), reads what the machine has left
(``available_memory``) and, when the estimate does not fit, returns the reason the search records
(``check_trial_memory``): "too big for memory: needs ~X, Y available ...".

The estimate is honest and a little conservative (float32 everywhere, even under bf16 autocast); what it
counts is in ``estimate_trial_memory``'s docstring. ``AUTOML_DNN_MEMORY_LIMIT`` overrides what the
machine reports (``50MB``, ``8GiB``, plain bytes), or turns the guard off (``off``).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from automl_dnn.config import EVAL_BATCH_SIZE, EVAL_MAX_FLOATS, NetConfig, TrialSettings
from automl_dnn.errors import AutoDNNError
from automl_dnn.model import categorical_columns, embedded_columns, hidden_widths

ENV_LIMIT = "AUTOML_DNN_MEMORY_LIMIT"
USABLE_FRACTION = 0.8  # a trial may plan on 80% of what is available: allocator caching, fragmentation, slack
FLOAT = 4  # bytes: weights, activations and features are float32
# Per-parameter tensors an optimizer keeps (torch.optim's state): Adam-family exp_avg + exp_avg_sq (Adamax:
# exp_inf), Adagrad's sum, RMSProp's square_avg, SGD's momentum buffer. An unknown name counts as Adam.
OPTIMIZER_STATE = {"sgd": 0, "momentum": 1, "nesterov": 1, "adagrad": 1, "rmsprop": 1,
                   "adam": 2, "adamax": 2, "nadam": 2, "adamw": 2}
EVAL_ROWS = EVAL_BATCH_SIZE  # the trainer's evaluation batch, and its cap on a wide net's rows (EVAL_MAX_FLOATS)
BACKWARD_FACTOR = 2.5  # a training row's peak / what its forward pass keeps (measured on the CPU: 1.6 to 2.5)
ROW_BYTES = 24  # per training/validation row beside its features: the int64 target, its float copy, the permutation
CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
MEMINFO = Path("/proc/meminfo")
LARGE_TABLE_TRIAL_FLOOR = 512 * 2**20  # bytes: ``large_table_allowance`` never asks a trial for less
NO_LIMIT = 2**60  # cgroup v1 writes "no limit" as a huge number (about 2**63)
UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9, "t": 10**12,
         "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


# --------------------------------------------------------------------------- the estimate


@dataclass(frozen=True)
class MemoryEstimate:
    """A trial's peak memory in bytes, by what holds it (the parts are summed: they coexist at the peak)."""

    weights: int  # the net, its buffers, the EMA/SWA copy, the best epoch's copies (in RAM), an idle CV net
    gradients: int
    optimizer: int  # the optimizer's state and its step's temporaries
    activations: int  # the larger of a training batch's autograd tensors and an evaluation batch's
    data: int  # the rows the trainer holds as tensors, and the copies cross-validation makes

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations + self.data

    def describe(self) -> str:
        parts = {"activations": self.activations, "weights": self.weights, "gradients": self.gradients,
                 "optimizer": self.optimizer, "data": self.data}
        return ", ".join(f"{name} {human_bytes(n)}" for name, n in parts.items() if n)


def count_net_parameters(net: NetConfig, *, d_in: int, d_out: int) -> int:
    """The trainable scalars ``model.build_mlp(net, d_in=d_in, d_out=d_out)`` will have, without building it.

    Mirrors build_mlp: embeddings, the scaling layer, input BatchNorm, hidden blocks (Linear or TabM's
    BatchEnsemble with its adapters R, S and per-member biases, BatchNorm, PReLU slopes), and the head (one
    Linear, or k for TabM).
    """
    k = net.k_ensemble
    total, d_prev = _embedding_parameters(net, d_in)
    if net.front_scale:
        total += d_prev
    if net.batchnorm == "input":
        total += 2 * d_prev
    for width in hidden_widths(net):
        bias = net.batchnorm != "before"  # a BatchNorm right after the linear replaces its bias
        total += d_prev * width + (k * (d_prev + width) if k > 1 else 0) + (k * width if bias else 0)
        total += 2 * width if net.batchnorm in ("before", "after") else 0
        total += width if net.activation == "prelu" else 0
        d_prev = width
    return total + k * (d_prev * d_out + d_out)


def _embedding_parameters(net: NetConfig, d_in: int) -> tuple[int, int]:
    """(parameters, output width) of the input embeddings: PLR / PLE per numeric column, a table per category."""
    numeric, categorical = len(embedded_columns(net, d_in)), len(categorical_columns(net))
    d_out = numeric * net.d_embedding + categorical * net.d_cat_embedding + d_in - numeric - categorical
    total = sum(net.categorical_cardinalities or []) * net.d_cat_embedding
    if numeric and net.num_embedding == "plr":  # frequencies, then one Linear(2 * frequencies, d) per column
        total += numeric * (net.plr_frequencies + 2 * net.plr_frequencies * net.d_embedding + net.d_embedding)
    elif numeric and net.num_embedding == "ple":  # version B: a linear embedding + one bias-free Linear(bins, d)
        total += numeric * (2 * net.d_embedding + _max_bins(net) * net.d_embedding)
    return total, d_out


def _max_bins(net: NetConfig) -> int:
    return max(net.bin_counts) if net.bin_counts else net.ple_bins


def _buffer_scalars(net: NetConfig, d_in: int) -> int:
    """BatchNorm's running statistics, PLE's bin edges and the embeddings' column indices (approximately)."""
    bn_widths = hidden_widths(net) if net.batchnorm in ("before", "after") else []
    if net.batchnorm == "input":
        bn_widths = [_embedding_parameters(net, d_in)[1]]
    ple = 3 * len(embedded_columns(net, d_in)) * _max_bins(net) if net.num_embedding == "ple" else 0
    return sum(2 * w + 1 for w in bn_widths) + ple + 2 * d_in


def activation_scalars_per_row(net: NetConfig, *, d_in: int, d_out: int) -> float:
    """Floats one training row holds at the peak: the tensors its forward pass keeps for the backward
    pass, times ``BACKWARD_FACTOR`` (each gets a gradient of its size, and the allocator keeps slack).

    Forward: the batch's input row and input BatchNorm's output; per hidden layer and TabM member, its
    Linear's output (BatchEnsemble: the input times R, then 3 outputs), 1 for BatchNorm, 1 for the
    activation, 2 for dropout (its output and mask: a float mask on the CPU); the head's outputs. The
    numeric embeddings' work (``_embedding_stage``, before TabM's members exist) counts twice (measured:
    1.2 for PLR, 1.8 for PLE).
    """
    k = net.k_ensemble
    d_embedded = _embedding_parameters(net, d_in)[1]
    floats = d_in + (d_embedded if net.batchnorm == "input" else 0)
    d_prev, widths = d_embedded, hidden_widths(net)
    for i, width in enumerate(widths):
        with_dropout = net.dropout > 0 and (net.dropout_placement == "all" or i == len(widths) - 1)
        linear = k * (d_prev + 3 * width) if k > 1 else width
        floats += linear + k * width * (1 + (net.batchnorm in ("before", "after")) + 2 * with_dropout)
        d_prev = width
    return BACKWARD_FACTOR * (floats + 2 * k * d_out) + 2 * _embedding_stage(net, d_in)


def eval_rows(net: NetConfig, *, d_in: int, d_out: int, n_rows: int) -> int:
    """Rows of one evaluation batch, as ``train.eval_batch_size`` measures it: at most EVAL_ROWS, and fewer
    when the widest module output per row (PLE's encoding, PLR's periodic features, the embedded row, TabM's
    k copies of it or of a hidden layer) would make one batch's output larger than EVAL_MAX_FLOATS."""
    numeric, d_embedded = len(embedded_columns(net, d_in)), _embedding_parameters(net, d_in)[1]
    per_column = {"plr": 2 * net.plr_frequencies, "ple": _max_bins(net)}.get(net.num_embedding, 0)
    k = net.k_ensemble
    embedded = d_embedded if numeric or categorical_columns(net) else 0  # no embedding module: no such output
    members = k * max([d_embedded, *hidden_widths(net), d_out]) if k > 1 else max([*hidden_widths(net), d_out])
    widest = max(embedded, numeric * per_column, members)
    return max(1, min(EVAL_ROWS, n_rows, EVAL_MAX_FLOATS // widest))


def eval_scalars_per_row(net: NetConfig, *, d_in: int, d_out: int) -> float:
    """Floats one evaluation row needs: no autograd, so only the widest step's tensors at once (a numeric
    embedding's per-column work, or 4 layer widths: input, output, BatchNorm's and the activation's
    temporaries), and the outputs kept."""
    k, embedding = net.k_ensemble, _embedding_stage(net, d_in)
    widest = max([_embedding_parameters(net, d_in)[1], *hidden_widths(net)])
    return d_in + max(embedding, 4 * k * widest) + 2 * k * d_out


def _embedding_stage(net: NetConfig, d_in: int) -> float:
    """Floats a row's numeric embeddings hold per column: PLR 7 x frequencies (2 pi f x, cos, sin, their
    concatenation and its contiguous copy for the per-column matmul), PLE 4 x bins (encoding, clamps,
    concatenation, copy), both + 4 x d_embedding (matmul, bias or linear part, activation or sum, the
    flattened copy); then the concatenated row."""
    numeric, d_embedded = len(embedded_columns(net, d_in)), _embedding_parameters(net, d_in)[1]
    per_column = {"plr": 7 * net.plr_frequencies, "ple": 4 * _max_bins(net)}.get(net.num_embedding, 0)
    return numeric * (per_column + 4 * net.d_embedding) + (d_embedded if d_embedded != d_in else 0)


def estimate_trial_memory(settings: TrialSettings, *, d_in: int, d_out: int, n_train: int, n_valid: int,
                          on_cpu: bool = True, cv_folds: int = 1) -> MemoryEstimate:
    """The peak memory of training ``settings`` on ``n_train`` rows validated on ``n_valid`` (float32).

    With P the parameters (``count_net_parameters``, exact) and S the optimizer's state tensors per
    parameter (``OPTIMIZER_STATE``: Adam-family 2, momentum SGD / Adagrad / RMSProp 1, SGD 0):

    - weights = 4 B x (P + buffers) x (1 + 1 for an EMA/SWA copy + 2 on the CPU for the best epoch's copy
      (the old one lives until the new one is made) + 1 for the trial's own net, idle while a
      cross-validated trial's fold nets train);
    - gradients = 4 B x P; optimizer = 4 B x P x (S + 1 when S > 0: the foreach step's temporaries);
    - activations = 4 B x max(B x ``activation_scalars_per_row`` (B = the batch size, at most the
      training rows; TabM's k members and the numeric embeddings' widths are in the per-row count),
      ``eval_rows`` (at most 8192, fewer for wide nets; validation rows, SWA: also the training rows its
      BatchNorm refresh reads) x ``eval_scalars_per_row``);
    - data = (n_train + n_valid) x (4 B x d_in + 24 B) (features, targets, the epoch's permutation):
      on a GPU the tensors the trainer copies there; on the CPU the loaded arrays are already in use, so
      this stands for the copies the trial makes (SWA's shuffled rows, target transforms); a
      cross-validated trial adds 2x for its concatenated development rows and each fold's rows.

    Not counted: the epoch-time probe's copy of the net (it is freed before training starts, and smaller
    than training's peak), Python objects, and the CUDA context (already taken from what a GPU reports free).
    """
    net, train = settings.net, settings.train
    params = count_net_parameters(net, d_in=d_in, d_out=d_out)
    copies = 1 + (train.weight_averaging != "none") + 2 * on_cpu + (cv_folds > 1)
    state = OPTIMIZER_STATE.get(train.optimizer, 2)
    batch = max(1, min(train.batch_size, n_train))
    rows = eval_rows(net, d_in=d_in, d_out=d_out,
                     n_rows=max(n_valid, n_train if train.weight_averaging == "swa" else 0, 1))
    activations = max(batch * activation_scalars_per_row(net, d_in=d_in, d_out=d_out),
                      rows * eval_scalars_per_row(net, d_in=d_in, d_out=d_out))
    data = (n_train + n_valid) * (FLOAT * d_in + ROW_BYTES) * (1 + 2 * (cv_folds > 1))
    return MemoryEstimate(weights=FLOAT * (params + _buffer_scalars(net, d_in)) * copies, gradients=FLOAT * params,
                          optimizer=FLOAT * params * (state + (state > 0)), activations=math.ceil(FLOAT * activations),
                          data=int(data))


# --------------------------------------------------------------------------- what the machine has


def parse_size(text: str) -> int:
    """``50MB``, ``1.5GB``, ``8GiB``, ``1000000`` -> bytes (k, M, G, T are powers of 1000; KiB.. of 1024)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([a-z]*)\s*", text.lower())
    if not match or match.group(2) not in UNITS:
        raise AutoDNNError(f"{ENV_LIMIT}={text!r} is not a size; write e.g. 50MB, 8GiB, or off")
    return int(float(match.group(1)) * UNITS[match.group(2)])


def human_bytes(n: float) -> str:
    """Bytes in the unit that reads best: 812 kB, 52 MB, 2.1 GB."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            value = n / size
            return f"{value:.2g} {unit}" if value < 10 else f"{value:.0f} {unit}"
    return f"{int(n)} B"


def meminfo_available(path: Path = MEMINFO) -> int | None:
    """The kernel's own estimate of the memory a new workload can take without swapping (MemAvailable)."""
    try:
        for line in path.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def cgroup_available(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> int | None:
    """Bytes this process's cgroups may still use, the tightest over every level that has a limit; None if none has.

    cgroup v2: ``memory.max`` - ``memory.current``; v1: ``memory/.../memory.limit_in_bytes`` -
    ``memory.usage_in_bytes``. The usage leaves out the inactive file cache (``memory.stat``), which the
    kernel reclaims before it kills anything, as ``docker stats`` does.
    """
    v2, v1 = _own_cgroups(proc_cgroup)
    levels = [(folder, "memory.max", "memory.current", "inactive_file") for folder in _levels(root, v2)]
    levels += [(folder, "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
               for folder in _levels(root / "memory", v1)]
    room = [r for r in (_headroom(*level) for level in levels) if r is not None]
    return min(room) if room else None


def _own_cgroups(proc_cgroup: Path) -> tuple[str, str]:
    """The process's cgroup v2 path and v1 memory-controller path ("/" when unknown)."""
    v2 = v1 = "/"
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return v2, v1
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            v2 = path or "/"
        elif "memory" in controllers.split(","):
            v1 = path or "/"
    return v2, v1


def _levels(base: Path, path: str) -> list[Path]:
    """The folders from the process's cgroup up to the mount's root, those that exist (in a container the
    mount's root is often the process's own cgroup, so its path does not exist below it)."""
    folder, found = base / path.strip("/"), []
    while True:
        if folder.is_dir():
            found.append(folder)
        if folder == base or base not in folder.parents:
            return found
        folder = folder.parent


def _headroom(folder: Path, limit_name: str, usage_name: str, inactive_key: str) -> int | None:
    try:
        limit = (folder / limit_name).read_text().strip()
        usage = int((folder / usage_name).read_text().strip())
    except (OSError, ValueError):
        return None
    if limit == "max" or not limit.isdigit() or int(limit) >= NO_LIMIT:
        return None
    return max(0, int(limit) - max(0, usage - _stat(folder / "memory.stat", inactive_key)))


def _stat(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def check_limit_setting() -> None:
    """Refuse a bad ``AUTOML_DNN_MEMORY_LIMIT`` before the search starts: read only by each trial, it failed ten
    trials, recorded in the study, before the search stopped on it."""
    override = os.environ.get(ENV_LIMIT, "").strip()
    if override and override.lower() not in ("off", "none"):
        parse_size(override)


def available_memory(device: str | torch.device = "cpu") -> tuple[int, str] | None:
    """(bytes a trial on ``device`` may still take, where that figure comes from), None when unknown or off.

    ``AUTOML_DNN_MEMORY_LIMIT`` first; a CUDA device: ``torch.cuda.mem_get_info``'s free bytes plus what this
    process's caching allocator holds unused; else the tightest of the cgroup's room and MemAvailable.
    """
    override = os.environ.get(ENV_LIMIT, "").strip()
    if override.lower() in ("off", "none"):
        return None
    if override:
        return parse_size(override), ENV_LIMIT
    dev = _device(device)
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        cached = torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev)
        return free + cached, f"free on {dev}"
    found = [(n, source) for n, source in ((cgroup_available(), "cgroup limit"), (meminfo_available(), "MemAvailable"))
             if n is not None]
    return min(found) if found else None


def _device(device: str | torch.device) -> torch.device:
    """"auto" is CUDA when there is one (as the trainer resolves it)."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# --------------------------------------------------------------------------- the check


def large_table_allowance(n_rows: int, d_in: int) -> int:
    """What one trial may hold in a search on a sample of a large table: the size of the whole encoded
    table, at least ``LARGE_TABLE_TRIAL_FLOOR``.

    Issue 13: the fit of such a table stays within 4x its float32 matrix only if no trial alone takes
    more than one matrix (a TabM k = 8 trial with batches of 1,024 rows added ~600 MB beside XGBoost's
    matrix at 1M x 100)."""
    return max(LARGE_TABLE_TRIAL_FLOOR, n_rows * d_in * FLOAT)


def check_trial_memory(settings: TrialSettings, data: Mapping[str, np.ndarray], *, d_out: int, device: str,
                       cv_folds: int = 1, available: tuple[int, str] | None = None,
                       allowance: int | None = None) -> str | None:
    """Why the trial cannot fit in memory (the search fails it with this reason before building its net),
    or None when it fits or the available memory is unknown.

    ``data`` holds the run's ``X_train`` and ``y_valid``; ``available`` replaces ``available_memory(device)``.
    ``allowance``: the bytes a trial may take in a large table whatever the machine has
    (``large_table_allowance``; on the CPU, where the fit's own memory is).
    """
    on_cpu = _device(device).type != "cuda"
    estimate = estimate_trial_memory(settings, d_in=data["X_train"].shape[1], d_out=d_out,
                                     n_train=len(data["X_train"]), n_valid=len(data["y_valid"]), on_cpu=on_cpu,
                                     cv_folds=cv_folds)
    if allowance is not None and on_cpu and estimate.total > allowance:
        return (f"too big for a table this large: needs ~{human_bytes(estimate.total)} ({estimate.describe()}), "
                f"a trial may take ~{human_bytes(allowance)} here (the encoded table's size: the fit stays within "
                "4x the table); not run")
    available = available if available is not None else available_memory(device)
    if available is None or estimate.total <= USABLE_FRACTION * available[0]:
        return None
    return (f"too big for memory: needs ~{human_bytes(estimate.total)} ({estimate.describe()}), "
            f"{human_bytes(available[0])} available ({available[1]}); not run")
