"""The five annotated i2b2 notes philter-lite ships (data/i2b2_xml): a small check on clinical text
written outside this project. Read from the installed package, never copied into the repository.

i2b2's tags are mapped to this project's types; hospital names are left out (an organisation, not
one of the Safe Harbor identifiers of the individual).
"""

from __future__ import annotations

import importlib.util
import os
import xml.etree.ElementTree as ET

from tests.support.phi_eval import Note

_TYPES = {"DATE": "DATE", "PATIENT": "NAME", "DOCTOR": "NAME", "USERNAME": "NAME", "PHONE": "PHONE",
          "MEDICALRECORD": "MRN", "IDNUM": "OTHER_ID", "AGE": "AGE", "STREET": "ADDRESS", "CITY": "ADDRESS",
          "ZIP": "ZIP", "EMAIL": "EMAIL", "FAX": "FAX"}


def notes() -> list[Note]:
    spec = importlib.util.find_spec("philter_lite")
    if spec is None or not spec.submodule_search_locations:
        return []
    folder = os.path.join(next(iter(spec.submodule_search_locations)), "data", "i2b2_xml")
    out = []
    for name in sorted(os.listdir(folder)):
        root = ET.parse(os.path.join(folder, name)).getroot()
        text = root.findtext("TEXT") or ""
        spans = []
        tags = root.find("TAGS")
        for tag in tags if tags is not None else []:
            typ = _TYPES.get(tag.get("TYPE", ""))
            if typ is not None:
                spans.append((int(tag.get("start", 0)), int(tag.get("end", 0)), typ))
        out.append(Note(name, "i2b2", text, spans))
    return out
