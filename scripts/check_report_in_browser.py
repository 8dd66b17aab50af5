#!/usr/bin/env python3
"""Open a kdrun-report `report.html` in headless Chromium and check that it really renders.

    python scripts/check_report_in_browser.py outputs/report/report.html [--expect TEXT ...]

Checks, offline (the page must need nothing from the network):
- a screenshot of the page is not blank (its pixels vary);
- the DOM after rendering holds every --expect text (e.g. a table cell);
- every <img> decoded (its natural width is > 0), found with a copy of the page that carries a
  small probe script; the report itself has no scripts.

Prints a JSON summary; exit code 0 if all checks pass, 1 if one fails, 2 if Chromium is missing.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser")
# No network, no first-run UI, no background services: the page is judged on what it holds.
HEADLESS_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-extensions", "--hide-scrollbars", "--mute-audio"]
PROBE = """<script>
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var decoded = images.filter(function (image) { return image.complete && image.naturalWidth > 0; });
  document.body.setAttribute("data-images-total", images.length);
  document.body.setAttribute("data-images-decoded", decoded.length);
});
</script>"""


def find_chromium() -> str | None:
    for candidate in CHROMIUM_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def _run(chromium: str, profile: Path, arguments: list[str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([chromium, *HEADLESS_FLAGS, f"--user-data-dir={profile}", *arguments],
                          capture_output=True, text=True, timeout=timeout)


def screenshot(chromium: str, page: Path, png: Path, work: Path, size: str = "1280,2000",
               timeout: float = 120) -> None:
    result = _run(chromium, work / "profile-screenshot",
                  [f"--screenshot={png}", f"--window-size={size}", page.resolve().as_uri()], timeout)
    if not png.is_file():
        raise RuntimeError(f"chromium wrote no screenshot (exit {result.returncode}): {result.stderr[-2000:]}")


def dump_dom(chromium: str, page: Path, work: Path, timeout: float = 120) -> str:
    # The virtual time budget lets the load event (and the probe) run before the DOM is dumped.
    result = _run(chromium, work / "profile-dom",
                  ["--dump-dom", "--virtual-time-budget=5000", page.resolve().as_uri()], timeout)
    if result.returncode != 0 or "<html" not in result.stdout:
        raise RuntimeError(f"chromium --dump-dom failed (exit {result.returncode}): {result.stderr[-2000:]}")
    return result.stdout


def pixel_spread(png: Path) -> dict:
    """Standard deviation of the grey levels and the share of pixels that are not background."""
    import numpy as np
    from matplotlib.image import imread

    pixels = imread(png)[..., :3].astype(float)
    grey = pixels.mean(axis=2)
    background = np.median(grey)
    return {"std": float(grey.std()), "non_background": float(np.mean(np.abs(grey - background) > 0.05)),
            "height": int(grey.shape[0]), "width": int(grey.shape[1])}


def check(report: Path, expect: list[str], screenshot_path: Path | None = None,
          window_size: str = "1280,2000") -> dict:
    chromium = find_chromium()
    if chromium is None:
        return {"ok": False, "error": "chromium not found (looked for " + ", ".join(CHROMIUM_CANDIDATES) + ")",
                "chromium_missing": True}
    report = Path(report)
    source = report.read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory(prefix="kdrun-report-check-") as scratch:
        work = Path(scratch)
        png = Path(screenshot_path) if screenshot_path else work / "screenshot.png"
        png.parent.mkdir(parents=True, exist_ok=True)
        screenshot(chromium, report, png, work, window_size)
        pixels = pixel_spread(png)
        probe_page = work / "probe.html"
        probe_page.write_text(source.replace("</body>", PROBE + "\n</body>", 1), encoding="utf-8")
        dom = dump_dom(chromium, probe_page, work)

    text = html.unescape(re.sub(r"<[^>]+>", " ", dom))
    missing = [item for item in expect if item not in text]
    total = re.search(r'data-images-total="(\d+)"', dom)
    decoded = re.search(r'data-images-decoded="(\d+)"', dom)
    images = {"total": int(total.group(1)) if total else None,
              "decoded": int(decoded.group(1)) if decoded else None}
    external = sorted(set(re.findall(r"""(?:src|href)\s*=\s*["']?(https?:[^"'\s>]+)""", source)))
    problems = []
    if pixels["std"] < 0.02 or pixels["non_background"] < 0.01:
        problems.append(f"the screenshot looks blank (grey std {pixels['std']:.4f}, "
                        f"{pixels['non_background']:.2%} non-background pixels)")
    if missing:
        problems.append(f"text not in the rendered page: {missing}")
    if images["total"] is None or images["decoded"] != images["total"]:
        problems.append(f"images decoded: {images['decoded']} of {images['total']}")
    if external:
        problems.append(f"the page references the network: {external[:5]}")
    return {"ok": not problems, "problems": problems, "screenshot": str(png) if screenshot_path else None,
            "pixels": pixels, "images": images, "expected_text_found": len(expect) - len(missing)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path, help="the report.html to open")
    parser.add_argument("--expect", action="append", default=[], metavar="TEXT",
                        help="text that must be in the rendered page (repeatable)")
    parser.add_argument("--screenshot", type=Path, help="keep the screenshot here (PNG)")
    parser.add_argument("--window-size", default="1280,2000", help="WIDTH,HEIGHT of the screenshot")
    args = parser.parse_args(argv)
    if not args.report.is_file():
        print(f"check_report_in_browser: no such file {args.report}", file=sys.stderr)
        return 1
    summary = check(args.report, args.expect, args.screenshot, args.window_size)
    print(json.dumps(summary, indent=2))
    if summary.get("chromium_missing"):
        return 2
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
