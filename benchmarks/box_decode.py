"""A box drawn round a small garment in a larger photo: decoded whole at 224 px, or the box at 224?

``POST /v1/search`` decodes a JPEG upload with a draft (a reduced DCT scale) that keeps the
*whole photo* at about 224 px, right for embedding it whole. A box round a sixth of a 1024 px
upload then reaches the model as a 40 px crop to upsample; the route now decodes with
:func:`~lookalike.core.images.draft_for_box`, which keeps the box's area at ≥ 224 px.

Held-out shopper photos of a garment alone (../shared/data/clothing, the photos not in the demo
catalog whose label is a demo category) are pasted at a random place into a larger plain photo
(``--side`` px wide, 4:3; the garment ``--side``/6.25 px), saved as JPEG, and searched by a box
round the garment both ways, against the home's served search. Right = the top result's category
is the photo's label; also the share of the top 5 of that kind, and the time of decode + search
(median and p95 over the photos). Prints a table and writes JSON.

    python benchmarks/box_decode.py --home H [--limit 200] [--side 1024] [--json OUT]
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import time
from pathlib import Path

import numpy as np
from harness import machine, stats, write
from PIL import Image

from lookalike.core.images import DEFAULT_DRAFT_SIZE, decode_image, draft_for_box
from lookalike.core.settings import Settings
from lookalike.serve.state import load_state

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "demo" / "catalog"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", type=Path, required=True, help="a LOOKALIKE_HOME that serves search")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "clothing")
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--side", type=int, default=1024, help="width of the larger photo")
    ap.add_argument("--json", type=Path, default=ROOT / "artifacts" / "box_decode.json")
    args = ap.parse_args()

    with open(DEMO / "items.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    kind_of = {r["item_id"]: r["category"] for r in rows}
    demo_files = {Path(r["image"]).name for r in rows}
    with open(args.data / "labels.csv", encoding="utf-8") as f:
        photos = [
            r
            for r in csv.DictReader(f)
            if r["label"] in set(kind_of.values()) and r["file"] not in demo_files
        ][1::5][: args.limit]
    state = load_state(Settings(home=args.home))
    search = state.search
    if search is None:
        raise SystemExit(f"{args.home} serves no search: {'; '.join(state.problems)}")
    load_before = os.getloadavg()
    width, height = args.side, args.side * 3 // 4
    garment = round(args.side / 6.25)
    rng = np.random.default_rng(0)
    ways = {"whole photo at 224 px (before)": None, "the box at 224 px (served)": "box"}
    out: dict[str, dict[str, list[float]]] = {w: {"first": [], "top5": [], "ms": []} for w in ways}
    decoded: dict[str, tuple[int, int]] = {}
    for r in photos:
        canvas = Image.new("RGB", (width, height), (235, 235, 230))
        with Image.open(args.data / "images" / r["file"]) as im:
            small = im.convert("RGB")
            small.thumbnail((garment, garment))
        x = int(rng.integers(0, width - small.width))
        y = int(rng.integers(0, height - small.height))
        canvas.paste(small, (x, y))
        buf = io.BytesIO()
        canvas.save(buf, "JPEG", quality=90)
        data = buf.getvalue()
        box = (x / width, y / height, (x + small.width) / width, (y + small.height) / height)
        for way, how in ways.items():
            started = time.perf_counter()
            draft = draft_for_box(box) if how == "box" else DEFAULT_DRAFT_SIZE
            image = decode_image(data, draft_size=draft)
            result = search.service.search_image(image, k=5, box=box, phases=search)
            out[way]["ms"].append((time.perf_counter() - started) * 1000)
            kinds = [kind_of.get(h.item.item_id, h.item.category) for h in result.hits]
            out[way]["first"].append(float(kinds[:1] == [r["label"]]))
            out[way]["top5"].append(float(np.mean([k == r["label"] for k in kinds])))
            decoded[way] = image.size

    report = {
        "machine": machine(load_before),
        "photos": len(photos),
        "upload": [width, height],
        "garment_px": garment,
        "ways": {
            way: {
                "right_first": round(float(np.mean(v["first"])), 3),
                "top5_share": round(float(np.mean(v["top5"])), 3),
                "decoded": list(decoded[way]),
                **stats(v["ms"]),
            }
            for way, v in out.items()
        },
    }
    print(f"{len(photos)} garments of {garment} px in a {width}×{height} JPEG, searched by a box:")
    head = ("decode", "right first", "top-5 share", "decoded", "ms p50/p95")
    print(f"{head[0]:34} {head[1]:>11} {head[2]:>11} {head[3]:>10} {head[4]:>12}")
    for way, f in report["ways"].items():
        size = "×".join(map(str, f["decoded"]))
        print(
            f"{way:34} {f['right_first']:11.3f} {f['top5_share']:11.3f} {size:>10} "
            f"{f['median_ms']:6.1f}/{f['p95_ms']:.1f}"
        )
    write(args.json, report)


if __name__ == "__main__":
    main()
