"""Screenshots of the search page as a shopper sees it, for docs/screenshots/.

    python scripts/screenshots.py [--home HOME] [--models MODELS] [--out docs/screenshots]

Starts a real ``lookalike serve`` on a demo home (``--home``: one already built; else a fresh
one in a temporary folder made by ``lookalike demo --no-serve``, which builds the default model
unless ``--models`` gives a models/ folder to copy), opens the search page in real Chromium
(Playwright, /usr/bin/chromium), uploads each photo of the list below and saves the first screen
(1280×900, JPEG) per photo as ``NN-name.jpg``, plus a README.md that says what each photo is
and the categories of the top three results.

Only the shopper photos' screenshots are committed (``docs/screenshots/``: the clothing set
allows any use); the street photos' go to ``docs/screenshots/local/``, which git ignores — the
street set may be used for evaluation but not copied into the project.

The six photos: three street-fashion photos from ../shared/data/street (with and without a
dress, from its tags.csv) and three shopper photos from ../shared/data/clothing that are not in
the demo catalog. Never point it at viton or instagram photos: those screenshots may not be
committed.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LOOKALIKE_SHARED_DATA", REPO.parent / "shared" / "data"))
CHROMIUM = Path(os.environ.get("LOOKALIKE_CHROMIUM", "/usr/bin/chromium"))
NOT_COMMITTABLE = ("viton", "instagram")
LOCAL = "local"  # screenshots of photos that may not be committed (git ignores this folder)


@dataclass(frozen=True)
class Photo:
    name: str  # the screenshot's name, after its number
    path: Path
    what: str  # what the photo shows, for the README
    committable: bool = False  # may its screenshot be committed (the clothing set's licence)


def street(file: str, name: str) -> Photo:
    with open(SHARED / "street" / "tags.csv", encoding="utf-8") as f:
        row = next(r for r in csv.DictReader(f) if r["file"] == file)
    dress = "with a dress" if row["has_dress"] == "1" else "no dress"
    return Photo(name, SHARED / "street" / "images" / file, f"street photo, {dress}: {row['tags']}")


def shopper(file: str, name: str) -> Photo:
    with open(SHARED / "clothing" / "labels.csv", encoding="utf-8") as f:
        row = next(r for r in csv.DictReader(f) if r["file"] == file)
    demo = (REPO / "demo" / "catalog" / "items.csv").read_text(encoding="utf-8")
    if file in demo:
        raise SystemExit(f"{file} is in the demo catalog: a shopper photo must be a new one")
    what = f"shopper's phone photo of a garment ({row['label']}), not in the demo catalog"
    return Photo(name, SHARED / "clothing" / "images" / file, what, committable=True)


def photos() -> list[Photo]:
    # The clothing set has almost no worn photos outside the demo catalog (none among 160
    # sampled by eye, none that nudenet finds a person in); these are a shopper's own garments.
    return [
        street("0002.jpg", "street-dress"),
        street("0005.jpg", "street-dress-cape"),
        street("0004.jpg", "street-coat-pants"),
        shopper("2ce576f8-cb93-43ee-933b-22d1c6d1678f.jpg", "shopper-red-tshirt"),
        shopper("1d08ddfe-dfd4-4bf9-81a7-9cc8dfa2833f.jpg", "shopper-denim-skirt"),
        shopper("2d758bb1-1a3b-4240-8fc0-ca9647ccba5d.jpg", "shopper-floral-skirt"),
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def lookalike(*args: str) -> list[str]:
    return [sys.executable, "-m", "lookalike.cli", *args]


def demo_home(folder: Path, models: Path | None) -> Path:
    """A LOOKALIKE_HOME with the default model and the demo catalog indexed."""
    if models is not None:
        shutil.copytree(models, folder / "models")
    env = {**os.environ, "LOOKALIKE_HOME": str(folder)}
    print(f"building a demo home in {folder} (the default model takes minutes if not given)")
    subprocess.run(lookalike("demo", "--no-serve"), cwd=REPO, env=env, check=True)
    return folder


def serve(home: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "LOOKALIKE_HOME": str(home)}
    process = subprocess.Popen(
        lookalike("serve", "--host", "127.0.0.1", "--port", str(port)),
        cwd=REPO,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"lookalike serve exited:\n{log.read_text(errors='replace')}")
        try:
            with urllib.request.urlopen(f"{url}/ready", timeout=2) as r:
                if r.status == 200:
                    return process, url
        except (urllib.error.URLError, OSError):
            time.sleep(0.3)
    process.terminate()
    raise SystemExit(f"lookalike serve was not ready in 180 s:\n{log.read_text()}")


def shoot(url: str, shots: list[Photo], out: Path) -> list[dict]:
    """Screenshot each photo's results: committable ones in ``out``, the rest in ``out/local``."""
    from playwright.sync_api import sync_playwright

    rows = []
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            for n, photo in enumerate(shots, start=1):
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(f"{url}/")
                with page.expect_response(
                    lambda r: "/v1/search" in r.url and r.request.method == "POST",
                    timeout=60_000,
                ) as answer:
                    page.set_input_files("[data-testid=file-input]", str(photo.path))
                body = answer.value.json()
                if not answer.value.ok:
                    raise SystemExit(f"{photo.path.name}: search answered {body}")
                page.wait_for_selector("[data-testid=result-card]", timeout=60_000)
                page.wait_for_function(
                    "() => [...document.querySelectorAll('[data-testid=result-card] img')]"
                    ".slice(0, 12).every(img => img.complete)",
                    timeout=60_000,
                )
                folder = out if photo.committable else out / LOCAL
                folder.mkdir(parents=True, exist_ok=True)
                file = folder / f"{n:02d}-{photo.name}.jpg"
                # the first screen (the photo and the top results) as a JPEG: small enough to commit
                page.screenshot(path=str(file), type="jpeg", quality=80)
                page.close()
                top = [r["category"] for r in body["results"][:3]]
                rows.append(
                    {
                        "file": file.name,
                        "committed": photo.committable,
                        "photo": f"{photo.path.parent.parent.name}/{photo.path.name}",
                        "what": photo.what,
                        "top3": top,
                        "groups": [g["region"] for g in body.get("groups", [])],
                        "model": body["model_version"],
                        "index": body["index_version"],
                    }
                )
                print(f"{file.name}: top 3 {', '.join(top)}")
        finally:
            browser.close()
    return rows


def write_readme(out: Path, rows: list[dict], command: str) -> None:
    """``out/README.md`` for the committed screenshots, ``out/local/README.md`` for all."""
    for folder, shown in ((out, [r for r in rows if r["committed"]]), (out / LOCAL, rows)):
        if shown:
            _readme(folder, shown, rows, command, local=folder != out)


def _readme(folder: Path, rows: list[dict], every: list[dict], command: str, local: bool) -> None:
    left_out = len(every) - len(rows)
    lines = [
        "# Screenshots of the search page",
        "",
        f"Taken by `{command}` (real `lookalike serve`, real Chromium, the first screen per photo)",
        f"with model `{every[0]['model']}` and index `{every[0]['index']}`.",
        "",
    ]
    if left_out:
        lines += [
            f"The {left_out} street-photo screenshots of the same run are not committed (the",
            f"street set may not be copied into the project); they are in `{LOCAL}/`.",
            "",
        ]
    lines += [
        "| screenshot | photo | what it shows | top 3 categories |",
        "|---|---|---|---|",
    ]
    for r in rows:
        top = ", ".join(r["top3"])
        link = (
            r["file"]
            if local == (not r["committed"])
            else (f"../{r['file']}" if local else f"{LOCAL}/{r['file']}")
        )
        lines.append(f"| [{r['file']}]({link}) | `{r['photo']}` | {r['what']} | {top} |")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", type=Path, help="a LOOKALIKE_HOME with a model and an index")
    ap.add_argument("--models", type=Path, help="models/ to copy into a fresh demo home")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    args = ap.parse_args()
    if not SHARED.is_dir():
        raise SystemExit(f"{SHARED} is absent: the photos come from ../shared/data")
    if not CHROMIUM.is_file():
        raise SystemExit(f"{CHROMIUM} is missing: `apt-get install -y chromium`")
    shots = photos()
    bad = [p for p in shots if any(part in NOT_COMMITTABLE for part in p.path.parts)]
    if bad:
        raise SystemExit(f"these photos may not be committed as screenshots: {bad}")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lookalike-shots-") as tmp:
        home = args.home or demo_home(Path(tmp) / "home", args.models)
        process, url = serve(home, Path(tmp) / "serve.log")
        try:
            rows = shoot(url, shots, args.out)
        finally:
            process.terminate()
            process.wait(timeout=30)
    command = "python scripts/screenshots.py" + (" --home HOME" if args.home else "")
    write_readme(args.out, rows, command)
    (args.out / "screenshots.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {len(rows)} screenshots and README.md to {args.out}")


if __name__ == "__main__":
    main()
