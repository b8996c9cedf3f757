"""A bad file handed to a command is one line that says what is wrong, exit 1, no traceback.

Every command that reads a user's CSV, JSONL or Parquet file, or the photos a CSV names, is
driven through the real ``lookalike`` app (typer's runner, the real readers) with files a user
could bring by mistake: a photo renamed ``.csv``, a spreadsheet with the wrong columns, a row
naming a photo that is not there or does not decode.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lookalike.cli.main import app


def _invoke(home: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["--home", str(home), *args])
    # the command exited on its own: an exception that escaped it (the traceback a user would
    # see) is what the runner keeps in ``exception`` instead
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, result.output


@pytest.fixture()
def files(tmp_path: Path, demo_images: list[Path]) -> Path:
    """A folder of hostile inputs next to two real demo photos."""
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(demo_images[0], folder / "a.jpg")
    shutil.copy(demo_images[1], folder / "b.jpg")
    (folder / "photo.csv").write_bytes(demo_images[0].read_bytes())  # a JPEG renamed .csv
    (folder / "photo.parquet").write_bytes(demo_images[0].read_bytes())
    (folder / "photo.jsonl").write_bytes(demo_images[0].read_bytes())
    (folder / "text.jpg").write_text("not a photo")
    (folder / "wrong_columns.csv").write_text("name,label\na.jpg,1\n")
    (folder / "missing_photo.csv").write_text("item_id,person,product\n1,a.jpg,gone.jpg\n")
    (folder / "bad_photo.csv").write_text("item_id,person,product\n1,a.jpg,text.jpg\n")
    (folder / "short_row.csv").write_text("item_id,person,product\n1,a.jpg\n")
    return folder


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["eval", "retrieval", "--pairs", "{in}/photo.csv"], "photo.csv is not UTF-8 text"),
        (["eval", "retrieval", "--pairs", "{in}/wrong_columns.csv"], "missing columns"),
        (["eval", "retrieval", "--pairs", "{in}/short_row.csv"], "line 2: product is empty"),
        (["eval", "retrieval", "--pairs", "{in}/missing_photo.csv"], "gone.jpg: no such photo"),
        (
            ["eval", "retrieval", "--pairs", "{in}/missing_photo.csv", "--no-cache"],
            "gone.jpg: no such photo",
        ),
        (["eval", "retrieval", "--pairs", "{in}/bad_photo.csv"], "text.jpg: the upload is not"),
    ],
)
def test_eval_retrieval_names_what_is_wrong(
    home_with_model: Path, files: Path, args: list[str], message: str
) -> None:
    argv = [a.format(**{"in": files}) for a in args] + ["--root", str(files)]
    code, output = _invoke(home_with_model, *argv)
    assert code == 1, output
    assert "error:" in output and message in output, output


def test_eval_retrieval_leaves_out_a_broken_pair_and_names_it(
    home_with_model: Path, files: Path
) -> None:
    pairs = files / "one_broken.csv"
    pairs.write_text("item_id,person,product\n1,a.jpg,b.jpg\n2,b.jpg,gone.jpg\n3,b.jpg,text.jpg\n")
    out = files / "out.json"
    result = CliRunner().invoke(
        app, ["--home", str(home_with_model), "eval", "retrieval", "--pairs", str(pairs),
              "--root", str(files), "--json", str(out)],
    )  # fmt: skip
    output = result.output
    assert result.exit_code == 0 and result.exception is None, output
    flat = " ".join(output.split())
    assert "skipped 2 unreadable photos (2 pairs, 0 distractors left out)" in flat, output
    assert "gone.jpg: no such photo" in flat and "text.jpg: the upload is not" in flat
    doc = json.loads(out.read_text())
    assert doc["queries"] == 1 and doc["gallery"] == 1 and doc["skipped"]["pairs"] == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["moderation", "import", "{in}/photo.jsonl"], "photo.jsonl is not UTF-8 text"),
        (["moderation", "eval", "--labels", "{in}/nope.csv", "--root", "{in}"], "cannot read"),
        (["moderation", "train", "--data", "{in}/nowhere"], "is not a folder"),
        (["fit", "import", "{in}/photo.csv"], "photo.csv is not UTF-8 text"),
        (["forecast", "build", "--data", "{in}/photo.csv"], "photo.csv is not UTF-8 text"),
        (["forecast", "build", "--data", "{in}/photo.parquet"], "not a readable Parquet file"),
        (["recs", "build", "--data", "{in}/photo.csv"], "photo.csv is not UTF-8 text"),
        (["eval", "price", "--train", "{in}/photo.csv"], "photo.csv is not UTF-8 text"),
    ],
)
def test_data_commands_name_what_is_wrong(
    tmp_path: Path, files: Path, args: list[str], message: str
) -> None:
    code, output = _invoke(tmp_path / "home", *[a.format(**{"in": files}) for a in args])
    assert code != 0, output
    assert "error:" in output and message in " ".join(output.split()), output
