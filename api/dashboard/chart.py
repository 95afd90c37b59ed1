"""The overview's throughput chart as inline SVG, drawn on the server: no chart library, no
JavaScript, and it works offline. Stacked bars per bucket: succeeded below, failed on top."""

from __future__ import annotations

from datetime import UTC, datetime

from markupsafe import Markup, escape

from shared.store.base import Throughput

WIDTH = 960
HEIGHT = 160
TICKS = 6  # time labels: the start, five in between, the end


def _clock(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M")


def throughput_svg(data: Throughput) -> Markup:
    """Bars in an SVG that stretches to any width; the labels are HTML below it, so they stay
    readable on a phone instead of shrinking with the drawing."""
    buckets = data.buckets
    top = max(data.peak, 1)
    bar_w = WIDTH / max(len(buckets), 1)
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" preserveAspectRatio="none" '
        f'role="img" aria-labelledby="chart-title">',
        f'<title id="chart-title">Tasks finished per {_unit(data)}: {data.succeeded} '
        f"succeeded, {data.failed} failed; at most {data.peak} in one {_unit(data)}</title>",
        f'<line class="axis" x1="0" y1="{HEIGHT}" x2="{WIDTH}" y2="{HEIGHT}"/>',
    ]
    for i, b in enumerate(buckets):
        if not b.succeeded + b.failed:
            continue
        x = i * bar_w
        ok_h = HEIGHT * b.succeeded / top
        bad_h = HEIGHT * b.failed / top
        width = max(bar_w - 0.5, 0.5)
        tip = escape(f"{_clock(b.start)} UTC: {b.succeeded} succeeded, {b.failed} failed")
        parts.append(f"<g><title>{tip}</title>")
        if b.succeeded:
            parts.append(f'<rect class="ok" x="{x:.2f}" y="{HEIGHT - ok_h:.2f}" '
                         f'width="{width:.2f}" height="{ok_h:.2f}"/>')
        if b.failed:
            parts.append(f'<rect class="bad" x="{x:.2f}" y="{HEIGHT - ok_h - bad_h:.2f}" '
                         f'width="{width:.2f}" height="{bad_h:.2f}"/>')
        parts.append("</g>")
    parts.append("</svg>")
    if buckets:
        parts.append('<div class="chart-axis" aria-hidden="true">')
        for t in range(TICKS + 1):
            i = round(t * (len(buckets) - 1) / TICKS)
            parts.append(f"<span>{_clock(buckets[i].start)}</span>")
        parts.append("</div>")
    # Numbers we formatted and tooltips escaped above: nothing in here came unescaped.
    return Markup("".join(parts))  # noqa: S704


def _unit(data: Throughput) -> str:
    return "minute" if data.bucket_seconds == 60 else f"{data.bucket_seconds // 60} minutes"
