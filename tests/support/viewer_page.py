"""The OHIF viewer in a headless browser: what tests read from its page."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from playwright.sync_api import Browser, Page, Response

from support import wait

# Canvas statistics in the page: grey levels of the rendered viewport (a 2D canvas that
# cornerstone draws its WebGL output into).
CANVAS_STATS = """
canvas => {
  const ctx = canvas.getContext('2d', {willReadFrequently: true});
  const {width, height} = canvas;
  const data = ctx.getImageData(0, 0, width, height).data;
  let dark = 0, bright = 0, mid = 0, sum = 0, sum2 = 0;
  const levels = new Set();
  const n = width * height;
  for (let i = 0; i < data.length; i += 4) {
    const v = (data[i] + data[i + 1] + data[i + 2]) / 3;
    sum += v; sum2 += v * v; levels.add(Math.round(v));
    if (v <= 10) dark++; else if (v >= 200) bright++; else if (v >= 90 && v <= 160) mid++;
  }
  const mean = sum / n;
  return {width, height, mean, std: Math.sqrt(Math.max(0, sum2 / n - mean * mean)),
          levels: levels.size, dark: dark / n, bright: bright / n, mid: mid / n};
}
"""


@contextlib.contextmanager
def viewer_page(browser: Browser, base: str) -> Iterator[tuple[Page, list[str]]]:
    """A new page sized for the viewer, and the list it fills with every 4xx or 5xx answer
    from ``base`` (the archive under test); closed after the block."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    server_errors: list[str] = []

    def on_response(response: Response) -> None:
        if response.url.startswith(base) and response.status >= 400:
            server_errors.append(f"{response.status} {response.url}")

    page.on("response", on_response)
    try:
        yield page, server_errors
    finally:
        context.close()


def wait_for_image(page: Page, timeout: float = 90.0) -> dict[str, Any]:
    """Poll the viewport canvas until it shows a non-uniform image; its statistics."""
    canvas = page.locator("canvas.cornerstone-canvas").first
    canvas.wait_for(state="visible", timeout=timeout * 1000)

    def image_stats() -> dict[str, Any] | None:
        stats: dict[str, Any] = canvas.evaluate(CANVAS_STATS)
        return stats if stats["std"] > 20 and stats["levels"] > 16 else None

    return wait.until(
        image_stats,
        timeout=timeout,
        what="the viewport to show a non-uniform image",
        interval=0.2,
        context=lambda: f"canvas statistics: {canvas.evaluate(CANVAS_STATS)}",
    )
