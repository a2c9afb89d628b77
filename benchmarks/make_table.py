"""A synthetic table with a known signal, at any size, written in chunks (issue 13: large tables).

    .venv/bin/python benchmarks/make_table.py --rows 1000000 --columns 100 --task binary --seed 0 --out /tmp/big.parquet
    .venv/bin/python benchmarks/make_table.py --rows 10000 --columns 20 --task regression --out /tmp/small.csv

The file is Parquet (``.parquet``/``.pq``) or CSV (``.csv``), written ``--chunk-rows`` rows at a time
(pyarrow's ``ParquetWriter``, or CSV appends), so 1,000,000 x 100 needs about one chunk of memory
(~100 MB), not the whole table. Every chunk draws from its own seeded stream, so the same seed gives
the same table whatever the chunk size is.

Columns (``--columns C`` in all besides the target ``y``; C >= 3):

- ``cat``: a categorical column (text) with ``LEVELS`` = 10,000 levels ``L00000``..``L09999`` (fewer when
  the table has fewer rows than that: as many as the rows allow), Zipf-like frequencies (level r is drawn
  with weight 1 / (r + 10)); one level in ten carries an effect ``e_r ~ 0.8 N(0, 1)``, the others 0;
  2 % of the cells are missing (effect 0);
- ``date``: a day from 2015-01-01 over 8 years (Parquet: a timestamp; CSV: ``YYYY-MM-DD``), whose month
  carries ``0.5 sin(2 pi month / 12)``;
- ``x000``..: C - 2 numbers, each from its own standard normal z_j, shown at one of five scales by
  j mod 5: ``z`` (plain), ``1000 z + 5000`` (large), ``10 exp(z)`` (right-skewed), ``round(20 + 5 z)``
  (integers), ``0.001 z`` with 0.1 % of cells times 1000 (tiny, with outliers); the columns with
  j mod 7 == 3 have 10 % of their cells missing. Only the first ``INFORMATIVE`` = 8 (``x000``..``x007``)
  carry signal, the rest are noise:

      f = z0 - 0.8 z1 + 0.6 z2 z3 + 0.7 sin(2 z4) + 0.5 (|z5| - 0.8) + 0.5 [z6 > 0.5] - 0.25 z7^2
          + e_cat + 0.5 sin(2 pi month / 12)

  (the latent z of a missing cell still counts: the missing value hides signal).
- ``y``: binary ``1`` with probability sigmoid(f - 0.5), else ``0``; regression ``3 + 2 f + N(0, 1)``.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

LEVELS = 10_000
INFORMATIVE = 8
SIGNAL_LEVEL_EVERY = 10  # one level in ten carries an effect
CAT_MISSING, NUM_MISSING = 0.02, 0.10
DATE_START, DATE_DAYS = np.datetime64("2015-01-01"), 8 * 365
CHUNK_ROWS = 100_000
TASKS = ("binary", "regression")


@dataclass(frozen=True)
class TableInfo:
    """What was written: enough for a test or a benchmark to check the file without reading it whole."""

    path: Path
    rows: int
    columns: list[str]  # the feature columns, in order (the target ``y`` comes last in the file)
    levels: int  # levels the ``cat`` column draws from
    task: str
    seconds: float


def numeric_names(columns: int) -> list[str]:
    return [f"x{j:03d}" for j in range(columns - 2)]


def level_names(levels: int) -> np.ndarray:
    return np.array([f"L{r:05d}" for r in range(levels)], dtype=object)


def n_levels(rows: int) -> int:
    """10,000 levels, or as many as a small table allows (each level could appear about twice)."""
    return max(2, min(LEVELS, rows // 2))


def level_effects(levels: int, seed: int) -> np.ndarray:
    """The known per-level effect of ``cat``: one level in ten has 0.8 N(0, 1), the others 0."""
    rng = np.random.default_rng([seed, 1])
    effect = 0.8 * rng.normal(size=levels)
    effect[np.arange(levels) % SIGNAL_LEVEL_EVERY != 0] = 0.0
    return effect


def level_weights(levels: int) -> np.ndarray:
    """Zipf-like: a few levels are frequent, most are rare (how real many-level columns look)."""
    w = 1.0 / (np.arange(levels) + 10.0)
    return w / w.sum()


def signal(z: np.ndarray, cat_effect: np.ndarray, month: np.ndarray) -> np.ndarray:
    """The module docstring's f from the latent normals (rows, >= INFORMATIVE), the level effects and months."""
    z = np.pad(z, ((0, 0), (0, max(0, INFORMATIVE - z.shape[1]))))  # fewer columns: the missing terms are 0
    f = (z[:, 0] - 0.8 * z[:, 1] + 0.6 * z[:, 2] * z[:, 3] + 0.7 * np.sin(2 * z[:, 4])
         + 0.5 * (np.abs(z[:, 5]) - 0.8) + 0.5 * (z[:, 6] > 0.5) - 0.25 * z[:, 7] ** 2)
    return f + cat_effect + 0.5 * np.sin(2 * np.pi * month / 12)


def shown(j: int, z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Column j's values from its latent z, at the scale j mod 5 gives it (module docstring)."""
    kind = j % 5
    if kind == 0:
        return z
    if kind == 1:
        return 1000.0 * z + 5000.0
    if kind == 2:
        return 10.0 * np.exp(z)
    if kind == 3:
        return np.round(20.0 + 5.0 * z)
    x = 0.001 * z
    outliers = rng.random(len(z)) < 0.001
    x[outliers] *= 1000.0
    return x


def make_chunk(start: int, rows: int, *, columns: int, task: str, seed: int, levels: int,
               effects: np.ndarray, csv: bool) -> pd.DataFrame:
    """Rows ``start .. start + rows`` of the table, from their own seeded stream (chunk-size independent)."""
    parts = []
    for block in range(start // CHUNK_ROWS, -(-(start + rows) // CHUNK_ROWS)):  # the fixed blocks it touches
        lo, hi = max(start, block * CHUNK_ROWS), min(start + rows, (block + 1) * CHUNK_ROWS)
        frame = _block(block, columns=columns, task=task, seed=seed, levels=levels, effects=effects, csv=csv)
        parts.append(frame.iloc[lo - block * CHUNK_ROWS: hi - block * CHUNK_ROWS])
    return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0].reset_index(drop=True)


def _block(block: int, *, columns: int, task: str, seed: int, levels: int, effects: np.ndarray,
           csv: bool) -> pd.DataFrame:
    """One fixed block of CHUNK_ROWS rows, seeded by (seed, block)."""
    rng = np.random.default_rng([seed, 2, block])
    n = CHUNK_ROWS
    names = numeric_names(columns)
    z = rng.standard_normal((n, len(names)))
    code = rng.choice(levels, size=n, p=level_weights(levels))
    cat_missing = rng.random(n) < CAT_MISSING
    days = rng.integers(0, DATE_DAYS, size=n)
    dates = DATE_START + days.astype("timedelta64[D]")
    month = dates.astype("datetime64[M]").astype(np.int64) % 12 + 1
    f = signal(z, np.where(cat_missing, 0.0, effects[code]), month)
    data: dict[str, object] = {}
    for j, name in enumerate(names):
        x = shown(j, z[:, j].copy(), rng)
        if j % 7 == 3:
            x[rng.random(n) < NUM_MISSING] = np.nan
        data[name] = x
    cat = level_names(levels)[code]
    cat[cat_missing] = None
    data["cat"] = cat
    data["date"] = pd.Series(dates).dt.strftime("%Y-%m-%d") if csv else dates.astype("datetime64[ms]")
    if task == "binary":
        data["y"] = (rng.random(n) < 1.0 / (1.0 + np.exp(-(f - 0.5)))).astype(np.int64)
    else:
        data["y"] = 3.0 + 2.0 * f + rng.standard_normal(n)
    order = ["cat", "date", *names, "y"]  # the categorical and the date first: easy to spot
    return pd.DataFrame({k: data[k] for k in order})


def make_table(out: Path, *, rows: int, columns: int = 100, task: str = "binary", seed: int = 0,
               chunk_rows: int = CHUNK_ROWS) -> TableInfo:
    """Write the table to ``out`` (.parquet/.pq or .csv), ``chunk_rows`` rows at a time."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    if columns < 3 or rows < 10:
        raise ValueError(f"need at least 3 columns and 10 rows, got {columns=} {rows=}")
    out = Path(out)
    csv = out.suffix.lower() == ".csv"
    if not csv and out.suffix.lower() not in (".parquet", ".pq"):
        raise ValueError(f"write .parquet, .pq or .csv, got {out.name!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    levels = n_levels(rows)
    effects = level_effects(levels, seed)
    tmp = out.with_name(f".{out.name}.tmp")
    writer = None
    try:
        for start in range(0, rows, chunk_rows):
            chunk = make_chunk(start, min(chunk_rows, rows - start), columns=columns, task=task, seed=seed,
                               levels=levels, effects=effects, csv=csv)
            writer = _write(chunk, tmp, writer, csv=csv, first=start == 0)
        if writer is not None:
            writer.close()
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    features = ["cat", "date", *numeric_names(columns)]
    return TableInfo(path=out, rows=rows, columns=features, levels=levels, task=task,
                     seconds=time.perf_counter() - started)


def _write(chunk: pd.DataFrame, path: Path, writer: object, *, csv: bool, first: bool) -> object:
    """Append one chunk: CSV text, or a Parquet row group (the writer is opened on the first chunk)."""
    if csv:
        chunk.to_csv(path, mode="w" if first else "a", header=first, index=False, float_format="%.7g")
        return None
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(chunk, preserve_index=False)
    if writer is None:
        writer = pq.ParquetWriter(path, table.schema, compression="snappy")
    writer.write_table(table)
    return writer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--columns", type=int, default=100, help="feature columns besides the target (>= 3)")
    parser.add_argument("--task", choices=TASKS, default="binary")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk-rows", type=int, default=CHUNK_ROWS)
    parser.add_argument("--out", type=Path, required=True, help=".parquet / .pq (default format) or .csv")
    args = parser.parse_args(argv)
    info = make_table(args.out, rows=args.rows, columns=args.columns, task=args.task, seed=args.seed,
                      chunk_rows=args.chunk_rows)
    size = info.path.stat().st_size / 2**20
    print(f"wrote {info.path}: {info.rows:,} rows x {len(info.columns)} columns + y ({info.task}), "
          f"{info.levels:,} levels in 'cat', {size:,.1f} MB, {info.seconds:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
