"""Files a command writes when the machine refuses the write: one clear error, nothing half.

The refusal is real, not patched in: the child process runs under ``RLIMIT_FSIZE`` (a write
past it fails with EFBIG, as a full disk fails with ENOSPC), with SIGXFSZ ignored so the write
returns its error instead of killing the process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lookalike.core.textfiles import CannotWrite, write_output

LIMITED = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
"""


def run_limited(code: str, *args: str, limit: int = 4096) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", LIMITED.format(limit=limit) + textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_an_output_the_disk_refuses_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    out.write_text('{"old": true}')
    done = run_limited(
        """
        from lookalike.core.textfiles import CannotWrite, write_output
        try:
            write_output(sys.argv[1], "x" * 20000)
        except CannotWrite as exc:
            print(exc.message)
        """,
        str(out),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"cannot write {out}: File too large; nothing was written")
    assert json.loads(out.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["figures.json"]  # no temp file left


def test_a_registry_version_the_disk_refuses_never_appears(tmp_path: Path) -> None:
    done = run_limited(
        """
        from pathlib import Path
        from lookalike.core.textfiles import CannotWrite
        from lookalike.registry import Registry
        reg = Registry(Path(sys.argv[1]), "index")
        try:
            with reg.create("catalog", {"note": "too big"}) as w:
                (w.path / "vectors.bin").write_bytes(b"v" * 20000)
        except CannotWrite as exc:
            print(exc.message)
        print(sorted(p.name for p in (Path(sys.argv[1]) / "catalog").iterdir()))
        """,
        str(tmp_path),
    )
    assert done.returncode == 0, done.stderr
    first, listing = done.stdout.strip().splitlines()
    assert first.startswith("cannot write index catalog into ") and "nothing was promoted" in first
    assert listing == "[]"  # no version folder, no temp folder


def test_a_command_whose_output_the_disk_refuses_says_so_in_one_line(tmp_path: Path) -> None:
    rows = ["Brand,Retail_price,Rent_price"]
    rows += [f"brand {i % 7},{200 + 10 * i},{30 + i % 40}" for i in range(120)]
    data = tmp_path / "listings.csv"
    data.write_text("\n".join(rows) + "\n")
    out = tmp_path / "out" / "eval.json"
    done = run_limited(
        """
        from lookalike.cli.main import app
        sys.argv = ["lookalike", *sys.argv[1:]]
        app()
        """,
        "--home", str(tmp_path / "home"),
        "eval", "price", "--train", str(data), "--json", str(out),
        limit=1000,  # the JSON of figures is about 2.5 kB
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert f"error: cannot write {out}: File too large" in " ".join(done.stderr.split())
    assert not out.exists() and list(out.parent.iterdir()) == []


def test_an_output_path_that_cannot_be_a_file_says_what_to_name_instead(tmp_path: Path) -> None:
    folder = tmp_path / "reports"
    folder.mkdir()
    with pytest.raises(CannotWrite, match="it is a folder: name a file to write"):
        write_output(folder, "x")
    plain = tmp_path / "items.csv"
    plain.write_text("a,b\n")
    with pytest.raises(CannotWrite, match="a part of its path is a file, not a folder"):
        write_output(plain / "out.json", "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["items.csv", "reports"]
    assert list(folder.iterdir()) == [] and plain.read_text() == "a,b\n"
