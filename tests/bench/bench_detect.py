"""Free-text detection on the held-out evaluation corpus: recall and precision per identifier type,
with the targets beside them, and detection cost on never-seen text.

    .phigate/venv/bin/python -m tests.bench.bench_detect [dev|test]

The corpus (tests/fixtures/phi_eval, made by tests/support/phi_eval.py, labelled by the policy in
its README) is split in two: the detector is tuned on dev only; the figures that count are test's.
tests/unit/test_detect_eval.py asserts the same targets on the test split.
"""

from __future__ import annotations

import sys
import time

from addons.phi.detect.detector import Detector
from addons.phi.detect.lexicon import fold
from addons.phi.detect.lexicon import load as load_lexicon
from tests.support import i2b2_sample
from tests.support.phi_eval import TYPES, Note, load, score
from tests.unit.test_detect_eval import TARGET_NAME_RECALL, TARGET_PRECISION, TARGET_RECALL

TARGET_MS_PER_KB = 0.05


def main() -> None:
    split = sys.argv[1] if len(sys.argv) > 1 else "test"
    notes = load(split)
    chars = sum(len(n.text.encode("utf-8")) for n in notes)
    t = time.perf_counter()
    load_lexicon()
    lexicon_s = time.perf_counter() - t
    detector = Detector()
    t = time.process_time()
    found = {n.text: [(s.start, s.end, s.type) for s in detector.find(n.text)] for n in notes}
    cold = time.process_time() - t
    t = time.process_time()
    for n in notes:
        detector.find(n.text)
    warm = time.process_time() - t
    sc = score(notes, found.__getitem__)
    print(f"{split} split: {len(notes)} notes, {chars / 1000:.0f} kB, {sum(sc.gold(t) for t in TYPES)} identifiers")
    print(f"{'type':12} {'gold':>5} {'recall':>7} {'precision':>9}  target")
    for typ in TYPES:
        mark = f"recall >= {TARGET_NAME_RECALL:.2f}" if typ == "NAME" else ""
        print(f"{typ:12} {sc.gold(typ):5} {sc.recall(typ):7.3f} {sc.precision(typ):9.3f}  {mark}")
    print(f"{'all':12} {sum(sc.gold(t) for t in TYPES):5} {sc.recall():7.3f} {sc.precision():9.3f}  "
          f"recall >= {TARGET_RECALL:.2f}, precision >= {TARGET_PRECISION:.2f}")
    # Names no list holds (made up from syllables in the corpus): found by context alone.
    lex = load_lexicon()


    def listed(name: str) -> bool:
        return any(fold(w) in lex.given or fold(w) in lex.surnames for w in name.replace(",", " ").split())

    sub = [Note(n.id, n.kind, n.text, [sp for sp in n.spans if sp[2] == "NAME" and not listed(n.text[sp[0] : sp[1]])])
           for n in notes]
    sc_unlisted = score(sub, found.__getitem__)
    print(f"names on no name list: {sc_unlisted.gold('NAME')}, recall {sc_unlisted.recall('NAME'):.3f}")
    per_kb = cold * 1000 / (chars / 1000)
    print(f"detection CPU, never-seen text: {per_kb:.3f} ms per kB (target <= {TARGET_MS_PER_KB}: "
          f"{per_kb / TARGET_MS_PER_KB:.0f}x over); seen before (memoised): "
          f"{warm * 1000 / (chars / 1000):.4f} ms per kB; name lists loaded in {lexicon_s:.2f} s at start")
    outside = i2b2_sample.notes()
    sc = score(outside, lambda text: [(s.start, s.end, s.type) for s in detector.find(text)])
    print(f"outside check, philter-lite's {len(outside)} annotated i2b2 notes: {sum(sc.gold(t) for t in TYPES)} "
          f"identifiers, recall {sc.recall():.3f}, precision {sc.precision():.3f}; missed: "
          + ", ".join(f"{t} {v!r}" for _, t, v in sc.misses))


if __name__ == "__main__":
    main()
