"""Decode every corpus file in this process and report the peak memory each one added.

Run as a script (``python tests/hostile/measure.py CORPUS_DIR upload|catalog``), in a fresh
process, so that one bomb's memory is not hidden by another test's. Before each case the
kernel's peak-RSS mark is reset (``/proc/self/clear_refs``, value 5), so ``VmHWM - VmRSS``
after the decode is what that one decode cost at its worst moment. Prints one JSON object per
case: name, outcome ("ok" or the HTTP status), peak growth, the bytes our budget reserved, the
file size and the output size.
"""

from __future__ import annotations

import gc
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hostile.corpus import UPLOAD, build_corpus  # noqa: E402
from lookalike.core.errors import LookalikeError  # noqa: E402
from lookalike.core.images import DecodeBudget, decode_image  # noqa: E402

PROFILES: dict[str, dict[str, int]] = {"upload": UPLOAD, "catalog": {}}


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} missing from /proc/self/status")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def measure(folder: Path, profile: str, names: set[str] | None = None) -> list[dict[str, object]]:
    kwargs = PROFILES[profile]
    budget = DecodeBudget(2**30)
    rows = []
    for case in build_corpus(folder):
        if names and case.name not in names:
            continue
        data = case.path.read_bytes()
        gc.collect()
        _reset_peak()
        before = _status_kib("VmRSS")
        budget.reset_peak()
        started = time.perf_counter()
        size: list[int] | None = None
        try:
            img = decode_image(data, budget=budget, **kwargs)
            outcome, size = "ok", list(img.size)
            del img
        except LookalikeError as exc:
            outcome = str(exc.status)
        seconds = time.perf_counter() - started
        peak = _status_kib("VmHWM")
        rows.append(
            {
                "name": case.name,
                "outcome": outcome,
                "growth_bytes": max(0, peak - before) * 1024,
                "reserved_bytes": budget.peak,
                "file_bytes": len(data),
                "size": size,
                "seconds": round(seconds, 4),
            }
        )
        del data
    return rows


def main(argv: list[str]) -> int:
    folder, profile, *names = argv
    for row in measure(Path(folder), profile, set(names) or None):
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
