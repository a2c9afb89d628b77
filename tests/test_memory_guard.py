"""The memory guard: the estimate, what the machine has (cgroup v1/v2, /proc/meminfo, a GPU), and a search
whose too-big trial fails with its reason before it builds its net while the others complete."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from optuna.trial import TrialState

import automl_dnn.memory_guard as guard
from automl_dnn import api
from automl_dnn.config import NetConfig, TrainConfig, TrialSettings
from automl_dnn.errors import AutoDNNError
from automl_dnn.model import build_mlp, count_parameters
from automl_dnn.optim import OPTIMIZERS, make_optimizer
from automl_dnn.run_folder import RunDir
from automl_dnn.study import open_study
from automl_dnn import train as train_module
from automl_dnn.train import EVAL_BATCH_SIZE
from tests.conftest import GUARDED_SPACE

NETS = {
    "plain": {},
    "deep, wide first layer": {"n_layers": 4, "d_hidden": 48, "first_layer_mult": 2.0},
    "no hidden layer": {"n_layers": 0},
    "bn before, prelu": {"batchnorm": "before", "activation": "prelu"},
    "bn after, dropout": {"batchnorm": "after", "dropout": 0.2},
    "bn input": {"batchnorm": "input"},
    "tabm": {"k_ensemble": 4, "n_layers": 3},
    "tabm, bn before, prelu": {"k_ensemble": 4, "batchnorm": "before", "activation": "prelu"},
    "plr": {"num_embedding": "plr", "d_embedding": 8, "plr_frequencies": 12},
    "plr, scaling layer, tabm": {"num_embedding": "plr", "d_embedding": 8, "front_scale": True, "k_ensemble": 4},
    "scaling layer, bn input": {"front_scale": True, "batchnorm": "input"},
    "ple, tabm": {"num_embedding": "ple", "embedded_columns": [0, 1, 2], "bin_counts": [4, 7, 3], "k_ensemble": 8},
    "categories + plr": {"categorical_columns": [5, 6], "categorical_cardinalities": [4, 11],
                         "num_embedding": "plr", "embedded_columns": [0, 1, 3]},
}


def _settings(net: dict | None = None, **train: object) -> TrialSettings:
    return TrialSettings(net=NetConfig(**(net or {})), train=TrainConfig(**train))


# --------------------------------------------------------------------------- the estimate


def test_parameter_count_matches_torch_for_a_plain_mlp() -> None:
    net = NetConfig(n_layers=3, d_hidden=100)
    assert guard.count_net_parameters(net, d_in=13, d_out=1) == count_parameters(build_mlp(net, d_in=13, d_out=1))
    assert guard.count_net_parameters(net, d_in=13, d_out=1) == 13 * 100 + 100 + 2 * (100 * 100 + 100) + 101


@pytest.mark.parametrize("name", list(NETS))
def test_parameter_count_matches_torch_for_every_layer_kind(name: str) -> None:
    net = NetConfig(**NETS[name])
    assert guard.count_net_parameters(net, d_in=7, d_out=3) == count_parameters(build_mlp(net, d_in=7, d_out=3))


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_state_multiplier_is_what_torch_keeps(name: str) -> None:
    model = torch.nn.Linear(3, 4)
    optimizer = make_optimizer(name, model, TrainConfig(optimizer=name))
    model(torch.randn(5, 3)).sum().backward()
    optimizer.step()
    kept = sum(t.numel() for p in model.parameters() for t in optimizer.state[p].values()
               if torch.is_tensor(t) and t.shape == p.shape)
    assert kept == guard.OPTIMIZER_STATE[name] * count_parameters(model)


def test_optimizer_memory_is_its_state_plus_the_step_temporaries() -> None:
    params = guard.count_net_parameters(NetConfig(), d_in=10, d_out=1)
    size = {name: guard.estimate_trial_memory(_settings(optimizer=name), d_in=10, d_out=1, n_train=100,
                                              n_valid=20).optimizer for name in ("sgd", "momentum", "adam", "nadam")}
    assert size == {"sgd": 0, "momentum": 2 * 4 * params, "adam": 3 * 4 * params, "nadam": 3 * 4 * params}
    gradients = guard.estimate_trial_memory(_settings(), d_in=10, d_out=1, n_train=100, n_valid=20).gradients
    assert gradients == 4 * params


def test_the_evaluation_batch_is_the_trainers() -> None:
    assert guard.EVAL_ROWS == EVAL_BATCH_SIZE
    assert guard.EVAL_MAX_FLOATS == train_module.EVAL_MAX_FLOATS


@pytest.mark.parametrize("name", sorted(NETS))
def test_the_evaluation_rows_of_a_wide_net_are_those_the_trainer_measures(name: str,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """With the float cap low enough to bind, the guard's rows a batch are the trainer's (measured on the net)."""
    monkeypatch.setattr(train_module, "EVAL_MAX_FLOATS", 2**12)
    monkeypatch.setattr(guard, "EVAL_MAX_FLOATS", 2**12)
    net = NetConfig(**NETS[name])
    model = build_mlp(net, d_in=7, d_out=3)
    X = torch.randn(50, 7)
    X[:, 5:7] = torch.randint(0, 4, (50, 2)).float()  # level codes, for the nets with categorical columns
    assert guard.eval_rows(net, d_in=7, d_out=3, n_rows=10**6) == train_module.eval_batch_size(model, X)


def test_activations_grow_with_the_batch_the_tabm_members_and_the_embeddings() -> None:
    def activations(net: dict | None = None, batch: int = 256, n_train: int = 10_000) -> int:
        return guard.estimate_trial_memory(_settings(net, batch_size=batch), d_in=20, d_out=1, n_train=n_train,
                                           n_valid=100).activations

    assert activations(batch=1024) == pytest.approx(4 * activations(batch=256), rel=0.01)
    assert activations(batch=4096, n_train=500) == activations(batch=500, n_train=500), "a batch has at most n rows"
    assert activations({"k_ensemble": 8}) > 6 * activations()
    assert activations({"num_embedding": "plr"}) > 5 * activations()
    assert activations({"dropout": 0.1, "batchnorm": "after"}) > activations()


def test_data_weight_copies_and_cross_validation_are_counted() -> None:
    def estimate(settings: TrialSettings, **kw: object) -> guard.MemoryEstimate:
        return guard.estimate_trial_memory(settings, d_in=50, d_out=1, n_train=1000, n_valid=200, **kw)

    plain = estimate(_settings())
    assert plain.data == 1200 * (4 * 50 + guard.ROW_BYTES)
    assert estimate(_settings(), cv_folds=5).data == 3 * plain.data
    assert estimate(_settings(weight_averaging="ema")).weights > plain.weights
    assert estimate(_settings(), on_cpu=False).weights < plain.weights, "the best epoch's copy goes to the CPU"
    assert plain.total == plain.weights + plain.gradients + plain.optimizer + plain.activations + plain.data


# --------------------------------------------------------------------------- what the machine has


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_memory_max_minus_working_set(tmp_path: Path) -> None:
    root, proc = tmp_path / "cgroup", tmp_path / "proc-cgroup"
    _write(proc, "0::/user.slice/job\n")
    _write(root / "user.slice" / "job" / "memory.max", "100000000\n")
    _write(root / "user.slice" / "job" / "memory.current", "30000000\n")
    _write(root / "user.slice" / "job" / "memory.stat", "anon 20000000\ninactive_file 10000000\nactive_file 0\n")
    _write(root / "user.slice" / "memory.max", "max\n")
    _write(root / "user.slice" / "memory.current", "900000000\n")
    assert guard.cgroup_available(root, proc) == 100_000_000 - (30_000_000 - 10_000_000)
    _write(root / "user.slice" / "memory.max", "50000000\n")  # a parent's tighter limit wins
    _write(root / "user.slice" / "memory.current", "45000000\n")
    assert guard.cgroup_available(root, proc) == 5_000_000


def test_cgroup_without_a_limit_or_files_is_unknown(tmp_path: Path) -> None:
    root, proc = tmp_path / "cgroup", tmp_path / "proc-cgroup"
    _write(proc, "0::/job\n")
    assert guard.cgroup_available(root, proc) is None
    _write(root / "job" / "memory.max", "max\n")
    _write(root / "job" / "memory.current", "123\n")
    assert guard.cgroup_available(root, proc) is None
    assert guard.cgroup_available(root, tmp_path / "missing") is None


def test_cgroup_in_a_container_reads_the_mount_root(tmp_path: Path) -> None:
    root, proc = tmp_path / "cgroup", tmp_path / "proc-cgroup"
    _write(proc, "0::/\n")
    _write(root / "memory.max", "2000000000\n")
    _write(root / "memory.current", "500000000\n")
    assert guard.cgroup_available(root, proc) == 1_500_000_000


def test_cgroup_v1_limit_in_bytes(tmp_path: Path) -> None:
    root, proc = tmp_path / "cgroup", tmp_path / "proc-cgroup"
    _write(proc, "5:cpu,cpuacct:/\n4:memory:/docker/abc\n0::/\n")
    folder = root / "memory" / "docker" / "abc"
    _write(folder / "memory.limit_in_bytes", "9223372036854771712\n")  # v1's "no limit"
    _write(folder / "memory.usage_in_bytes", "1000\n")
    assert guard.cgroup_available(root, proc) is None
    _write(folder / "memory.limit_in_bytes", "80000000\n")
    _write(folder / "memory.usage_in_bytes", "30000000\n")
    _write(folder / "memory.stat", "inactive_file 1\ntotal_inactive_file 10000000\n")
    assert guard.cgroup_available(root, proc) == 60_000_000


def test_meminfo_available(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    _write(meminfo, "MemTotal:       24683664 kB\nMemFree: 1 kB\nMemAvailable:   2000 kB\n")
    assert guard.meminfo_available(meminfo) == 2000 * 1024
    assert guard.meminfo_available(tmp_path / "missing") is None


@pytest.mark.parametrize("text, size", [("50MB", 50_000_000), ("1.5 GB", 1_500_000_000), ("8GiB", 8 * 2**30),
                                        ("1000", 1000), ("64k", 64_000)])
def test_sizes_parse(text: str, size: int) -> None:
    assert guard.parse_size(text) == size


def test_a_bad_size_is_a_user_error() -> None:
    with pytest.raises(AutoDNNError, match="AUTOML_DNN_MEMORY_LIMIT='lots' is not a size"):
        guard.parse_size("lots")


def test_the_environment_overrides_or_turns_off_the_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(guard.ENV_LIMIT, "50MB")
    assert guard.available_memory("cpu") == (50_000_000, guard.ENV_LIMIT)
    monkeypatch.setenv(guard.ENV_LIMIT, "off")
    assert guard.available_memory("cpu") is None
    monkeypatch.delenv(guard.ENV_LIMIT)
    found = guard.available_memory("cpu")
    assert found is None or (found[0] >= 0 and found[1] in ("cgroup limit", "MemAvailable"))


def test_a_gpu_counts_its_free_memory_and_this_process_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(guard.ENV_LIMIT, raising=False)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (3_000_000_000, 80_000_000_000))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 700_000_000)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 200_000_000)
    assert guard.available_memory("cuda:0") == (3_500_000_000, "free on cuda:0")


def test_check_gives_the_reason_only_when_the_trial_does_not_fit() -> None:
    import numpy as np

    data = {"X_train": np.zeros((400, 30), np.float32), "y_valid": np.zeros(100, np.int64)}
    big = _settings({"n_layers": 4, "d_hidden": 2048}, batch_size=256)
    reason = guard.check_trial_memory(big, data, d_out=1, device="cpu", available=(50_000_000, "test"))
    assert reason is not None and reason.startswith("too big for memory: needs ~")
    assert reason.endswith("50 MB available (test); not run")
    assert guard.check_trial_memory(_settings(), data, d_out=1, device="cpu", available=(50_000_000, "test")) is None
    assert guard.check_trial_memory(big, data, d_out=1, device="cpu", available=(10**12, "test")) is None


# --------------------------------------------------------------------------- in a search

def test_a_too_big_trial_fails_before_building_its_net_and_the_search_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import automl_dnn.objective as objective_module

    space = tmp_path / "guarded.yaml"
    space.write_text(GUARDED_SPACE)
    built: list[int] = []

    def recording_build(config: NetConfig, **kw: object) -> torch.nn.Module:
        built.append(config.d_hidden)
        return build_mlp(config, **kw)

    monkeypatch.setattr(objective_module, "build_mlp", recording_build)  # the trials' nets (not the space's checks)
    monkeypatch.setenv(guard.ENV_LIMIT, "50MB")
    api.search("builtin:breast_cancer", out=tmp_path / "run", space=str(space), n_trials=2, quiet=True,
               cv_folds=1, pruner="none")
    study = open_study(RunDir(tmp_path / "run").read_spec(), create=False)
    states = [t.state for t in study.trials]
    assert states == [TrialState.FAIL, TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    for trial in study.get_trials(states=(TrialState.FAIL,)):
        assert trial.params["d_hidden"] == 2048
        assert trial.user_attrs["fail_reason"].startswith("too big for memory: needs ~")
        assert trial.user_attrs["fail_reason"].endswith("50 MB available (AUTOML_DNN_MEMORY_LIMIT); not run")
    assert built == [8, 8], "the too-big trials never built their net"


def test_a_bad_limit_in_the_environment_stops_the_search_before_any_trial(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Each trial read the variable: ten failed trials went into the study before the search stopped on it."""
    monkeypatch.setenv(guard.ENV_LIMIT, "lots")
    with pytest.raises(AutoDNNError, match="AUTOML_DNN_MEMORY_LIMIT='lots' is not a size"):
        api.search("builtin:wine", out=tmp_path / "run", space="quick", n_trials=1, quiet=True)
    assert not (tmp_path / "run" / "run.json").exists()
