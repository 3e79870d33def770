"""Write a complete packet folder: data files, statement (hash + signature), HTML, PDF, manifest.

    OUT/data/*.csv, *.json       every table's full data, packet.json (figures), controls.csv
    OUT/statement.json(.sig)     the packet SHA-256 is sha256(statement.json); signed with Ed25519
    OUT/packet.html              self-contained (inline CSS and SVG)
    OUT/packet.pdf               WeasyPrint; long tables summarised, full data in data/
    OUT/manifest.json(.sig)      hashes of every file above, signed
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from addons.core import progress
from reports import build, manifest, render


@dataclass(slots=True)
class Written:
    folder: Path
    html: Path
    pdf: Path | None
    manifest: Path
    packet_sha256: str
    signed: bool
    timings: dict[str, float] = field(default_factory=dict)


def write_packet(
    opts: build.BuildOptions, key: Ed25519PrivateKey | None, html_rows: int = 500, pdf_rows: int = 60,
    pdf: bool = True,
) -> Written:
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    progress.phase("reading the ledger")
    packet = build.build(opts)
    t["queries"] = time.perf_counter() - t0
    out = opts.out
    data_files = sorted((out / "data").iterdir())
    seal = manifest.seal_statement(
        out, data_files,
        {
            "period": {"from": packet.period_start.isoformat() + "Z", "to": packet.period_end.isoformat() + "Z"},
            "generated_at": packet.generated_at.isoformat() + "Z",
            "software_version": packet.software_version,
            "ledger": packet.ledger,
        },
        key,
    )
    packet.packet_sha256, packet.signature = seal.packet_sha256, seal.signature
    packet.key_id, packet.public_key = seal.key_id, seal.public_key
    t1 = time.perf_counter()
    progress.phase("writing the HTML")
    html = render.write_html(packet, out / "packet.html", html_rows)
    t["html"] = time.perf_counter() - t1
    renderings = [html]
    pdf_path = None
    if pdf:
        t2 = time.perf_counter()
        progress.phase("writing the PDF")
        pdf_path = render.write_pdf(packet, out / "packet.pdf", pdf_rows)
        t["pdf"] = time.perf_counter() - t2
        renderings.append(pdf_path)
    man = manifest.seal_manifest(out, seal, renderings, key)
    t["total"] = time.perf_counter() - t0
    return Written(out, html, pdf_path, man, seal.packet_sha256, bool(seal.signature), t)
