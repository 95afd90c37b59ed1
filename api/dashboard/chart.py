"""The overview's throughput chart as inline SVG, drawn on the server: no chart library, and it
works offline. Stacked bars per bucket: succeeded below, failed on top; a y-axis scale with
round numbers; each bar's numbers on hover (SVG titles) and, on a phone, on a tap (dashboard.js
reads the bars' numbers from data-buckets and writes them under the chart)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from markupsafe import Markup, escape

from shared.store.base import Throughput

WIDTH = 960
HEIGHT = 160
TICKS = 6  # time labels: the start, five in between, the end
# A bar that has anything in it is drawn at least this tall and wide (in viewBox units; the
# chart is 160 px tall, and 960 units span ~350 px on a phone): one failure beside a busy
# minute, or a one-minute burst in six hours, must still show.
MIN_BAR_HEIGHT = 3.0
MIN_BAR_WIDTH = 3.0


def _clock(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M")


def nice_top(peak: int) -> int:
    """The y axis's top: the smallest round number at or above the peak whose half is a whole
    number too (the middle line's label): 2, 4, 6, 8, 10, then 20, 30, 40, 50, 60, 80, 100..."""
    scale = 1
    while True:
        steps = (2, 4, 6, 8, 10) if scale == 1 else (2, 3, 4, 5, 6, 8, 10)
        for step in steps:
            if step * scale >= peak:
                return step * scale
        scale *= 10


def throughput_svg(data: Throughput) -> Markup:
    """Bars in an SVG that stretches to any width; the labels (times below, counts on the
    left) are HTML, so they stay readable on a phone instead of shrinking with the drawing."""
    buckets = data.buckets
    top = nice_top(data.peak)
    bar_w = WIDTH / max(len(buckets), 1)
    numbers = [[int(b.start), b.succeeded, b.failed] for b in buckets]
    parts = [
        '<div class="chart-frame">',
        '<div class="chart-y" aria-hidden="true">',
        f"<span>{top:,}</span><span>{top // 2:,}</span><span>0</span></div>",
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" preserveAspectRatio="none" '
        f'role="img" aria-labelledby="chart-title" data-buckets="{escape(json.dumps(numbers))}" '
        f'data-bucket-seconds="{data.bucket_seconds}">',
        f'<title id="chart-title">Tasks finished per {_unit(data)}: {data.succeeded:,} '
        f"succeeded, {data.failed:,} failed; at most {data.peak:,} in one {_unit(data)}</title>",
        f'<line class="grid" x1="0" y1="0.5" x2="{WIDTH}" y2="0.5"/>',
        f'<line class="grid" x1="0" y1="{HEIGHT / 2}" x2="{WIDTH}" y2="{HEIGHT / 2}"/>',
        f'<line class="axis" x1="0" y1="{HEIGHT}" x2="{WIDTH}" y2="{HEIGHT}"/>',
    ]
    for i, b in enumerate(buckets):
        if not b.succeeded + b.failed:
            continue
        width = max(bar_w - 0.5, MIN_BAR_WIDTH)
        x = min(max(i * bar_w + (bar_w - 0.5 - width) / 2, 0), WIDTH - width)
        ok_h = _height(b.succeeded, top)
        bad_h = _height(b.failed, top)
        tip = escape(f"{_clock(b.start)} UTC: {b.succeeded:,} succeeded, {b.failed:,} failed")
        parts.append(f'<g data-i="{i}"><title>{tip}</title>')
        if b.succeeded:
            parts.append(f'<rect class="ok" x="{x:.2f}" y="{HEIGHT - ok_h:.2f}" '
                         f'width="{width:.2f}" height="{ok_h:.2f}"/>')
        if b.failed:
            parts.append(f'<rect class="bad" x="{x:.2f}" y="{HEIGHT - ok_h - bad_h:.2f}" '
                         f'width="{width:.2f}" height="{bad_h:.2f}"/>')
        parts.append("</g>")
    parts.append("</svg>")
    if buckets:
        parts.append('<span></span><div class="chart-axis" aria-hidden="true">')
        for t in range(TICKS + 1):
            i = round(t * (len(buckets) - 1) / TICKS)
            parts.append(f"<span>{_clock(buckets[i].start)}</span>")
        parts.append("</div>")
    parts.append("</div>")
    # Numbers we formatted and text escaped above: nothing in here came unescaped.
    return Markup("".join(parts))  # noqa: S704


def _height(n: int, top: int) -> float:
    if not n:
        return 0.0
    # Stacked, the two parts of a full bar may together pass HEIGHT by a few units at most.
    return min(max(HEIGHT * n / top, MIN_BAR_HEIGHT), HEIGHT)


def _unit(data: Throughput) -> str:
    return "minute" if data.bucket_seconds == 60 else f"{data.bucket_seconds // 60} minutes"
