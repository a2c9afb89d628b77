"""The fit budget's planner: how a ``fit --time-budget B`` splits B between the search and what follows it.

Plain Python, no imports: the search, the ensemble step and the API all ask it, so that the search's
share and the bagging's plan come from one place. Estimates come from measured times (a trial's own
seconds per epoch, XGBoost's best tuning trial), never from guesses about the machine.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Share of a ``fit`` budget kept after the search for the weights and the export (XGBoost trains beside
#: the search, not after it).
ENSEMBLE_SHARE = 0.1
#: The most of a ``fit`` budget the nets' search gives up for their k-fold bagging: it ends early by what
#: the bagging of its best nets so far will take (``reserve_seconds``), as measured in their trials.
BAGGING_SHARE = 0.3
#: The share of the seconds left that the bagging plans to use: its estimates come from trial times
#: measured on a machine that may be busier now.
PLAN_SAFETY = 0.8
#: The share of a ``fit`` budget kept for its report page (permutation importance and MC dropout on at
#: most 2,000 held-out rows), at most REPORT_MAX_SECONDS: ``benchmarks/report_cost.py`` measures it.
REPORT_SHARE, REPORT_MAX_SECONDS = 0.05, 60.0


@dataclass(frozen=True)
class FitPlan:
    """How ``fit --time-budget B`` splits B: ``search + ensemble + report == B``.

    The search's share includes XGBoost (it trains beside the nets) and the nets' bagging: the search
    ends early by what that bagging will take, at most ``bagging_cap`` seconds.
    """

    search: float
    ensemble: float  # the weights and the export, after the search
    report: float  # the report page, last
    bagging_cap: float

    @property
    def total(self) -> float:
        return self.search + self.ensemble + self.report


def plan_fit(time_budget: float, *, report: bool = True, ensemble_share: float | None = None) -> FitPlan:
    """The fit budget's split into its phases (``ensemble_share`` overrides ENSEMBLE_SHARE)."""
    report_s = min(REPORT_SHARE * time_budget, REPORT_MAX_SECONDS) if report else 0.0
    rest = time_budget - report_s
    ensemble_s = rest * (ENSEMBLE_SHARE if ensemble_share is None else ensemble_share)
    return FitPlan(search=rest - ensemble_s, ensemble=ensemble_s, report=report_s, bagging_cap=BAGGING_SHARE * rest)


@dataclass(frozen=True)
class BagPlan:
    """What the bagging phase will do: k folds x repeats of the best ``n_nets`` nets and ``n_trees`` XGBoost."""

    k: int
    repeats: int
    n_nets: int
    n_trees: int
    note: str | None = None  # one line when the plan is less than what was asked, saying why
    seconds: float = 0.0  # the plan's estimate


def plan_bagging(net_costs: list[float], tree_costs: list[float], *, k: int, repeats: int = 1,
                 seconds: float | None, refit: bool = False, workers: int = 1) -> BagPlan:
    """The most bagging that fits in ``seconds`` (None: no limit): all of it if it fits; else fewer nets
    (best first), then fewer repeats, then fewer folds; k = 1 (the validation split) if not even the
    best net fits 2 folds.

    ``net_costs`` are the seconds of one copy of each net, best first; ``tree_costs`` of one XGBoost fold.
    A refit adds one more copy per net. ``workers`` processes train the nets' copies side by side (``--jobs``).
    """
    if seconds is None:
        return BagPlan(k, repeats, len(net_costs), len(tree_costs))
    net_costs = [cost / workers for cost in net_costs]
    budget = PLAN_SAFETY * max(seconds, 0.0)
    options = [(k, r) for r in range(repeats, 0, -1)] + [(kk, 1) for kk in range(k - 1, 1, -1)]
    for kk, rr in options:
        units = kk * rr
        total = sum(tree_costs) * units
        n_nets = 0
        for cost in net_costs:
            if total + cost * (units + refit) > budget:
                break
            total += cost * (units + refit)
            n_nets += 1
        if n_nets:
            return BagPlan(kk, rr, n_nets, len(tree_costs), _note(kk, rr, n_nets, k, repeats, len(net_costs), seconds),
                           seconds=total)
    need = sum(tree_costs) * 2 + (net_costs[0] * (2 + refit) if net_costs else 0.0)
    return BagPlan(1, 1, 0, 0, f"no k-fold bagging: 2 folds of the best net need about {need:.0f}s and "
                               f"{max(seconds, 0.0):.0f}s are left; members and weights fitted on the validation split")


def _note(k: int, repeats: int, n_nets: int, asked_k: int, asked_repeats: int, n_asked: int,
          seconds: float) -> str | None:
    parts = []
    if (k, repeats) != (asked_k, asked_repeats):
        asked = f"{asked_k} folds" + (f" x {asked_repeats} repeats" if asked_repeats > 1 else "")
        parts.append(f"{k} folds" + (f" x {repeats} repeats" if repeats > 1 else "") + f" instead of {asked}")
    if n_nets < n_asked:
        parts.append(f"the best {n_nets} of {n_asked} nets")
    if not parts:
        return None
    return f"bagging cut to fit the {seconds:.0f}s left: " + ", ".join(parts)


@dataclass(frozen=True)
class BaggingRequest:
    """What ``fit`` asks the search to keep time for: k-fold bagging of its best ``top_k`` nets afterwards."""

    cap: float  # the most seconds the search gives up for it
    folds: int | None  # --folds (None: from the rows)
    top_k: int
    refit: bool


@dataclass(frozen=True)
class BaggingReserve:
    """A ``BaggingRequest`` resolved on the run's rows: the workers end the search ``reserve_seconds`` early."""

    cap: float
    k: int
    repeats: int
    top_k: int
    refit: bool
    workers: int = 1  # processes that train the copies side by side (--jobs)


def reserve_seconds(net_costs: list[float], reserve: BaggingReserve) -> float:
    """Seconds before the search's deadline to stop it at, so that the bagging of its best nets so far fits.

    ``net_costs`` are the seconds of one copy of each completed net, best first (measured in its trial).
    Nothing is kept while no net is done, nor when not even 2 folds of the best net fit in ``cap``: the
    search then uses the time.
    """
    if not net_costs:
        return 0.0
    plan = plan_bagging(net_costs[: reserve.top_k], [], k=reserve.k, repeats=reserve.repeats, seconds=reserve.cap,
                        refit=reserve.refit, workers=reserve.workers)
    return 0.0 if plan.k == 1 else min(reserve.cap, plan.seconds / PLAN_SAFETY)
