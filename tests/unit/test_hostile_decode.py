"""Every file of the hostile corpus through decode_image: the right answer, bounded memory.

The corpus (tests/hostile/corpus.py) holds bombs in every format, 16-bit, palette, CMYK,
animated, truncated and polyglot files and EXIF oddities. Each must give its expected outcome
under the search-upload caps and the catalog caps. Memory is measured in a fresh process per
profile (tests/hostile/measure.py resets the kernel's peak-RSS mark before each file): what
one file adds at its peak must stay within what decode_image reserved from its budget (plus
the file's own bytes), and a refused file costs next to nothing. Times are printed by the
measuring script, never asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from hostile.corpus import SPECS, UPLOAD, Case, build_corpus
from lookalike.core.errors import LookalikeError
from lookalike.core.images import DecodeBudget, decode_image

MEASURE = Path(__file__).resolve().parents[1] / "hostile" / "measure.py"
MIB = 2**20
# What a refused file may add: its bytes read twice (the read, then bytes()) and parser state.
REFUSAL_SLACK = 16 * MIB
# Pages the allocator keeps or rounds up beyond the reservation.
RESERVATION_SLACK = 16 * MIB
# The most one search upload may add at its peak (Limits.max_upload_decode_bytes + slack).
UPLOAD_PEAK_BOUND = UPLOAD["max_decoded_bytes"] + RESERVATION_SLACK


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Case]:
    return {case.name: case for case in build_corpus(tmp_path_factory.mktemp("hostile"))}


def _outcome(data: bytes, **kwargs: object) -> tuple[str, Image.Image | LookalikeError]:
    try:
        img = decode_image(data, budget=DecodeBudget(2**30), **kwargs)  # type: ignore[arg-type]
    except LookalikeError as exc:
        return str(exc.status), exc
    return "ok", img


def test_the_corpus_is_large_and_covers_every_outcome() -> None:
    assert len(SPECS) >= 50
    assert len({s.name for s in SPECS}) == len(SPECS)
    assert {s.expect for s in SPECS} == {"ok", "413", "415", "422"}
    suffixes = {s.suffix for s in SPECS}
    assert {".jpg", ".png", ".webp", ".gif", ".bmp", ".tif"} <= suffixes


def test_the_corpus_is_deterministic(tmp_path: Path, corpus: dict[str, Case]) -> None:
    again = {case.name: case for case in build_corpus(tmp_path)}
    for name, case in corpus.items():
        assert again[name].path.read_bytes() == case.path.read_bytes(), name


@pytest.mark.parametrize("name", [s.name for s in SPECS])
def test_upload_gives_the_expected_answer(corpus: dict[str, Case], name: str) -> None:
    case = corpus[name]
    got, result = _outcome(case.path.read_bytes(), **UPLOAD)
    detail = result.message if isinstance(result, LookalikeError) else result.size
    assert got == case.expect, f"{name}: {detail}"
    if isinstance(result, LookalikeError):
        body = result.to_dict()["error"]
        assert body["code"] and len(body["message"]) > 10
    else:
        assert result.mode == "RGB"
        assert 0 < result.width * result.height <= UPLOAD["max_decoded_pixels"]


@pytest.mark.parametrize("name", [s.name for s in SPECS if s.catalog_expect != s.expect])
def test_catalog_caps_admit_large_real_images(corpus: dict[str, Case], name: str) -> None:
    case = corpus[name]
    got, result = _outcome(case.path.read_bytes())
    assert got == case.catalog, f"{name}: {result}"
    if isinstance(result, Image.Image):
        assert result.mode == "RGB"


def test_oversize_messages_name_the_cap(corpus: dict[str, Case]) -> None:
    _, err = _outcome(corpus["png_gray16_8900"].path.read_bytes(), **UPLOAD)
    assert isinstance(err, LookalikeError) and err.status == 413
    assert "8900×8900" in err.message and "24 megapixels" in err.message
    _, err = _outcome(corpus["jpeg_declared_8900_progressive"].path.read_bytes(), **UPLOAD)
    assert isinstance(err, LookalikeError) and "400 MiB" in err.message


def _measure(folder: Path, profile: str, *names: str) -> dict[str, dict[str, object]]:
    proc = subprocess.run(
        [sys.executable, "-W", "ignore", str(MEASURE), str(folder), profile, *names],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return {str(row["name"]): row for row in rows}


@pytest.mark.parametrize("profile", ["upload", "catalog"])
def test_peak_memory_per_file_stays_within_its_reservation(
    corpus: dict[str, Case], profile: str
) -> None:
    folder = next(iter(corpus.values())).path.parent
    rows = _measure(folder, profile)
    assert set(rows) == set(corpus)
    print(f"\n{'case':34s} {'outcome':>7s} {'peak MiB':>9s} {'reserved':>9s} {'seconds':>8s}")
    for name, row in rows.items():
        case = corpus[name]
        growth, reserved = int(row["growth_bytes"]), int(row["reserved_bytes"])  # type: ignore[call-overload]
        print(
            f"{name:34s} {row['outcome']!s:>7s} {growth / MIB:9.1f} {reserved / MIB:9.1f} "
            f"{row['seconds']!s:>8s}"
        )
        expected = case.expect if profile == "upload" else case.catalog
        assert row["outcome"] == expected, name
        file_cost = 3 * int(row["file_bytes"])  # type: ignore[call-overload]
        assert growth <= reserved + file_cost + RESERVATION_SLACK, (name, growth, reserved)
        if expected in ("413", "415"):
            assert reserved == 0, name  # refused before anything was reserved
            assert growth <= file_cost + REFUSAL_SLACK, (name, growth)
        if profile == "upload":
            assert growth <= UPLOAD_PEAK_BOUND, (name, growth)


def test_the_reported_bomb_costs_an_upload_nothing(corpus: dict[str, Case]) -> None:
    # 150 KB, 8900×8900 16-bit: used to take 11-25 s and 3 GB; now refused from its header.
    rows = _measure(corpus["png_gray16_8900"].path.parent, "upload", "png_gray16_8900")
    row = rows["png_gray16_8900"]
    assert row["outcome"] == "413"
    assert int(row["growth_bytes"]) < 8 * MIB  # type: ignore[call-overload]
