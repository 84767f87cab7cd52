"""The studio batch on real clothing photos and hostile files: checked exports with provenance, refusals and
quarantine with reasons, sources untouched, a contact sheet, resume, and the same bytes again."""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from productstudio.cli import main
from productstudio.editing.provenance import read_provenance
from tests.conftest import REPO_ROOT
from tests.integration.hostile import png_bytes

pytestmark = pytest.mark.slow
PRESETS = "amazon-main,transparent-png,instagram-4x5"


def _digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def batch(tmp_path_factory, clothing_dir):
    root = tmp_path_factory.mktemp("studio")
    photos = root / "photos"
    for category in ("t-shirt", "shoes", "hat"):
        (photos / category).mkdir(parents=True)
        for source in sorted((clothing_dir / "test" / category).glob("*.jpg"))[:2]:
            shutil.copyfile(source, photos / category / source.name)
    (photos / "bad").mkdir()
    (photos / "bad" / "truncated.jpg").write_bytes((photos / "hat").glob("*.jpg").__next__().read_bytes()[:300])
    (photos / "bad" / "notes.txt").write_text("not a photo")
    (photos / "bad" / "bomb.png").write_bytes(png_bytes(100_000, 100_000))
    (photos / "bad" / "<script>.jpg").write_bytes(b"\xff\xd8\xffgarbage")
    Image.new("RGB", (400, 500), (128, 128, 128)).save(photos / "bad" / "no-product.jpg")
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    before = _digest(photos)
    out = root / "out"
    args = ["edit", "studio", "--params", str(root / "params.yaml"), "--in", str(photos), "--out", str(out),
            "--preset", PRESETS, "--no-mlflow"]
    assert main(args) == 0
    return {"photos": photos, "out": out, "before": before, "args": args,
            "report": json.loads((out / "report.json").read_text())}


def test_sources_are_never_modified(batch):
    assert _digest(batch["photos"]) == batch["before"]


def test_every_file_is_exported_refused_or_quarantined_with_a_reason(batch):
    rows = {row["source"]: row for row in batch["report"]["photos"]}
    assert len(rows) == 11  # nothing silently dropped
    for name in ("bad/truncated.jpg", "bad/notes.txt", "bad/bomb.png", "bad/<script>.jpg"):
        assert rows[name]["status"] == "quarantined" and rows[name]["reason"], name
    assert "decompression bomb" in rows["bad/bomb.png"]["reason"]
    assert rows["bad/no-product.jpg"]["status"] == "refused" and rows["bad/no-product.jpg"]["reason"]
    quarantine = (batch["out"] / "quarantine.tsv").read_text().splitlines()
    assert len(quarantine) == 1 + 4 and all("\t" in line for line in quarantine)
    exported = [row for row in rows.values() if row["status"] == "exported"]
    assert len(exported) >= 5, [(r["source"], r["reason"]) for r in rows.values()]


def test_exports_meet_their_preset_and_carry_provenance(batch):
    out = batch["out"]
    sizes = {"amazon-main": (1600, 1600), "transparent-png": (1024, 1024), "instagram-4x5": (1080, 1350)}
    files = [(e["preset"], out / e["file"]) for r in batch["report"]["photos"] for e in r["exports"] if e["file"]]
    assert files and all(path.is_file() for _, path in files)
    for preset, path in files:
        image = Image.open(path)
        assert image.size == sizes[preset], path
        pixels = np.asarray(image.convert("RGBA"))
        corners = pixels[[0, 0, -1, -1], [0, -1, 0, -1]]
        if preset == "transparent-png":
            assert (corners[:, 3] == 0).all()
        else:
            assert (corners[:, :3] == 255).all()
        provenance = json.dumps(read_provenance(path.read_bytes()))
        assert "compositeWithTrainedAlgorithmicMedia" in provenance and "u2netp" in provenance
    # What failed a rule was not written.
    for row in batch["report"]["photos"]:
        for export in row["exports"]:
            assert (export["file"] is not None) == export["passed"]
            checked = bool(export["checks"]) and all(check["ok"] for check in export["checks"].values())
            assert export["passed"] == (export["reason"] is None and checked)


def test_contact_sheet_lists_every_photo_escaped(batch):
    html = (batch["out"] / "index.html").read_text()
    assert "<script>.jpg" not in html and "&lt;script&gt;.jpg" in html
    assert "no-product.jpg" in html and "t-shirt/" in html
    assert json.loads((batch["out"] / "metrics.json").read_text())["quarantined_files"] == 4


def test_a_second_run_resumes_and_writes_the_same_bytes(batch):
    before = _digest(batch["out"] / "amazon-main")
    assert main(batch["args"]) == 0
    report = json.loads((batch["out"] / "report.json").read_text())
    assert report["resumed"] == 11
    assert _digest(batch["out"] / "amazon-main") == before


def test_sign_adds_a_trusted_c2pa_manifest_to_every_export(batch, tmp_path):
    from productstudio.editing.content_credentials import local_ca_pem, read_manifest

    out = tmp_path / "signed"
    args = ["edit", "studio", "--params", batch["args"][3], "--in", str(batch["photos"] / "shoes"), "--out",
            str(out), "--preset", "instagram-4x5,transparent-png", "--sign", "--no-mlflow"]
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["c2pa_signed"] is True and batch["report"]["c2pa_signed"] is False
    files = [e["file"] for row in report["photos"] for e in row["exports"] if e.get("file")]
    assert len(files) >= 2
    for name in files:
        data = (out / name).read_bytes()
        manifest = read_manifest(data, trust_anchors=local_ca_pem())
        assert manifest["state"] == "Trusted", (name, manifest["codes"])
        assert manifest["actions"][0]["parameters"]["preset"] == name.split("/")[0]
        assert read_provenance(data)["preset"] == name.split("/")[0]  # the XMP is still there
