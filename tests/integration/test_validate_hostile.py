"""Validation on a hostile photo folder, for real: real files, real Great Expectations, the real CLI.

Every unusable file is quarantined with a reason that names its kind, every convertible one is
converted with a reason that names the conversion, no good file is lost, the suite fails with a
readable summary, the cross-split leak is caught, and --quarantine (plus a leak allowance) passes.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import ImageFile

from productstudio.config import parse_params
from productstudio.data import images as img
from productstudio.data.raw import ingest
from productstudio.validation.validate import DATA_DOCS, METADATA, QUARANTINE, REPORT, ValidationFailed, validate
from tests.integration import hostile

REPO_ROOT = Path(__file__).resolve().parents[2]
LEAK_ALLOWANCE = 0.1  # the 2 leaking files are 2 of 32 usable ones


def _hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def _settings(folder: Path, **validate_params):
    return parse_params({"ingest": {"source": "image-folder", "image_folder": str(folder)}, "validate": validate_params})


@pytest.fixture(scope="module")
def world(tmp_path_factory, clothing_dir):
    """The hostile folder, its hashes before anything ran, and its ingested raw dataset."""
    base = tmp_path_factory.mktemp("hostile")
    source = base / "photos"
    kinds = hostile.make_hostile_folder(source, clothing_dir)
    before = _hashes(source)
    params = _settings(source)
    ingest(params.ingest, base / "raw")
    return {"base": base, "source": source, "raw": base / "raw", "kinds": kinds, "before": before, "params": params}


@pytest.fixture(scope="module")
def failed(world):
    """Default validation (no quarantine, no leak allowance): it must fail."""
    out = world["base"] / "validation-default"
    with pytest.raises(ValidationFailed) as caught:
        validate(world["raw"], out, world["params"].validate)
    table = pd.read_csv(out / METADATA)
    return {"out": out, "summary": str(caught.value), "table": table.set_index("path"), "report": json.loads((out / REPORT).read_text())}


def test_helper_wrote_every_kind(world):
    """The folder really holds one of each hostile kind, and nothing the helper did not declare."""
    kinds = world["kinds"]
    assert set(kinds) == set(world["before"])
    present = set(kinds.values())
    for kind in hostile.QUARANTINED_KINDS + hostile.CONVERTED_KINDS + (hostile.OK, hostile.LEAK):
        assert kind in present, f"no file of kind {kind!r}"
    assert list(kinds.values()).count(hostile.LEAK) == 2
    assert list(kinds.values()).count(hostile.OK) == 2 * len(hostile.CATEGORIES) * hostile.GOOD_PER_CATEGORY - 1
    assert (world["source"] / "train/shoes/bomb.png").stat().st_size < 200  # declares 10^10 pixels in a few bytes


def test_one_row_per_file_with_expected_status_and_reason(world, failed):
    table, kinds = failed["table"], world["kinds"]
    assert len(table) == len(world["before"]) == len(kinds), "a file was lost or invented"
    assert set(table.index) == set(kinds)
    for path, kind in kinds.items():
        row = table.loc[path]
        assert row["status"] == hostile.expected_status(kind), f"{path}: {row['status']} ({row['reason']}), expected {kind}"
        if kind in (hostile.OK, hostile.LEAK):
            assert pd.isna(row["reason"]), f"{path}: a good file got a reason: {row['reason']}"
            assert row["mode"] == "RGB" and row["format"] == "JPEG"
        else:
            assert kind.lower() in str(row["reason"]).lower(), f"{path}: reason {row['reason']!r} does not name {kind!r}"
            assert "\n" not in str(row["reason"]), f"{path}: reason is not one line"
    counts = failed["report"]["counts"]
    n_quarantined = sum(hostile.expected_status(k) == "quarantined" for k in kinds.values())
    n_converted = sum(hostile.expected_status(k) == "converted" for k in kinds.values())
    assert (counts["files"], counts["quarantined"], counts["converted"]) == (len(kinds), n_quarantined, n_converted)
    assert counts["ok"] == len(kinds) - n_quarantined - n_converted


def test_converted_files_carry_what_was_found(failed):
    table = failed["table"]
    assert table.loc["train/hat/cmyk.jpg", "mode"] == "CMYK"
    assert table.loc["train/pants/rgba.png", "mode"] == "RGBA"
    assert table.loc["train/shoes/palette.png", "mode"] == "P"
    assert table.loc["test/pants/gray16.png", "mode"] == "I;16"
    assert table.loc["test/shoes/animated.gif", "format"] == "GIF"
    assert table.loc["train/shoes/really_a_png.jpg", "format"] == "PNG"
    # EXIF: the table records the stored (landscape) size; preprocessing turns it upright.
    assert (table.loc["test/hat/exif6.jpg", "width"], table.loc["test/hat/exif6.jpg", "height"]) == hostile.EXIF_UPRIGHT_SIZE[::-1]


def test_quarantine_list_is_exactly_the_quarantined_files(world, failed):
    lines = (failed["out"] / QUARANTINE).read_text().splitlines()
    listed = dict(line.split("\t") for line in lines)
    assert len(listed) == len(lines), "a file is listed twice"
    expected = {p for p, k in world["kinds"].items() if hostile.expected_status(k) == "quarantined"}
    assert set(listed) == expected
    table = failed["table"]
    assert all(listed[p] == table.loc[p, "reason"] for p in listed)
    assert {q["path"] for q in failed["report"]["quarantined"]} == expected


def test_suite_fails_by_default_with_a_summary_naming_the_rules(failed):
    summary = failed["summary"]
    assert summary.startswith("validation FAILED: ")
    for rule in ("every file readable and usable", "every file in a category folder", "width within bounds",
                 "no (near-)identical content across splits"):
        assert f"FAIL {rule}" in summary, f"summary does not name failing rule {rule!r}:\n{summary}"
    for rule in ("allowed formats", "allowed modes", "categories in the declared set", "files per category within bounds"):
        assert f"ok   {rule}" in summary
    assert "quarantined train/shoes/bomb.png: decompression bomb" in summary
    assert "Traceback" not in summary
    report = failed["report"]
    assert report["success"] is False and report["quarantine_mode"] is False
    failing = {e["name"] for e in report["expectations"] if not e["success"]}
    assert "every file readable and usable" in failing
    usable_rule = next(e for e in report["expectations"] if e["name"] == "every file readable and usable")
    assert set(usable_rule["unexpected"]) == {q["path"] for q in report["quarantined"]}


def test_data_docs_are_built(failed):
    docs = failed["out"] / DATA_DOCS
    index = docs / "index.html"
    assert index.is_file()
    html = index.read_text()
    assert "product_images.files" in html and "product_images.counts" in html
    assert list((docs / "validations").rglob("*.html")), "no validation result pages"


def test_cross_split_leak_is_flagged(world, failed):
    table = failed["table"]
    leaks = sorted(p for p, k in world["kinds"].items() if k == hostile.LEAK)
    assert sorted(table.index[table["leaks_across_splits"].astype(bool)]) == leaks
    first, second = (table.loc[p] for p in leaks)
    assert first["sha256"] == second["sha256"] and first["near_dup_group"] == second["near_dup_group"]
    assert {first["split"], second["split"]} == {"train", "test"}
    assert failed["report"]["counts"]["leaking_across_splits"] == 2
    leak_rule = next(e for e in failed["report"]["expectations"] if e["name"] == "no (near-)identical content across splits")
    assert leak_rule["success"] is False and sorted(leak_rule["unexpected"]) == leaks


def test_quarantine_alone_does_not_excuse_the_leak(world):
    out = world["base"] / "validation-quarantine-only"
    with pytest.raises(ValidationFailed) as caught:
        validate(world["raw"], out, world["params"].validate, quarantine=True)
    summary = str(caught.value)
    assert "ok   every file readable and usable" in summary
    assert "ok   width within bounds" in summary
    assert "FAIL no (near-)identical content across splits" in summary


def test_quarantine_with_leak_allowance_passes(world):
    out = world["base"] / "validation-pass"
    params = _settings(world["source"], max_leak_fraction=LEAK_ALLOWANCE)
    report = validate(world["raw"], out, params.validate, quarantine=True)
    assert report["success"] is True and report["quarantine_mode"] is True
    assert all(e["success"] for e in report["expectations"]), report["expectations"]
    quarantined = {p for p, k in world["kinds"].items() if hostile.expected_status(k) == "quarantined"}
    # Quarantine mode still lists every quarantined file, and deletes nothing.
    assert {q["path"] for q in report["quarantined"]} == quarantined
    assert set((out / QUARANTINE).read_text().splitlines()) == {f"{q['path']}\t{q['reason']}" for q in report["quarantined"]}
    assert report["counts"]["per_category"] == {"hat": 11, "pants": 10, "shoes": 11}
    assert (out / DATA_DOCS / "index.html").is_file()
    assert json.loads((out / REPORT).read_text())["success"] is True


def test_source_and_raw_folders_are_untouched(world, tmp_path):
    """Ingest copies byte for byte; validation (either mode) changes and deletes nothing."""
    raw = tmp_path / "raw"
    ingest(world["params"].ingest, raw)
    raw_before = _hashes(raw / "images")
    assert raw_before == world["before"], "ingest did not copy every file verbatim"
    with pytest.raises(ValidationFailed):
        validate(raw, tmp_path / "v1", world["params"].validate)
    validate(raw, tmp_path / "v2", _settings(world["source"], max_leak_fraction=LEAK_ALLOWANCE).validate, quarantine=True)
    assert _hashes(raw / "images") == raw_before
    assert _hashes(world["source"]) == world["before"]


def test_decompression_bomb_is_refused_fast_without_decoding(world, tmp_path, monkeypatch):
    loads = []
    real_load = ImageFile.ImageFile.load

    def spy(self):
        loads.append(self.size)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    # Beyond Pillow's own limit (10^10 pixels) and below it but beyond our max_pixels (49M > 40M).
    under_pillow = tmp_path / "bomb7000.png"
    under_pillow.write_bytes(hostile.png_bytes(7000, 7000))
    for path, phrase in ((world["source"] / "train/shoes/bomb.png", "decompression bomb"),
                         (under_pillow, "decompression bomb: declares 7000x7000")):
        with pytest.raises(img.BadImage) as caught:  # fast because nothing is decoded: the spy's list stays empty
            img.open_image(path, max_pixels=40_000_000)
        assert str(caught.value).startswith(phrase), str(caught.value)
    assert loads == [], f"pixels were decoded for {loads}"
    # The control: the same file under a larger max_pixels is decoded (and is then found broken).
    with pytest.raises(img.BadImage, match="truncated or corrupt"):
        img.open_image(under_pillow, max_pixels=50_000_000)
    assert loads == [(7000, 7000)]


MEMORY_PROBE = textwrap.dedent(
    """
    import json, resource, sys
    from pathlib import Path
    from PIL import Image
    from productstudio.data import images as img

    path, how = Path(sys.argv[1]), sys.argv[2]
    vm = lambda: next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmSize:"))
    # From here on the process may map at most 64 MiB more: a decoded 7000x7000 RGB image needs 196 MB.
    resource.setrlimit(resource.RLIMIT_AS, (vm() + 64 * 2**20, resource.RLIM_INFINITY))
    try:
        if how == "pillow":
            Image.open(path).load()
        else:
            img.open_image(path, max_pixels=40_000_000)
        outcome = "no error"
    except BaseException as error:
        outcome = f"{type(error).__name__}: {error}"
    print(json.dumps(outcome))
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs RLIMIT_AS and /proc")
def test_open_image_never_allocates_the_declared_size(tmp_path):
    bomb = tmp_path / "bomb7000.png"
    bomb.write_bytes(hostile.png_bytes(7000, 7000))

    def probe(how: str) -> str:
        done = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(bomb), how], capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    # Control: plain Pillow tries to allocate the declared size and runs out of the address space we allowed.
    assert probe("pillow").startswith("MemoryError")
    assert probe("open_image") == "BadImage: decompression bomb: declares 7000x7000 = 49,000,000 pixels > max_pixels 40,000,000"


def _cli() -> Path:
    for candidate in (REPO_ROOT / ".venv" / "bin" / "productstudio", Path(sys.executable).parent / "productstudio"):
        if candidate.exists():
            return candidate
    pytest.fail("no productstudio console script next to the test interpreter or in .venv")


def test_cli_validate_exit_codes_and_summary(world, tmp_path):
    strict = tmp_path / "defaults.yaml"
    strict.write_text("validate: {}\n")  # the default thresholds
    relaxed = tmp_path / "params.yaml"
    relaxed.write_text(yaml.safe_dump({"validate": {"max_leak_fraction": LEAK_ALLOWANCE}}))

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(_cli()), "validate", "--raw", str(world["raw"]), *args], cwd=tmp_path, capture_output=True, text=True, timeout=300)

    done = run("--params", str(strict), "--out", str(tmp_path / "v-strict"))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert "validation FAILED" in done.stderr
    assert "FAIL every file readable and usable" in done.stderr
    assert "FAIL no (near-)identical content across splits" in done.stderr
    assert "quarantined train/hat/empty.jpg: empty file (0 bytes)" in done.stderr
    assert "hint: --quarantine" in done.stderr
    assert json.loads((tmp_path / "v-strict" / REPORT).read_text())["success"] is False

    # params.yaml in the working directory is the default --params.
    metrics = tmp_path / "metrics.json"
    done = run("--out", str(tmp_path / "v-pass"), "--quarantine", "--metrics", str(metrics))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert done.stdout.startswith("validation PASSED: ")
    assert "FAIL" not in done.stdout
    counts = json.loads(metrics.read_text())
    assert counts["quarantined"] == sum(hostile.expected_status(k) == "quarantined" for k in world["kinds"].values())
    assert counts["leaking_across_splits"] == 2
