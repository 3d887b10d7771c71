"""Charts drawn on the server as inline SVG (no JavaScript library): bars for counts and
volumes, a line for rates. Each returns markup with a <title> for screen readers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

WIDTH, HEIGHT, PAD = 640, 200, 30
COLOURS = ("#2563eb", "#16a34a", "#d97706", "#9333ea", "#dc2626")


def _frame(title: str, body: str, testid: str) -> str:
    return (
        f'<svg class="chart" data-testid="{escape(testid)}" role="img" '
        f'viewBox="0 0 {WIDTH} {HEIGHT + 40}" width="{WIDTH}" height="{HEIGHT + 40}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>{body}</svg>'
    )


def bars(
    title: str, labels: Sequence[str], series: Mapping[str, Sequence[float]], testid: str
) -> str:
    """Grouped bars: one group per label, one bar per series."""
    if not labels or not series:
        return _frame(title, '<text x="10" y="20">No data in this period.</text>', testid)
    top = max((max(values, default=0) for values in series.values()), default=0) or 1
    group = (WIDTH - 2 * PAD) / len(labels)
    bar = group * 0.8 / len(series)
    parts = []
    for s, (name, values) in enumerate(series.items()):
        colour = COLOURS[s % len(COLOURS)]
        for i, value in enumerate(values):
            h = (HEIGHT - PAD) * value / top
            x = PAD + i * group + s * bar
            parts.append(
                f'<rect x="{x:.1f}" y="{HEIGHT - h:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                f'fill="{colour}"><title>{escape(name)} {escape(labels[i])}: {value:g}'
                "</title></rect>"
            )
        parts.append(
            f'<text x="{PAD + s * 140}" y="{HEIGHT + 35}" fill="{colour}">{escape(name)}</text>'
        )
    for i, label in enumerate(labels):
        parts.append(
            f'<text x="{PAD + i * group:.1f}" y="{HEIGHT + 15}" font-size="10">'
            f"{escape(label)}</text>"
        )
    parts.append(f'<text x="0" y="12" font-size="10">{top:g}</text>')
    return _frame(title, "".join(parts), testid)


def rate_line(
    title: str, labels: Sequence[str], series: Mapping[str, Sequence[float | None]], testid: str
) -> str:
    """Lines of rates between 0 and 1, one point per label (None: no data that day)."""
    if not labels or not series:
        return _frame(title, '<text x="10" y="20">No data in this period.</text>', testid)
    step = (WIDTH - 2 * PAD) / max(1, len(labels) - 1)
    parts = [
        f'<line x1="{PAD}" y1="{HEIGHT}" x2="{WIDTH - PAD}" y2="{HEIGHT}" stroke="#999"/>',
        f'<text x="0" y="{PAD + 4}" font-size="10">100%</text>',
        f'<text x="0" y="{HEIGHT}" font-size="10">0%</text>',
    ]
    for s, (name, values) in enumerate(series.items()):
        colour = COLOURS[s % len(COLOURS)]
        points = [
            (PAD + i * step, HEIGHT - (HEIGHT - PAD) * value)
            for i, value in enumerate(values)
            if value is not None
        ]
        if points:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            parts.append(
                f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>'
            )
            for (x, y), value in zip(points, [v for v in values if v is not None], strict=True):
                parts.append(
                    f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}">'
                    f"<title>{escape(name)}: {value:.0%}</title></circle>"
                )
        parts.append(
            f'<text x="{PAD + s * 140}" y="{HEIGHT + 35}" fill="{colour}">{escape(name)}</text>'
        )
    for i, label in enumerate(labels):
        parts.append(
            f'<text x="{PAD + i * step:.1f}" y="{HEIGHT + 15}" font-size="10">'
            f"{escape(label)}</text>"
        )
    return _frame(title, "".join(parts), testid)
