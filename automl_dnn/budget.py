"""The fit budget's planner: how a ``fit --time-budget B`` splits B between the search and what follows it.

Plain Python, no imports: the search, the ensemble step and the API all ask it, so that the search's
share and the bagging's plan come from one place. Estimates come from measured times (a trial's own
seconds per epoch, XGBoost's best tuning trial), never from guesses about the machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: Share of a ``fit`` budget kept after the search for the weights and the export (XGBoost trains beside
#: the search, not after it: the step waits for its last fold copies and refit).
ENSEMBLE_SHARE = 0.1
#: The same for a fit without XGBoost (``--no-gbt``), where nothing is left to wait for: the weights and the
#: export took 2-3 s, and at 300 s the nets-only fits ended 44-65 s before their budget (docs/benchmarks.md).
#: At least ENSEMBLE_MIN_SECONDS (within ENSEMBLE_SHARE): after the bagging, 60 s fits of adult, phoneme,
#: california_housing, diamonds and vehicle spent 0.1-0.3 s on the weights and the export, so 5 s ended them
#: 5 s early (session 13).
NETS_ONLY_ENSEMBLE_SHARE, ENSEMBLE_MIN_SECONDS = 0.03, 2.0
#: The most of a ``fit`` budget the nets' search gives up for their k-fold bagging: it ends early by what
#: the bagging of its best nets so far will take (``reserve_seconds``), as measured in their trials.
BAGGING_SHARE = 0.3
#: The share of the seconds left that the bagging plans to use: its estimates come from trial times
#: measured on a machine that may be busier now.
PLAN_SAFETY = 0.8
# A cut to fit the time never goes below this many folds: a 2-fold copy trains on half the rows, and at
# 300 s on adult 2 folds of the best net alone (0.9116 ROC-AUC) lost to the 60 s fit's holdout ensemble
# (0.9139). With less time the nets' ensemble stays on the validation split, its nets refit on every row.
MIN_CUT_FOLDS = 3
# ... and keeps at least this many members (nets, and XGBoost), or as many as there are: fewer, and the
# ensemble stays on the validation split with all its members.
MIN_CUT_MEMBERS = 1
# Whether a cut keeps members before folds: of the plans that fit, the one with the most nets (then the most
# folds), rather than the most folds (then the most nets).
MEMBERS_BEFORE_FOLDS = False
#: Seconds until ``--jobs`` bagging workers take their first copy: each spawned process imports torch and
#: the package and reads the development rows (3.4-4.7 s on 2 cores, the two side by side, in 60 s fits of
#: wine_quality_white and adult; 2.4-2.6 s when first measured). Only the first plan guesses it: the
#: bagging plans again once its workers are ready (``ensemble_step._bag_nets``).
POOL_START_SECONDS = 4.0
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


def plan_fit(time_budget: float, *, report: bool = True, ensemble_share: float | None = None,
             gbt: bool = True) -> FitPlan:
    """The fit budget's split into its phases (``ensemble_share`` overrides ENSEMBLE_SHARE, or without
    XGBoost NETS_ONLY_ENSEMBLE_SHARE)."""
    report_s = min(REPORT_SHARE * time_budget, REPORT_MAX_SECONDS) if report else 0.0
    rest = time_budget - report_s
    if ensemble_share is not None:
        ensemble_s = rest * ensemble_share
    elif gbt:
        ensemble_s = rest * ENSEMBLE_SHARE
    else:
        ensemble_s = max(rest * NETS_ONLY_ENSEMBLE_SHARE, min(ENSEMBLE_MIN_SECONDS, rest * ENSEMBLE_SHARE))
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
                 seconds: float | None, refit: bool = False, workers: int = 1, safety: float = PLAN_SAFETY,
                 started: bool = False) -> BagPlan:
    """The most bagging that fits in ``seconds`` (None: no limit): all of it if it fits; else fewer nets
    (best first), then fewer repeats, then fewer folds down to MIN_CUT_FOLDS (or the ``k`` asked for, if
    fewer); k = 1 (the validation split) if not even the best net fits that.

    ``net_costs`` are the seconds of one copy of each net, best first; ``tree_costs`` of one XGBoost fold.
    A refit adds one more copy per net. ``workers`` processes train the nets' copies side by side (``--jobs``):
    one net's copies at a time, so ``ceil(copies / workers)`` rounds of it, after the workers have started
    (POOL_START_SECONDS; none when they have ``started``). The plan uses ``safety`` (PLAN_SAFETY) of ``seconds``.
    """
    if seconds is None:
        return BagPlan(k, repeats, len(net_costs), len(tree_costs))
    start = POOL_START_SECONDS if workers > 1 and not started else 0.0

    def rounds(copies: int) -> int:
        return math.ceil(copies / workers)

    budget = safety * max(seconds, 0.0)
    fewest = min(k, MIN_CUT_FOLDS)
    options = [(k, r) for r in range(repeats, 0, -1)] + [(kk, 1) for kk in range(k - 1, fewest - 1, -1)]
    fitting = []
    for kk, rr in options:
        units = kk * rr
        total = sum(tree_costs) * units + start
        n_nets = 0
        for cost in net_costs:
            if total + cost * rounds(units + refit) > budget:
                break
            total += cost * rounds(units + refit)
            n_nets += 1
        if n_nets and n_nets + len(tree_costs) >= min(MIN_CUT_MEMBERS, len(net_costs) + len(tree_costs)):
            fitting.append(BagPlan(kk, rr, n_nets, len(tree_costs),
                                   _note(kk, rr, n_nets, k, repeats, len(net_costs), seconds), seconds=total))
            if not MEMBERS_BEFORE_FOLDS:
                break
    if fitting:
        return max(fitting, key=lambda plan: plan.n_nets)  # the first of the most nets: the most folds
    need = sum(tree_costs) * fewest + (start + net_costs[0] * rounds(fewest + refit) if net_costs else 0.0)
    return BagPlan(1, 1, 0, 0, f"no k-fold bagging: {fewest} folds of the best net need about {need:.0f}s and "
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
    Nothing is kept while no net is done. When not even MIN_CUT_FOLDS folds of the best net fit in ``cap``,
    the time kept is for one copy of the best nets on every row instead (the ensemble step's refit: at 300 s
    on california_housing the search took it all, and the 5 nets were exported as searched); when not
    even that fits, the search uses the time.
    """
    if not net_costs:
        return 0.0
    costs = net_costs[: reserve.top_k]
    plan = plan_bagging(costs, [], k=reserve.k, repeats=reserve.repeats, seconds=reserve.cap, refit=reserve.refit,
                        workers=reserve.workers)
    if plan.n_nets == 0 and reserve.k > 1:  # the refit copies train one at a time in the fit's own process
        plan = plan_bagging(costs, [], k=1, seconds=reserve.cap)
    return 0.0 if plan.n_nets == 0 else min(reserve.cap, plan.seconds / PLAN_SAFETY)  # k = 1: refit copies only


# --- a trial's share of the search ------------------------------------------------------------------

#: On a time budget a trial's epochs are capped so that it takes about budget / TRIALS_PER_BUDGET, but on
#: a short budget up to budget / SHORT_BUDGET_TRIALS, as long as that is at most SHORT_TRIAL_SECONDS.
TRIALS_PER_BUDGET, SHORT_BUDGET_TRIALS, SHORT_TRIAL_SECONDS = 8, 4, 30.0


def trial_share(time_budget: float) -> float:
    """A trial's seconds on a time budget of the search.

    budget / TRIALS_PER_BUDGET keeps room for a search, but on a short budget that is too few epochs for
    any net to learn (60 s: 7.5 s, five epochs of a TabM on 15,000 rows on 2 cores), so a short budget
    gives each trial up to budget / SHORT_BUDGET_TRIALS, capped at SHORT_TRIAL_SECONDS: fewer trials
    that finish their schedules, rather than many that are all undertrained.
    """
    return max(time_budget / TRIALS_PER_BUDGET, min(time_budget / SHORT_BUDGET_TRIALS, SHORT_TRIAL_SECONDS))


#: A trial whose epochs the budget caps waits at most cap / CAPPED_PATIENCE_SHARE epochs for a better score.
CAPPED_PATIENCE_SHARE = 3


def capped_patience(patience: int, cap: int) -> int:
    """Early stopping's patience for a trial the budget caps at ``cap`` epochs: at most a third of them, never
    fewer than 3, so that a stalled trial hands its time back.

    Not a quarter: at a constant learning rate (the TabM-like trial) the validation score improves in rare steps,
    and at a cap of 19 epochs a patience of 4 stopped 3 of 10 regression curves before their best (2-4 % worse on
    california_housing and diamonds); a third stopped none of them (docs/benchmarks.md, "Patience on a capped
    trial").
    """
    return min(patience, max(3, cap // CAPPED_PATIENCE_SHARE))


# --- large tables (issue 13): the training rows of the search's trials ------------------------------

#: A search on a sample of the training rows is sized so that a trial of SEARCH_EPOCHS epochs (the
#: objective's MIN_EPOCHS, the fewest a trial trains) fits its share of the budget (``trial_share``), at the
#: seconds per row that the search's first nets measured; without a budget, in 1/SEARCH_TRIALS of the time.
SEARCH_TRIALS, SEARCH_EPOCHS = 8, 5
#: Rows below which a search never samples (a sample this small would say little about the table), and the
#: share of the training rows above which it uses them all.
MIN_SEARCH_ROWS, FULL_SEARCH_SHARE = 10_000, 0.9
#: Validation rows each epoch of a sampled search scores (early stopping, pruning): the trial's value is
#: still its score on every validation row, measured once at its end.
WATCH_ROWS = 25_000


@dataclass(frozen=True)
class SearchRows:
    """The training rows the trials train on (``train`` of ``n_train``), the validation rows each epoch scores
    (``watch`` of ``n_valid``), and the one-line note saying so (None: every row)."""

    train: int
    n_train: int
    watch: int
    n_valid: int
    note: str | None = None

    @property
    def sampled(self) -> bool:
        return self.train < self.n_train or self.watch < self.n_valid


def plan_search_rows(n_train: int, n_valid: int, n_test: int, *, row_seconds: float, seconds: float,
                     budget: float | None = None) -> SearchRows:
    """How many training rows the trials can train on so that a trial fits its share of the budget.

    ``row_seconds`` is the measured seconds of one training step per row (an epoch of ``m`` rows costs
    ``m * row_seconds``; predicting a row, forward only, about a third of that). One trial trains
    SEARCH_EPOCHS epochs of ``m`` rows, scores ``w`` watched validation rows after each epoch, and at its
    end predicts every validation and test row (the ensemble needs them), in the seconds the objective
    gives it: ``trial_share(budget)`` of the ``seconds`` left, or 1/SEARCH_TRIALS of them without a budget:

        SEARCH_EPOCHS * (m + w / 3) + (n_valid + n_test) / 3  <=  trial seconds / row_seconds

    Every row when that allows 90 % of them or more; never fewer than MIN_SEARCH_ROWS. Sized from the
    trial's share, not from 8 trials in the time left: on a short budget the objective gives a trial up to
    a quarter of it, and at 60 s a 36,679-row table was searched on a 16,600-row sample sized for trials of
    6.5 s that were given 15 s; no refit on every row fitted the time left, so the nets it exported had
    seen 45 % of the rows (docs/benchmarks.md, "The search's rows on a short budget").
    """
    if n_train <= MIN_SEARCH_ROWS or row_seconds <= 0:
        return SearchRows(n_train, n_train, n_valid, n_valid)
    watch = min(n_valid, WATCH_ROWS)
    left = max(seconds, 0.0)
    trial_seconds = min(left, trial_share(budget)) if budget else left / SEARCH_TRIALS
    steps = trial_seconds / row_seconds - (n_valid + n_test) / 3
    rows = int(max(MIN_SEARCH_ROWS, steps / SEARCH_EPOCHS - watch / 3))
    if rows >= FULL_SEARCH_SHARE * n_train:
        full_watch = steps / SEARCH_EPOCHS - n_train - n_valid / 3 >= 0
        return SearchRows(n_train, n_train, n_valid if full_watch else watch, n_valid,
                          None if full_watch else _watch_note(watch, n_valid, budget or seconds))
    rows = min(_three_digits(rows), n_train)
    watched = f" (each epoch scored on {watch:,} of the {n_valid:,} validation rows)" if watch < n_valid else ""
    return SearchRows(rows, n_train, watch, n_valid,
                      f"the search trains its nets on {rows:,} of the {n_train:,} training rows{watched} to fit the "
                      f"{budget or seconds:.0f}s budget; the final models train on every row")


def _watch_note(watch: int, n_valid: int, seconds: float) -> str:
    return (f"each epoch of the search scores {watch:,} of the {n_valid:,} validation rows to fit the {seconds:.0f}s "
            "budget; a trial's value is its score on all of them")


def _three_digits(n: int) -> int:
    """``n`` rounded down to three significant digits (69,880 -> 69,800): a sample size reads as one."""
    unit = 10 ** max(0, len(str(n)) - 3)
    return n // unit * unit
