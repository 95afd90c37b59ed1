"""The overview's throughput chart as inline SVG, drawn on the server: no chart library, no
JavaScript, and it works offline. Stacked bars per bucket: succeeded below, failed on top."""

from __future__ import annotations

from datetime import UTC, datetime

from markupsafe import Markup, escape

from shared.dashboard_queries import Throughput

WIDTH = 960
HEIGHT = 180
LEFT = 36  # room for the y-axis labels
BOTTOM = 20  # room for the time labels


def _clock(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M")


def throughput_svg(data: Throughput) -> Markup:
    buckets = data.buckets
    plot_w, plot_h = WIDTH - LEFT, HEIGHT - BOTTOM
    top = max(data.peak, 1)
    bar_w = plot_w / max(len(buckets), 1)
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="chart-title">',
        f'<title id="chart-title">Tasks finished per {_unit(data)}: {data.succeeded} '
        f"succeeded, {data.failed} failed</title>",
        f'<line class="axis" x1="{LEFT}" y1="{plot_h}" x2="{WIDTH}" y2="{plot_h}"/>',
        f'<text class="label" x="{LEFT - 4}" y="10" text-anchor="end">{top}</text>',
        f'<text class="label" x="{LEFT - 4}" y="{plot_h}" text-anchor="end">0</text>',
    ]
    for i, b in enumerate(buckets):
        total = b.succeeded + b.failed
        if not total:
            continue
        x = LEFT + i * bar_w
        ok_h = plot_h * b.succeeded / top
        bad_h = plot_h * b.failed / top
        tip = escape(f"{_clock(b.start)} UTC: {b.succeeded} succeeded, {b.failed} failed")
        parts.append(f"<g><title>{tip}</title>")
        if b.succeeded:
            parts.append(
                f'<rect class="ok" x="{x:.2f}" y="{plot_h - ok_h:.2f}" '
                f'width="{max(bar_w - 0.5, 0.5):.2f}" height="{ok_h:.2f}"/>'
            )
        if b.failed:
            parts.append(
                f'<rect class="bad" x="{x:.2f}" y="{plot_h - ok_h - bad_h:.2f}" '
                f'width="{max(bar_w - 0.5, 0.5):.2f}" height="{bad_h:.2f}"/>'
            )
        parts.append("</g>")
    # Time labels: the start, a few in between, and the end.
    if buckets:
        ticks = 6
        for t in range(ticks + 1):
            i = min(round(t * (len(buckets) - 1) / ticks), len(buckets) - 1)
            x = LEFT + i * bar_w
            anchor = "start" if t == 0 else "end" if t == ticks else "middle"
            parts.append(
                f'<text class="label" x="{x:.1f}" y="{HEIGHT - 4}" text-anchor="{anchor}">'
                f"{_clock(buckets[i].start)}</text>"
            )
    parts.append("</svg>")
    # Numbers we formatted and tooltips escaped above: nothing in here came unescaped.
    return Markup("".join(parts))  # noqa: S704


def _unit(data: Throughput) -> str:
    return "minute" if data.bucket_seconds == 60 else f"{data.bucket_seconds // 60} minutes"
