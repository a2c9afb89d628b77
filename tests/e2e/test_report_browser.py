"""End-to-end: headless Chromium renders the report page (`make e2e`, not CI), and its screenshot is saved.

Every figure must render (plotly draws one ``svg-container`` per figure), the console must show no error,
and the screenshot goes to docs/img/report.png, which README.md shows. Skips without Debian's `chromium`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from automl_dnn import api

pytestmark = pytest.mark.e2e

SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "img" / "report.png"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--allow-file-access-from-files",
         "--virtual-time-budget=20000"]


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no chromium installed (apt-get install chromium chromium-driver)")
    return subprocess.run([browser, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args], capture_output=True,
                          text=True, timeout=180)


def test_report_page_renders_every_figure_in_chromium(tmp_path: Path) -> None:
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        pytest.skip("no chromium installed (apt-get install chromium chromium-driver)")
    api.fit("builtin:breast_cancer", model_dir=tmp_path / "model", out=tmp_path / "run", space="quick", n_trials=6,
            pruner="none", gbt_trials=5, threads=1, folds=1, cv_folds=1, quiet=True, progress=False)
    page = api.write_report(tmp_path / "run")
    figures = page.read_text(encoding="utf-8").count("Plotly.newPlot")
    run = _chromium(tmp_path, "--enable-logging=stderr", "--v=0", "--dump-dom", page.as_uri())
    rendered = re.findall(r'class="[^"]*\bsvg-container\b[^"]*"', run.stdout)
    assert len(rendered) == figures == run.stdout.count('class="plotly-graph-div'), "every figure renders as SVG"
    assert "<canvas" not in run.stdout, "no WebGL canvas"
    console = [line for line in run.stderr.splitlines() if "CONSOLE" in line]
    errors = [line for line in console if re.search(r"error|uncaught", line, flags=re.I)]
    assert not errors, errors
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    _chromium(tmp_path, "--window-size=1300,2600", "--hide-scrollbars", f"--screenshot={SCREENSHOT}", page.as_uri())
    assert SCREENSHOT.is_file() and SCREENSHOT.stat().st_size > 10_000
