"""The ``attn2d explore`` page against its targets: size and time to interactive.

Trains ``--specs`` briefly (the small CNN on Fashion-MNIST; the maps' size does not depend
on training, their look does), writes the page for ``--images`` test images with
:func:`attn2d.viz.explore`, then opens it ``--repeats`` times in Debian's headless Chromium
(the tests' browser, ``tests/browser.py``) and reports:

- the page's size (target ≤ 8 MB for 4 models × 16 images) and each model's share;
- time to interactive: from navigation start to the end of the page's first render, with
  every handler attached (``attn2dExplore.readyMs``; target ≤ 2 s);
- the time one hover (a new query pixel: every position panel redrawn) and one arrow key
  (a new image: every panel redrawn) take in the page's script, median over real mouse
  moves and key presses.

    PYTHONPATH=src python benchmarks/explore_page.py            # ~1 minute on 2 cores
    PYTHONPATH=src python benchmarks/explore_page.py --screenshot docs/gallery/explore.png
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the tests' browser helper

from attn2d.training import TrainConfig, train  # noqa: E402
from attn2d.viz import explore  # noqa: E402
from tests.browser import browser_problem, chromium  # noqa: E402

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


def train_runs(args: argparse.Namespace, out: Path) -> list[Path]:
    runs = []
    for spec in args.specs.split(","):
        run_dir = out / spec
        started = time.perf_counter()
        train(TrainConfig(attention=spec, dataset="fashion-mnist", data_dir=args.data_dir,
                          subset=args.subset, test_subset=1000, epochs=args.epochs,
                          batch_size=64, progress=False, out=str(run_dir)))
        print(f"trained {spec}: {time.perf_counter() - started:.1f} s", flush=True)
        runs.append(run_dir)
    return runs


def model_shares(page: Path) -> dict[str, float]:
    text = page.read_text(encoding="utf-8")
    start = text.index("id='attn2d-data'>") + len("id='attn2d-data'>")
    data = json.loads(text[start:text.index("</script>", start)])
    return {m["name"]: len(json.dumps(m)) / 1e6 for m in data["models"]}


def in_browser(args: argparse.Namespace, page: Path, profile: Path) -> dict[str, list[float]]:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    found: dict[str, list[float]] = {"ready": [], "hover": [], "arrow": []}
    with chromium(profile, width=1400, height=1100) as browser:
        for _ in range(args.repeats):
            browser.open(page, ready="window.attn2dExplore && window.attn2dExplore.ready")
            found["ready"].append(browser.run("return attn2dExplore.readyMs"))
            errors = browser.console_errors() + browser.resources()
            if errors:
                raise RuntimeError(f"explore_page: the page logged errors or loaded: {errors}")
        stage = browser.driver.find_element(By.CSS_SELECTOR, "section.panel .stage")
        size = stage.rect["width"]
        for step in range(20):  # real mouse moves across the first panel's diagonal
            offset = round((step + 0.5) * size / 20 - size / 2)
            ActionChains(browser.driver).move_to_element_with_offset(stage, offset,
                                                                     offset).perform()
            found["hover"].append(browser.run("return attn2dExplore.lastRenderMs"))
        for step in range(10):
            ActionChains(browser.driver).send_keys(
                Keys.ARROW_RIGHT if step < 5 else Keys.ARROW_LEFT).perform()
            found["arrow"].append(browser.run("return attn2dExplore.lastRenderMs"))
        if args.screenshot:
            screenshot(browser, args)
    return found


def screenshot(browser, args: argparse.Namespace) -> None:
    """Image ``--shot-image`` with a query pixel pinned in the first position panel."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    browser.open(args.page, ready="window.attn2dExplore && window.attn2dExplore.ready")
    browser.run(f"attn2dExplore.go({args.shot_image});")
    panels = browser.driver.find_elements(By.CSS_SELECTOR, "section.panel")
    query = next((p for p in panels if "position" in p.find_element(
        By.CSS_SELECTOR, "select.layer").get_attribute("textContent")), panels[0])
    stage = query.find_element(By.CSS_SELECTOR, ".stage")
    ActionChains(browser.driver).move_to_element_with_offset(
        stage, -stage.rect["width"] // 6, -stage.rect["height"] // 5).click().perform()
    print(f"screenshot: {browser.screenshot(Path(args.screenshot))}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--specs", default="se,cbam,nonlocal,rcca")
    parser.add_argument("--data-dir", default=FASHION_MNIST if Path(FASHION_MNIST).is_dir()
                        else None)
    parser.add_argument("--subset", type=int, default=3000, help="training images per model")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5, help="page loads timed")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--screenshot", default=None, metavar="PNG")
    parser.add_argument("--shot-image", type=int, default=7, help="the screenshot's image")
    parser.add_argument("--out", default=None, help="folder for the runs and the page "
                                                    "(default: a temporary one)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        runs = train_runs(args, out)
        started = time.perf_counter()
        args.page = explore(runs, out / "explore.html", images=args.images)
        build = time.perf_counter() - started
        mb = args.page.stat().st_size / 1e6
        models = len(runs)
        print(f"\npage: {models} models × {args.images} images, {mb:.2f} MB "
              f"(target ≤ 8 MB for 4 × 16), written in {build:.1f} s")
        for name, share in model_shares(args.page).items():
            print(f"  {name}: {share:.2f} MB")
        problem = browser_problem()
        if problem:
            print(f"no browser timings: {problem}")
            return 0
        found = in_browser(args, args.page, out / "chromium")
    load = os.getloadavg()[0]
    print(f"\nheadless Chromium, {os.cpu_count()} CPUs, load average {load:.1f} at the end:")
    print(f"  time to interactive: median {statistics.median(found['ready']):.0f} ms, max "
          f"{max(found['ready']):.0f} ms over {args.repeats} loads (target ≤ 2000 ms)")
    for key, what in (("hover", "one hover (new query pixel)"),
                      ("arrow", "one arrow key (new image)")):
        print(f"  {what}: median {statistics.median(found[key]):.1f} ms, max "
              f"{max(found[key]):.1f} ms over {len(found[key])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
