"""Small SVG charts for the status page: drawn here, so the page needs no script and no network.

Each function returns one ``<svg>`` element as text, sized by its ``viewBox`` and scaled to the
page's width by CSS. Bars carry a ``<title>``, which a browser shows as a tooltip: the exact
figure behind each bar.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

WIDTH = 760  # the viewBox's width; the page scales it
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 12, 12, 46  # room for the axes' labels
_ROW = 22  # height of one bar in a horizontal chart


@dataclass(frozen=True)
class Series:
    """One stacked part of each bar: its name, colour, and a value per bar."""

    name: str
    colour: str
    values: list[float]


def stacked_columns(labels: list[str], series: list[Series], unit: str, height: int = 220) -> str:
    """Vertical bars, one per label, each the sum of the series stacked bottom to top."""
    totals = [sum(s.values[i] for s in series) for i in range(len(labels))]
    top = _nice_ceiling(max(totals, default=0))
    plot_w = WIDTH - _LEFT - _RIGHT
    plot_h = height - _TOP - _BOTTOM
    slot = plot_w / max(len(labels), 1)
    bar = max(min(slot * 0.7, 48), 1)
    parts = [_axis(top, unit, plot_h)]
    for i, label in enumerate(labels):
        x = _LEFT + i * slot + (slot - bar) / 2
        base = 0.0
        for s in series:
            value = s.values[i]
            if value <= 0:
                continue
            y0 = _TOP + plot_h * (1 - (base + value) / top)
            h = plot_h * value / top
            parts.append(
                f'<rect class="bar" x="{x:.1f}" y="{y0:.1f}" width="{bar:.1f}" '
                f'height="{max(h, 0.5):.1f}" fill="{s.colour}">'
                f"<title>{escape(label)}: {_figure(value)} {escape(s.name)}</title></rect>"
            )
            base += value
        if _show_label(i, len(labels)):
            cx = x + bar / 2
            parts.append(
                f'<text x="{cx:.1f}" y="{height - _BOTTOM + 14}" text-anchor="middle" '
                f'class="tick">{escape(label)}</text>'
            )
    parts.append(_legend(series, height - 14))
    return _svg(height, "".join(parts))


def horizontal_bars(rows: list[tuple[str, float, str]], colour: str) -> str:
    """One bar per ``(label, value, text)`` row, in the order given; the text (the value as a
    person reads it) follows the bar."""
    height = _TOP + _ROW * max(len(rows), 1) + 8
    label_w = 230
    plot_w = WIDTH - label_w - 250
    top = max((value for _, value, _ in rows), default=0) or 1
    parts = []
    for i, (label, value, text) in enumerate(rows):
        y = _TOP + i * _ROW
        w = max(plot_w * value / top, 1)
        short = label if len(label) <= 36 else label[:35] + "…"
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end" class="tick">'
            f"{escape(short)}</text>"
            f'<rect class="bar" x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{_ROW - 6}" '
            f'fill="{colour}"><title>{escape(label)}: {escape(text)}</title></rect>'
            f'<text x="{label_w + w + 6:.1f}" y="{y + 15}" class="tick">{escape(text)}</text>'
        )
    return _svg(height, "".join(parts))


def size(count: float) -> str:
    """Bytes as a person reads them: 512 B, 17.2 KB, 3.4 MB, 1.2 GB."""
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:,.0f} {unit}" if unit == "B" else f"{count:,.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


def _svg(height: int, body: str) -> str:
    return (
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" '
        f'xmlns="http://www.w3.org/2000/svg">{body}</svg>'
    )


def _axis(top: float, unit: str, plot_h: int) -> str:
    lines = []
    for step in range(5):
        value = top * step / 4
        y = _TOP + plot_h * (1 - step / 4)
        lines.append(
            f'<line x1="{_LEFT}" x2="{WIDTH - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">'
            f"{_figure(value)}</text>"
        )
    lines.append(
        f'<text x="12" y="{_TOP + plot_h / 2:.1f}" class="tick" '
        f'transform="rotate(-90 12 {_TOP + plot_h / 2:.1f})" text-anchor="middle">'
        f"{escape(unit)}</text>"
    )
    return "".join(lines)


def _legend(series: list[Series], y: int) -> str:
    items, x = [], _LEFT
    for s in series:
        items.append(
            f'<rect x="{x}" y="{y - 9}" width="10" height="10" fill="{s.colour}"/>'
            f'<text x="{x + 14}" y="{y}" class="tick">{escape(s.name)}</text>'
        )
        x += 24 + 7 * len(s.name)
    return "".join(items)


def _show_label(i: int, count: int) -> bool:
    """Every label where they fit, else about eight spread evenly, the newest always."""
    every = max(1, round(count / 8))
    return count <= 12 or i % every == 0 or i == count - 1


def _nice_ceiling(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten at or above value (1 for an empty chart)."""
    if value <= 0:
        return 1.0
    scale = 10 ** (len(str(int(value))) - 1) if value >= 1 else 1.0
    for step in (1, 2, 5, 10):
        if value <= step * scale:
            return float(step * scale)
    return float(10 * scale)


def _figure(value: float) -> str:
    if value == int(value):
        return f"{int(value):,}"
    return f"{value:,.1f}" if value >= 10 else f"{value:.2g}"
