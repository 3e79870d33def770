"""Small inline-SVG charts for the packet (no plotting library, no network, legible when printed).

Each function returns a complete `<svg>` element with a viewBox, so the same markup scales in the
browser and in WeasyPrint's PDF. Labels and titles are XML-escaped: rule ids, collection names and
user names come from the ledger and are not trusted markup.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape

from markupsafe import Markup

FONT = "DejaVu Sans, Helvetica, Arial, sans-serif"
INK = "#1f2328"
MUTED = "#57606a"
GRID = "#d0d7de"

# Colour per decision; kept apart in hue and lightness so they read in greyscale print too.
DECISION_COLOURS = {"allow": "#2e7d32", "deny": "#c62828", "hold": "#ef9a00", "error": "#546e7a"}
ACCENT = "#1f5fa8"


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    colour: str
    values: Sequence[float]


def _esc(text: object) -> str:
    return escape(str(text), {'"': "&quot;"})


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def fmt_number(v: float) -> str:
    if v >= 1_000_000:
        return f"{v / 1_000_000:.1f}M".replace(".0M", "M")
    if v >= 10_000:
        return f"{v / 1000:.0f}k"
    if v >= 1000:
        return f"{v / 1000:.1f}k".replace(".0k", "k")
    return f"{v:g}" if v != int(v) else str(int(v))


def nice_ticks(top: float, count: int = 4) -> list[float]:
    """0 and a few round steps (1, 2, 5 x 10^n) covering `top`."""
    if top <= 0:
        return [0.0, 1.0]
    raw = top / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    n = math.ceil(top / step)
    return [i * step for i in range(n + 1)]


def _svg(width: int, height: int, title: str, body: list[str]) -> Markup:
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{_esc(title)}" '
        f'font-family="{FONT}" font-size="12" fill="{INK}">'
        f"<title>{_esc(title)}</title>"
    )
    return Markup(head + "".join(body) + "</svg>")  # noqa: S704 - every inserted text is escaped above


def _empty(width: int, height: int, title: str, message: str) -> Markup:
    return _svg(width, height, title, [
        f'<text x="12" y="20" font-size="14" font-weight="bold">{_esc(title)}</text>',
        f'<rect x="12" y="34" width="{width - 24}" height="{height - 46}" fill="#f6f8fa" stroke="{GRID}"/>',
        f'<text x="{width / 2}" y="{height / 2 + 10}" text-anchor="middle" fill="{MUTED}">{_esc(message)}</text>',
    ])


def _legend(series: Sequence[Series], x: float, y: float) -> list[str]:
    out: list[str] = []
    for s in series:
        out.append(f'<rect x="{x:.1f}" y="{y - 10}" width="12" height="12" fill="{s.colour}"/>')
        out.append(f'<text x="{x + 16:.1f}" y="{y}">{_esc(s.name)}</text>')
        x += 30 + 7.5 * len(s.name)
    return out


def stacked_columns(
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    y_label: str = "requests",
    width: int = 760,
    height: int = 280,
    empty_message: str = "No requests in this period",
) -> Markup:
    """Vertical stacked columns, one per label (time bucket or histogram bin)."""
    totals = [sum(s.values[i] for s in series) for i in range(len(labels))]
    if not labels or not any(totals):
        return _empty(width, height, title, empty_message)
    left, right, top, bottom = 62, 12, 50, 56
    plot_w, plot_h = width - left - right, height - top - bottom
    ticks = nice_ticks(max(totals))
    y_max = ticks[-1]
    body = [f'<text x="12" y="20" font-size="14" font-weight="bold">{_esc(title)}</text>']
    body += _legend(series, left, 40)
    for t in ticks:
        y = top + plot_h - plot_h * t / y_max
        body.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" stroke="{GRID}"/>')
        body.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="{MUTED}">{fmt_number(t)}</text>')
    body.append(
        f'<text transform="translate(14 {top + plot_h / 2:.1f}) rotate(-90)" text-anchor="middle" '
        f'fill="{MUTED}">{_esc(y_label)}</text>'
    )
    n = len(labels)
    slot = plot_w / n
    bar_w = max(slot * 0.8, 0.8)
    for i in range(n):
        x = left + i * slot + (slot - bar_w) / 2
        base = float(top + plot_h)
        for s in series:
            v = s.values[i]
            if v <= 0:
                continue
            h = plot_h * v / y_max
            base -= h
            body.append(
                f'<rect x="{x:.2f}" y="{base:.2f}" width="{bar_w:.2f}" height="{h:.2f}" fill="{s.colour}">'
                f"<title>{_esc(labels[i])} {_esc(s.name)}: {v:g}</title></rect>"
            )
    # At most ~10 x labels, evenly spaced, so dates never overlap.
    every = max(1, math.ceil(n / 10))
    for i in range(0, n, every):
        x = left + i * slot + slot / 2
        body.append(
            f'<text x="{x:.1f}" y="{top + plot_h + 16}" text-anchor="middle" fill="{MUTED}" '
            f'font-size="11">{_esc(_short(labels[i], 14))}</text>'
        )
    body.append(
        f'<line x1="{left}" y1="{top + plot_h}" x2="{width - right}" y2="{top + plot_h}" stroke="{MUTED}"/>'
    )
    return _svg(width, height, title, body)


def horizontal_bars(
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    width: int = 760,
    empty_message: str = "Nothing to show in this period",
    label_chars: int = 30,
) -> Markup:
    """Horizontal stacked bars, one row per label, largest first as given; total printed at the end."""
    row_h = 22
    top = 50 if len(series) > 1 else 34
    height = top + row_h * max(len(labels), 1) + 26
    totals = [sum(s.values[i] for s in series) for i in range(len(labels))]
    if not labels or not any(totals):
        return _empty(width, 140, title, empty_message)
    left = 12.0 + 7 * label_chars
    right = 70
    plot_w = width - left - right
    ticks = nice_ticks(max(totals))
    x_max = ticks[-1]
    body = [f'<text x="12" y="20" font-size="14" font-weight="bold">{_esc(title)}</text>']
    if len(series) > 1:
        body += _legend(series, left, 40)
    plot_bottom = top + row_h * len(labels)
    for t in ticks:
        x = left + plot_w * t / x_max
        body.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{plot_bottom}" stroke="{GRID}"/>')
        body.append(
            f'<text x="{x:.1f}" y="{plot_bottom + 16}" text-anchor="middle" fill="{MUTED}" '
            f'font-size="11">{fmt_number(t)}</text>'
        )
    for i, label in enumerate(labels):
        y = top + i * row_h
        body.append(
            f'<text x="{left - 8}" y="{y + 15}" text-anchor="end">{_esc(_short(str(label), label_chars))}</text>'
        )
        x = float(left)
        for s in series:
            v = s.values[i]
            if v <= 0:
                continue
            w = plot_w * v / x_max
            body.append(
                f'<rect x="{x:.2f}" y="{y + 4}" width="{w:.2f}" height="{row_h - 8}" fill="{s.colour}">'
                f"<title>{_esc(label)} {_esc(s.name)}: {v:g}</title></rect>"
            )
            x += w
        body.append(f'<text x="{x + 6:.1f}" y="{y + 15}" fill="{MUTED}">{fmt_number(totals[i])}</text>')
    return _svg(width, height, title, body)


def data_flow(backends: Sequence[str], collections: int, width: int = 760, height: int = 190) -> Markup:
    """Clients -> gateway chain -> backend, with the audit ledger below the gateway."""
    title = "Data flow"
    stages = ("identity", "classify", "policy", "approvals", "credentials", "masking", "audit")
    body = [
        f'<text x="12" y="20" font-size="14" font-weight="bold">{title}</text>',
        '<defs><marker id="arr" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        f'orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="{MUTED}"/></marker></defs>',
        f'<rect x="12" y="48" width="120" height="64" rx="6" fill="#eef3f9" stroke="{ACCENT}"/>',
        '<text x="72" y="76" text-anchor="middle">Clients</text>',
        f'<text x="72" y="94" text-anchor="middle" fill="{MUTED}" font-size="11">SDKs, agents</text>',
        f'<rect x="172" y="36" width="416" height="88" rx="6" fill="#f6f8fa" stroke="{INK}"/>',
        '<text x="380" y="56" text-anchor="middle" font-weight="bold">phigate gateway (OIDC, TLS)</text>',
    ]
    x = 180.0
    for stage in stages:
        w = 56.0
        body.append(f'<rect x="{x:.0f}" y="68" width="{w - 4:.0f}" height="44" rx="4" fill="#ffffff" stroke="{GRID}"/>')
        body.append(f'<text x="{x + (w - 4) / 2:.0f}" y="94" text-anchor="middle" font-size="9">{stage}</text>')
        x += w + 2
    backend_text = ", ".join(backends) if backends else "none seen"
    body += [
        f'<rect x="628" y="48" width="120" height="64" rx="6" fill="#eef3f9" stroke="{ACCENT}"/>',
        f'<text x="688" y="76" text-anchor="middle">{_esc(_short(backend_text, 16))}</text>',
        f'<text x="688" y="94" text-anchor="middle" fill="{MUTED}" font-size="11">{collections} collection'
        f'{"" if collections == 1 else "s"}</text>',
        f'<line x1="132" y1="80" x2="170" y2="80" stroke="{MUTED}" stroke-width="2" marker-end="url(#arr)"/>',
        f'<line x1="588" y1="80" x2="626" y2="80" stroke="{MUTED}" stroke-width="2" marker-end="url(#arr)"/>',
        f'<line x1="380" y1="124" x2="380" y2="150" stroke="{MUTED}" stroke-width="2" marker-end="url(#arr)"/>',
        '<rect x="300" y="152" width="160" height="30" rx="4" fill="#fff8e1" stroke="#ef9a00"/>',
        '<text x="380" y="172" text-anchor="middle">audit ledger (DuckDB)</text>',
    ]
    return _svg(width, height, title, body)
