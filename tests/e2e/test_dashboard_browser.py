"""End-to-end: headless Chromium renders optuna-dashboard's page for a real study (`make e2e`, not CI).

Needs Debian's `chromium` (apt-get install chromium chromium-driver); skips without it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.test_reliability import _command

pytestmark = pytest.mark.e2e


def test_dashboard_page_renders_the_study_in_chromium(tmp_path: Path, short_space: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no chromium installed (apt-get install chromium chromium-driver)")
    out = tmp_path / "e2e-run"
    subprocess.run(_command(out, short_space, 2), check=True, capture_output=True, timeout=300)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "automl_dnn", "dashboard", str(out), "--port", str(port)])
    url = f"http://127.0.0.1:{port}/dashboard/"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                time.sleep(0.2)
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=15000", "--dump-dom"]
        dom = subprocess.run([browser, *flags, url], capture_output=True, text=True, timeout=120).stdout
        assert "e2e-run" in dom, "the rendered page lists the study"
    finally:
        server.terminate()
        server.wait(timeout=10)
