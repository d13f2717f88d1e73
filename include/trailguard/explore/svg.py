"""Charts as inline SVG: no script, no external file, no style attribute (the pages' CSP allows none).

Every text that reaches a chart (a principal, an API name, a country) is attacker-controlled and goes
through :func:`markupsafe.escape`; every number is formatted here. Links are built by the caller and
escaped as attributes.
"""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

PALETTE = (
    "#d62728", "#1f77b4", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#2ca02c", "#bcbd22", "#7f7f7f",
    "#393b79", "#637939",
)  # fmt: skip
FONT = 'font-family="sans-serif" font-size="11"'


def _n(value: float) -> str:
    """A coordinate: short, no exponent."""
    return f"{value:.1f}"


def _count(value: float) -> str:
    return f"{int(value):,}"


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    magnitude = 10 ** (len(str(int(value))) - 1)
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude


def stacked_bars(
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float]]],
    *,
    title: str,
    width: int = 760,
    height: int = 300,
) -> Markup:
    """Vertical bars per label (a day), stacked by series (a category), with a legend and an axis."""
    left, right, top, bottom = 56, 170, 24, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    totals = [sum(values[i] for _, values in series) for i in range(len(labels))]
    ymax = _nice_max(max(totals, default=0))
    slot = plot_w / max(len(labels), 1)
    bar = max(2.0, slot * 0.7)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" viewBox="0 0 {width} {height}" '
           f'width="{width}" height="{height}" {FONT}><title>{escape(title)}</title>']  # fmt: skip
    for k in range(5):
        value = ymax * k / 4
        y = top + plot_h - plot_h * k / 4
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{_n(y)}" y2="{_n(y)}" stroke="#ddd"/>'
                   f'<text x="{left - 6}" y="{_n(y + 4)}" text-anchor="end">{_count(value)}</text>')  # fmt: skip
    for i, label in enumerate(labels):
        x = left + slot * i + (slot - bar) / 2
        y = top + plot_h
        for s, (name, values) in enumerate(series):
            h = plot_h * values[i] / ymax
            if h <= 0:
                continue
            y -= h
            out.append(f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(bar)}" height="{_n(h)}" fill="{PALETTE[s % len(PALETTE)]}">'
                       f"<title>{escape(label)} {escape(name)}: {_count(values[i])}</title></rect>")  # fmt: skip
        if len(labels) <= 16 or i % max(1, len(labels) // 10) == 0:
            out.append(
                f'<text x="{_n(x + bar / 2)}" y="{top + plot_h + 14}" text-anchor="middle">{escape(label[5:])}</text>'
            )
    for s, (name, _) in enumerate(series):
        y = top + 14 * s
        out.append(f'<rect x="{left + plot_w + 12}" y="{y}" width="10" height="10" fill="{PALETTE[s % len(PALETTE)]}"/>'
                   f'<text x="{left + plot_w + 26}" y="{y + 9}">{escape(name)}</text>')  # fmt: skip
    out.append("</svg>")
    return Markup("".join(out))


def hbars(
    rows: Sequence[tuple[str, float]], *, title: str, width: int = 520, bar_color: str = "#1f77b4"
) -> Markup:
    """Horizontal bars with their label and count (top APIs, top errors, sign-ins by country)."""
    label_w, count_w, row_h = 240, 70, 18
    height = max(row_h * len(rows) + 8, 24)
    vmax = max((v for _, v in rows), default=0) or 1
    plot_w = width - label_w - count_w
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" viewBox="0 0 {width} {height}" '
           f'width="{width}" height="{height}" {FONT}><title>{escape(title)}</title>']  # fmt: skip
    for i, (label, value) in enumerate(rows):
        y = 4 + row_h * i
        text = label if len(label) <= 38 else label[:37] + "…"
        w = max(1.0, plot_w * value / vmax)
        out.append(f'<text x="{label_w - 6}" y="{y + 12}" text-anchor="end"><title>{escape(label)}</title>{escape(text)}</text>'
                   f'<rect x="{label_w}" y="{y + 2}" width="{_n(w)}" height="{row_h - 5}" fill="{bar_color}"/>'
                   f'<text x="{_n(label_w + w + 4)}" y="{y + 12}">{_count(value)}</text>')  # fmt: skip
    out.append("</svg>")
    return Markup("".join(out))


def scatter(
    points: Sequence[dict], *, title: str, x_label: str, y_label: str, width: int = 760, height: int = 480
) -> Markup:
    """The PCA map: one dot per principal; outliers red, labelled and linked (``point["href"]``)."""
    left, right, top, bottom = 50, 20, 20, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    xs = [p["pc1"] for p in points] or [0.0]
    ys = [p["pc2"] for p in points] or [0.0]
    x0, x1 = min(xs) - 0.5, max(xs) + 0.5
    y0, y1 = min(ys) - 0.5, max(ys) + 0.5

    def px(x: float) -> float:
        return left + plot_w * (x - x0) / (x1 - x0)

    def py(y: float) -> float:
        return top + plot_h - plot_h * (y - y0) / (y1 - y0)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" viewBox="0 0 {width} {height}" '
           f'width="{width}" height="{height}" {FONT}><title>{escape(title)}</title>',
           f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#ccc"/>']  # fmt: skip
    if x0 < 0 < x1:
        out.append(f'<line x1="{_n(px(0))}" x2="{_n(px(0))}" y1="{top}" y2="{top + plot_h}" stroke="#eee"/>')
    if y0 < 0 < y1:
        out.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{_n(py(0))}" y2="{_n(py(0))}" stroke="#eee"/>'
        )
    out.append(f'<text x="{left + plot_w / 2}" y="{height - 8}" text-anchor="middle">{escape(x_label)}</text>'
               f'<text x="14" y="{top + plot_h / 2}" text-anchor="middle" transform="rotate(-90 14 {top + plot_h / 2})">'
               f"{escape(y_label)}</text>")  # fmt: skip
    for p in sorted(points, key=lambda p: p["outlier"]):
        cx, cy = _n(px(p["pc1"])), _n(py(p["pc2"]))
        tip = f"<title>{escape(p['principal'])}: {_count(p['events'])} events, distance {p['distance']:.2f}</title>"
        if p["outlier"]:
            right = px(p["pc1"]) > left + plot_w * 0.6  # labels on the right half go left of their dot
            label_x = px(p["pc1"]) + (-7 if right else 7)
            anchor = "end" if right else "start"
            dot = (f'<circle cx="{cx}" cy="{cy}" r="5" fill="#d62728">{tip}</circle>'
                   f'<text x="{_n(label_x)}" y="{_n(py(p["pc2"]) + 4)}" text-anchor="{anchor}" fill="#a00">'
                   f'{escape(p["label"])}</text>')  # fmt: skip
            out.append(f'<a href="{escape(p["href"])}" class="outlier">{dot}</a>' if p.get("href") else dot)
        else:
            out.append(
                f'<circle cx="{cx}" cy="{cy}" r="3.5" fill="#1f77b4" fill-opacity="0.6">{tip}</circle>'
            )
    out.append("</svg>")
    return Markup("".join(out))
