"""Render a packet: Jinja templates to one self-contained HTML file (inline CSS and SVG, no network),
and the same templates in print form to a PDF with WeasyPrint.

The PDF shows fewer rows per table than the HTML (WeasyPrint lays out ~200 table rows a second on
this machine); every table says how many rows it has and names the data file that holds all of them.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from reports.model import Packet, Table

TEMPLATES = Path(__file__).parent / "templates"
MAX_CELL = 240


def cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, list | tuple):
        return ", ".join(cell(v) for v in value)
    text = str(value)
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,  # every ledger value is untrusted text (user names, rule ids, details)
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["cell"] = cell
    return env


_ENV = _environment()


def render_html(packet: Packet, medium: str, row_limit: int) -> str:
    """medium: "screen" (the HTML file) or "print" (the PDF's source)."""
    def rows(t: Table) -> Table:
        return t.limited(row_limit)

    css = (TEMPLATES / "packet.css").read_text(encoding="utf-8")
    return _ENV.get_template("packet.html.j2").render(
        p=packet, medium=medium, limit=rows, css=Markup(css),  # noqa: S704 - our own stylesheet file
    )


def write_html(packet: Packet, path: Path, row_limit: int) -> Path:
    path.write_text(render_html(packet, "screen", row_limit), encoding="utf-8")
    return path


def write_pdf(packet: Packet, path: Path, row_limit: int) -> Path:
    import weasyprint  # imported here: only the PDF step needs it, and it is slow to import

    html = render_html(packet, "print", row_limit)
    # No base URL and no URL fetcher: the document is self-contained and must not reach the network.
    weasyprint.HTML(string=html, url_fetcher=_no_fetch).write_pdf(str(path))
    return path


def _no_fetch(url: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    raise ValueError(f"the packet may not load external resources ({url[:60]})")
