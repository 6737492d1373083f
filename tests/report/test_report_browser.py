"""index.html in a real browser: headless Chromium opens it from disk and every plot loads.

Needs Debian's `chromium` (`apt-get install -y chromium`); skipped with a reason where it is missing.
A small script, added to a copy of the page, counts the images that finished loading with a
non-zero natural width and writes the count into the DOM, which `--dump-dom` prints.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from scalingdown.report.stage import run_report_stage
from tests.report.test_report import SETTINGS, build_fake_run

CHROMIUM = Path("/usr/bin/chromium")
PROBE = """<script>
window.addEventListener('load', function () {
  var images = Array.prototype.slice.call(document.images);
  var loaded = images.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  var out = document.createElement('pre');
  out.id = 'probe';
  out.textContent = 'images-loaded ' + loaded + ' of ' + images.length;
  document.body.appendChild(out);
});
</script>"""

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"{CHROMIUM} not installed (apt-get install -y chromium)"
    ),
]


def loaded_images(page: Path, profile: Path) -> tuple[int, int]:
    """(images loaded, images on the page) as headless Chromium sees `page`."""
    probe = page.with_name(page.stem + ".probe.html")
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        probe.as_uri(),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    found = re.search(r"images-loaded (\d+) of (\d+)", result.stdout)
    assert found, f"no probe output from chromium (exit {result.returncode}): {result.stderr[-2000:]}"
    return int(found.group(1)), int(found.group(2))


def test_every_plot_loads_in_headless_chromium(tmp_path: Path) -> None:
    index = run_report_stage(build_fake_run(tmp_path / "run"), settings=SETTINGS)
    plots = len(list((index.parent / "plots").glob("*.png")))
    assert plots == 5
    assert loaded_images(index, tmp_path / "profile") == (plots, plots)


def test_the_probe_sees_a_broken_image(tmp_path: Path) -> None:
    # The check above could pass vacuously if the probe counted every image as loaded.
    page = tmp_path / "broken.html"
    page.write_text(
        '<!DOCTYPE html><html><body><img src="data:image/png;base64,AAAA" alt="broken"></body></html>',
        encoding="utf-8",
    )
    assert loaded_images(page, tmp_path / "profile") == (0, 1)
