"""Free-text detection on the labelled synthetic corpus: recall and precision per identifier type,
and throughput.

    .phigate/venv/bin/python -m tests.bench.bench_detect [notes] [seed]

The corpus (tests/support/phi_corpus.py) is generated with Faker from a fixed seed; tests assert the
targets (tests/unit/test_detect.py) on the same seed. Other seeds show how stable the figures are.
"""

from __future__ import annotations

import sys
import time

from addons.phi.detect.detector import Detector
from addons.phi.detect.names import lexicon
from tests.support.phi_corpus import TYPES, corpus, score

TARGETS = {t: 0.98 for t in ("PHONE", "EMAIL", "SSN", "MRN", "DATE", "IP", "URL")} | {"NAME": 0.90, "ADDRESS": 0.90}


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 600
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 1234
    notes = corpus(count, seed=seed)
    chars = sum(len(n.text) for n in notes)
    lexicon()
    detector = Detector()
    t = time.process_time()
    found = {n.text: [(s.start, s.end, s.type) for s in detector.find(n.text)] for n in notes}
    cold = time.process_time() - t
    t = time.process_time()
    for n in notes:
        detector.find(n.text)
    warm = time.process_time() - t
    sc = score(notes, found.__getitem__)
    print(f"{len(notes)} notes, {chars / 1000:.0f} kB, seed {seed}")
    print(f"{'type':12} {'gold':>5} {'recall':>7} {'precision':>9}  target")
    for typ in TYPES:
        gold = sc.tp.get(typ, 0) + sc.fn.get(typ, 0)
        target = TARGETS.get(typ)
        mark = "" if target is None else f"recall >= {target:.2f}, precision >= 0.85"
        print(f"{typ:12} {gold:5} {sc.recall(typ):7.3f} {sc.precision(typ):9.3f}  {mark}")
    print(f"detection CPU: cold {cold * 1000 / (chars / 1000):.3f} ms per kB "
          f"({chars / 1e6 / cold:.2f} MB/s); warm (seen before) {warm * 1000 / (chars / 1000):.4f} ms per kB")


if __name__ == "__main__":
    main()
