"""Server-side SVG charts for the auditor console (no script, no CDN).

The budget chart is a column of small multiples, one row per organisation and dataset, so it
stays readable with many of them: the row's label, a line of its cumulative ε over the
periods with the last value written beside it, and a bar of what it spent against its cap
(the organisation's total on the dataset) or, without a cap, against what its active grants
allow. :func:`budget_rows` gives the same numbers for the table beside the chart.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from html import escape
from typing import Any

WIDTH = 1000
ROW, TOP = 34, 34
LABEL_W, LINE_W, GAP, BAR_W = 250, 300, 70, 150
STRIPES = ("#fff", "#f7f9fb")
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")


def cumulative(points: Iterable[Mapping[str, Any]]) -> tuple[list[str], dict[str, list[float]]]:
    """Periods (sorted) and, per ``organisation / dataset``, cumulative ε at each period."""
    rows = list(points)
    periods = sorted({str(p["period"]) for p in rows})
    spent: dict[str, dict[str, float]] = {}
    for p in rows:
        key = f"{p['organisation']} / {p['dataset']}"
        spent.setdefault(key, {})[str(p["period"])] = float(p["epsilon"])
    series = {}
    for key in sorted(spent):
        total, values = 0.0, []
        for period in periods:
            total += spent[key].get(period, 0.0)
            values.append(total)
        series[key] = values
    return periods, series


def budget_rows(
    points: Iterable[Mapping[str, Any]], caps: Mapping[str, Mapping[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Per ``organisation / dataset``: ε spent in all, in the last period, the cap and what is left.

    ``caps[key]`` may give ``cap`` (the organisation's total, None without one), ``window``
    and ``granted`` (ε of its active grants)."""
    periods, series = cumulative(points)
    rows = []
    for key, values in series.items():
        organisation, dataset = key.split(" / ", 1)
        given = dict((caps or {}).get(key) or {})
        cap = given.get("cap")
        rows.append(
            {
                "key": key,
                "organisation": organisation,
                "dataset": dataset,
                "spent": values[-1],
                "last_period": periods[-1] if periods else "",
                "last": values[-1] - (values[-2] if len(values) > 1 else 0.0),
                "cap": cap,
                "window": given.get("window"),
                "granted": given.get("granted"),
                "left": None if cap is None else max(cap - values[-1], 0.0),
                "share": None if not cap else values[-1] / cap,
            }
        )
    return rows


def budget_chart(
    points: Iterable[Mapping[str, Any]],
    *,
    title: str,
    empty: str,
    caps: Mapping[str, Mapping[str, Any]] | None = None,
    words: Mapping[str, str] | None = None,
) -> str:
    """Small multiples of cumulative ε per organisation and dataset, as an SVG element.

    ``words`` labels the parts (keys ``cap``, ``granted``, ``no_cap``, ``periods``)."""
    points = list(points)
    periods, series = cumulative(points)
    said = {"cap": "cap", "granted": "granted", "no_cap": "no cap", "periods": "", **(words or {})}
    rows = {r["key"]: r for r in budget_rows(points, caps)}
    height = TOP + ROW * max(len(series), 1) + 28
    head = (
        f'<svg id="budget-chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" '
        f'width="{WIDTH}" height="{max(height, 120)}" role="img" aria-label="{escape(title)}">'
    )
    if not series:
        note = f'<text x="{WIDTH / 2}" y="60" text-anchor="middle" fill="#666">{escape(empty)}</text>'
        return f"{head}{note}</svg>"
    x0, bar_x = LABEL_W, LABEL_W + LINE_W + GAP
    span = f"{periods[0]} … {periods[-1]}" if len(periods) > 1 else periods[0]
    parts = [
        head,
        f'<text x="{x0}" y="14" font-size="11" fill="#444">{escape(said["periods"])} {escape(span)}</text>',
        f'<text x="{bar_x}" y="14" font-size="11" fill="#444">ε / {escape(said["cap"])}</text>',
    ]
    for n, (key, values) in enumerate(series.items()):
        colour = COLOURS[n % len(COLOURS)]
        row = rows[key]
        y0 = TOP + ROW * n
        top = max(values) or 1.0
        inner = ROW - 12

        def x(i: int) -> float:
            return x0 + (LINE_W * i / (len(periods) - 1) if len(periods) > 1 else LINE_W / 2)

        def y(value: float, base: float = y0, h: float = inner, peak: float = top) -> float:
            return base + h * (1 - value / peak)

        coords = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values))
        parts.append(
            f'<g class="row" data-series="{escape(key)}">'
            f'<rect x="0" y="{y0 - 4}" width="{WIDTH}" height="{ROW}" fill="{STRIPES[n % 2]}"/>'
            f'<text x="4" y="{y0 + inner / 2 + 4:.1f}" font-size="12">{escape(key[:40])}</text>'
            f'<line x1="{x0}" x2="{x0 + LINE_W}" y1="{y0 + inner}" y2="{y0 + inner}" stroke="#ddd"/>'
            f'<polyline class="series" data-series="{escape(key)}" fill="none" stroke="{colour}" '
            f'stroke-width="2" points="{coords}"/>'
        )
        for i, v in enumerate(values):
            parts.append(
                f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="2.5" fill="{colour}">'
                f"<title>{escape(key)} {escape(periods[i])}: ε {v:g}</title></circle>"
            )
        parts.append(
            f'<text class="value" x="{x0 + LINE_W + 8}" y="{y0 + inner / 2 + 4:.1f}" font-size="12" '
            f'font-weight="bold">{values[-1]:.3g}</text>'
        )
        cap, granted = row["cap"], row["granted"]
        scale = cap or granted or values[-1] or 1.0
        filled = min(values[-1] / scale, 1.0) * BAR_W if scale else 0.0
        over = cap is not None and values[-1] > cap
        parts.append(
            f'<rect x="{bar_x}" y="{y0 + 4}" width="{BAR_W}" height="{inner - 8}" fill="#eee"/>'
            f'<rect class="spent" x="{bar_x}" y="{y0 + 4}" width="{filled:.1f}" height="{inner - 8}" '
            f'fill="{"#b00020" if over else colour}"/>'
        )
        if cap is not None:
            label = f"{values[-1]:.3g} / {cap:g} {said['cap']}"
        elif granted:
            label = f"{values[-1]:.3g} / {granted:g} {said['granted']} ({said['no_cap']})"
        else:
            label = f"{values[-1]:.3g} ({said['no_cap']})"
        parts.append(
            f'<text class="cap" x="{bar_x + BAR_W + 6}" y="{y0 + inner / 2 + 4:.1f}" font-size="11">'
            f"{escape(label)}</text></g>"
        )
    parts.append(
        f'<text x="{WIDTH / 2}" y="{height - 8}" font-size="12" text-anchor="middle">{escape(title)}</text>'
        "</svg>"
    )
    return "".join(parts)
