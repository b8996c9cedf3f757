"""Build the bundled demo catalog from ../shared/data/clothing (licence: free for any use).

Run once by a maintainer; its output (demo/catalog/) is committed so the demo runs without
../shared. Deterministic: the same input gives the same catalog.

    python scripts/make_demo_catalog.py [--src ../shared/data/clothing] [--out demo/catalog]
    python scripts/make_demo_catalog.py --retitle   # rewrite only the titles' colour words
"""

from __future__ import annotations

import argparse
import csv
import random
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

# Dresses first (all of them), then a few of each garment a shopper might confuse with one.
OTHERS = {
    "Skirt": 16,
    "Top": 16,
    "Blouse": 12,
    "Body": 12,
    "Outwear": 12,
    "Blazer": 12,
    "T-Shirt": 12,
    "Shirt": 12,
    "Longsleeve": 12,
    "Pants": 8,
    "Shorts": 8,
}
# Typical rental prices (USD per 4-day rental) by category, for a believable demo.
PRICE_RANGE = {"Dress": (30, 180), "Outwear": (25, 120), "Blazer": (25, 90)}
STYLES = {
    "Dress": [
        "midi dress",
        "maxi dress",
        "mini dress",
        "wrap dress",
        "shift dress",
        "slip dress",
        "cocktail dress",
        "sundress",
    ],
}


# --- colour words --------------------------------------------------------------------------
# The photo's mean colour mixes garment, skin and background (a green pair of trousers on a
# beige bed came out "brown"), so the word is taken from the garment's own pixels: drop what
# looks like the background (colours of the border, reached from the border), drop skin unless
# it is most of what is left, name each remaining pixel by lightness, chroma and hue in CIE Lab,
# and keep the name that dominates; "multicolour" when none does.
SIDE = 128  # working size: enough pixels for a histogram, small enough to be instant
BORDER = 0.06  # the outer 6 % of each side is where the background shows
BACKGROUND_DE = 13.0  # Lab distance within which a pixel matches a border colour
DOMINANT = 0.45  # share the winning name needs, with 1.25x the runner-up (or just 2x it)
NEIGHBOURS = {
    frozenset(pair)
    for pair in [
        ("navy", "blue"), ("navy", "black"), ("blue", "teal"), ("teal", "green"),
        ("grey", "white"), ("grey", "black"), ("beige", "white"), ("beige", "brown"),
        ("pink", "red"), ("pink", "purple"), ("red", "purple"), ("orange", "brown"),
        ("orange", "yellow"), ("yellow", "beige"),
    ]
}  # fmt: skip
# Words the rules still get wrong, checked by eye on the photo (item_id -> word): mostly navy
# shot so dark it measures black, fine stripes that blur to grey, and prints on white.
OVERRIDES: dict[str, str] = {
    "LK-0009": "black",
    "LK-0014": "white",
    "LK-0018": "black-and-white",
    "LK-0025": "green",
    "LK-0027": "navy",
    "LK-0028": "multicolour",
    "LK-0044": "white",
    "LK-0047": "multicolour",
    "LK-0052": "grey",
    "LK-0056": "navy",
    "LK-0057": "black-and-white",
    "LK-0062": "blue",
    "LK-0063": "beige",
    "LK-0069": "multicolour",
    "LK-0127": "pink",
    "LK-0149": "navy",
    "LK-0171": "pink",
    "LK-0070": "brown",
    "LK-0215": "multicolour",
    "LK-0233": "grey",
    "LK-0269": "blue",
    "LK-0294": "pink",
    "LK-0308": "grey",
    "LK-0322": "beige",
    "LK-0323": "brown",
    "LK-0325": "beige",
    "LK-0327": "black-and-white",
    "LK-0337": "white",
    "LK-0338": "beige",
    "LK-0339": "multicolour",
    "LK-0413": "navy",
    "LK-0414": "green",
    "LK-0415": "navy",
}


def _lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB (..., 3) uint8 -> CIE Lab (D65), float32."""
    c = rgb.astype(np.float32) / 255.0
    c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    m = np.array(
        [[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]],
        dtype=np.float32,
    )
    xyz = c @ m.T / np.array([0.9505, 1.0, 1.089], dtype=np.float32)
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.stack(
        [116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])],
        axis=-1,
    )


def name_colour(lab: np.ndarray, value: float) -> str:
    """Name one colour: its CIE Lab triple and its HSV value (max channel, 0-1)."""
    lum, a, b = (float(x) for x in lab)
    chroma = float(np.hypot(a, b))
    hue = float(np.degrees(np.arctan2(b, a)) % 360)
    warm = 40 <= hue < 110  # camera casts are strongest here: a lower bar for "grey"
    # Home photos are dim: a white garment in shade reads L 60-70, a black one L 20-30.
    if chroma < (7.0 if warm else 9.0) or (lum < 22 and chroma < 8):
        return "black" if lum < 28 else "white" if lum > 60 else "grey"
    if 235 <= hue < 312:  # blue's Lab lightness is low even when bright: split on HSV value
        return "navy" if value < 0.3 else "blue"
    if value < 0.16:
        return "black"
    if 40 <= hue < 88 and chroma < 32:  # pale or dull orange is beige or brown
        return "beige" if lum >= 60 else "brown"
    if hue >= 335 or hue < 8:  # the magenta side of red: deep pink, or plum when dark
        return "pink" if lum > 40 else "purple"
    if hue < 40:
        return "pink" if lum > 65 else "red"
    if hue < 75:
        return "brown" if lum < 52 else "orange"
    if hue < 110:  # yellow, or olive when dark
        return "green" if lum < 55 else "beige" if chroma < 32 else "yellow"
    if hue < 190:
        return "green"
    if hue < 235:
        return "teal"
    return "pink" if lum > 62 else "purple"


def _clusters(lab: np.ndarray, weights: np.ndarray, k: int = 5, rounds: int = 12) -> np.ndarray:
    """Weighted k-means of Lab pixels (n, 3), seeded by farthest points: labels (n,)."""
    centres = [np.average(lab, axis=0, weights=weights)]
    for _ in range(k - 1):
        d = np.min([np.linalg.norm(lab - c, axis=1) for c in centres], axis=0)
        if d.max() < 8:  # nothing left that differs visibly
            break
        centres.append(lab[int(np.argmax(d))])
    c = np.stack(centres)
    for _ in range(rounds):
        labels = np.argmin(np.linalg.norm(lab[:, None] - c[None], axis=2), axis=1)
        for j in range(len(c)):
            member = labels == j
            if member.any():
                c[j] = np.average(lab[member], axis=0, weights=weights[member])
    return labels


def _skin(rgb: np.ndarray) -> np.ndarray:
    """Skin-like pixels by the usual YCbCr box (Chai & Ngan), a boolean mask."""
    r, g, b = (rgb[..., i].astype(np.float32) for i in range(3))
    cb = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b
    return (cr >= 138) & (cr <= 173) & (cb >= 77) & (cb <= 127) & (r > g) & (r > 60)


def _background(lab: np.ndarray) -> np.ndarray:
    """Pixels of the border's dominant colours that connect to the border, a boolean mask."""
    h, w, _ = lab.shape
    bh, bw = max(1, round(h * BORDER)), max(1, round(w * BORDER))
    edge = np.zeros((h, w), dtype=bool)
    edge[:bh], edge[-bh:], edge[:, :bw], edge[:, -bw:] = True, True, True, True
    border = lab[edge]
    # Coarse Lab bins of the border; the bins that hold most of it are the background colours.
    keys = np.floor(border / np.array([10.0, 12.0, 12.0], dtype=np.float32)).astype(np.int64)
    uniq, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(-counts, kind="stable")
    middle = np.zeros((h, w), dtype=bool)
    middle[int(h * 0.35) : int(h * 0.65), int(w * 0.35) : int(w * 0.65)] = True
    near = np.zeros((h, w), dtype=bool)
    covered = 0
    for k in order:
        if counts[k] < 0.04 * len(border) or covered >= 0.85 * len(border):
            break
        covered += counts[k]
        match = np.linalg.norm(lab - border[inverse == k].mean(axis=0), axis=-1) < BACKGROUND_DE
        # A garment that reaches the frame's edge shows in the border too; a colour that fills
        # the middle of the photo is the garment's, not the background's.
        if match[middle].mean() < 0.5:
            near |= match
    # Grow from the border through matching pixels only, so a garment the colour of the
    # background inside the frame stays garment.
    grown = near & edge
    while True:
        step = grown.copy()
        step[1:] |= grown[:-1]
        step[:-1] |= grown[1:]
        step[:, 1:] |= grown[:, :-1]
        step[:, :-1] |= grown[:, 1:]
        step &= near
        if (step == grown).all():
            return grown
        grown = step


def garment_colour(rgb: np.ndarray) -> str:
    """The colour word of the garment in an RGB uint8 array (h, w, 3)."""
    lab = _lab(rgb)
    keep = ~_background(lab)
    if keep.mean() < 0.05:  # the whole frame is one colour: the garment fills it
        keep = np.ones_like(keep)
    skin = _skin(rgb) & keep
    if skin.sum() < 0.5 * keep.sum():
        keep &= ~skin
    # The garment is usually in the middle: weight pixels by a broad centre prior.
    h, w = keep.shape
    yy, xx = np.mgrid[0:h, 0:w]
    prior = np.exp(-(((yy - h / 2) / (0.45 * h)) ** 2 + ((xx - w / 2) / (0.45 * w)) ** 2))
    pixels, weights, values = lab[keep], prior[keep], rgb[keep].max(axis=1) / 255.0
    labels = _clusters(pixels, weights)
    shares: dict[str, float] = {}
    for j in np.unique(labels):
        member = labels == j
        mean = np.average(pixels[member], axis=0, weights=weights[member])
        word = name_colour(mean, float(np.average(values[member], weights=weights[member])))
        shares[word] = shares.get(word, 0.0) + float(weights[member].sum())
    total = sum(shares.values())
    black, white = shares.get("black", 0.0) / total, shares.get("white", 0.0) / total
    if black >= 0.12 and white >= 0.12 and black + white + shares.get("grey", 0.0) / total > 0.8:
        return "black-and-white"
    ranked = sorted(shares.items(), key=lambda kv: (-kv[1], kv[0]))
    top = ranked[0][1] / total
    second = ranked[1][1] / total if len(ranked) > 1 else 0.0
    # Shading splits one garment between neighbouring names (navy and blue, grey and white):
    # past the bar, only a colour that is not a neighbour of the winner makes it a print.
    rivals = [v for w, v in ranked[1:] if frozenset((ranked[0][0], w)) not in NEIGHBOURS]
    rival = max(rivals, default=0.0) / total
    if top >= 2 * second or (top >= DOMINANT and top >= 1.25 * rival):
        return ranked[0][0]
    return "multicolour"


def colour_name(path: Path, item_id: str | None = None) -> str:
    """Name the colour of the garment in the photo at PATH (or its override by ITEM_ID)."""
    if item_id is not None and item_id in OVERRIDES:
        return OVERRIDES[item_id]
    with Image.open(path) as im:
        im = im.convert("RGB")
        im.thumbnail((SIDE, SIDE), Image.Resampling.BILINEAR)
        return garment_colour(np.asarray(im))


def title(word: str, style: str) -> str:
    return f"{word.capitalize()} {style}"


def retitle(out: Path) -> None:
    """Recompute the colour word of every title in OUT/items.csv; every other field is kept."""
    path = out / "items.csv"
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields, rows = list(reader.fieldnames or []), list(reader)
    changed = 0
    for row in rows:
        style = row["title"].split(" ", 1)[1]  # titles are "<Colour> <style>"
        new = title(colour_name(out / row["image"], row["item_id"]), style)
        changed += new != row["title"]
        row["title"] = new
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    print(f"retitled {changed} of {len(rows)} items in {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, default=Path("../shared/data/clothing"))
    ap.add_argument("--out", type=Path, default=Path("demo/catalog"))
    ap.add_argument(
        "--retitle",
        action="store_true",
        help="rewrite only the colour word of each title in OUT/items.csv (images untouched)",
    )
    args = ap.parse_args()
    if args.retitle:
        retitle(args.out)
        return
    rng = random.Random(20261128)

    rows = list(csv.DictReader(open(args.src / "labels.csv", encoding="utf-8")))
    rows = [r for r in rows if r["kids"] == "False"]
    rows.sort(key=lambda r: r["file"])
    chosen = [r for r in rows if r["label"] == "Dress"]
    for label, n in OTHERS.items():
        chosen += [r for r in rows if r["label"] == label][:n]

    images = args.out / "images"
    if args.out.exists():
        shutil.rmtree(args.out)
    images.mkdir(parents=True)
    with open(args.out / "items.csv", "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["item_id", "title", "category", "price", "available", "image"])
        for i, r in enumerate(chosen, 1):
            src = args.src / "images" / r["file"]
            dst = images / r["file"]
            shutil.copyfile(src, dst)
            label = r["label"]
            style = rng.choice(STYLES.get(label, [label.lower()]))
            lo, hi = PRICE_RANGE.get(label, (15, 60))
            price = round(rng.uniform(lo, hi) / 5) * 5
            out.writerow(
                [
                    f"LK-{i:04d}",
                    title(colour_name(src, f"LK-{i:04d}"), style),
                    label,
                    f"{price:.2f}",
                    "true" if rng.random() < 0.8 else "false",
                    f"images/{r['file']}",
                ]
            )
    print(f"wrote {len(chosen)} items to {args.out}")


if __name__ == "__main__":
    main()
