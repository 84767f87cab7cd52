"""What a merchant looks at after a batch: a labelled before/after picture and an HTML contact sheet.

    before_after_png(source, [("amazon-main", export), ...], "sheet.png")   # one PNG, source then each export
    write_contact_sheet(report, out_dir, source_root)                      # -> out_dir/index.html

``write_contact_sheet`` reads the batch report (``editing.studio``'s report.json): a summary (photos, exported,
refused, quarantined, pass rate per preset) and one row per photo: the source's thumbnail, each export's thumbnail
(linked to the exported file) with its check results in green or red, and a refused or quarantined photo's one-line
reason. The page is self-contained: inline CSS, no JavaScript (a CSP forbids any), no external URL; thumbnails are
small JPEG files under out_dir/thumbs/. A row's own "thumb" entries are used when those files exist; otherwise the
thumbnail is made here from the source (under ``source_root``) or the export (under ``out_dir``).

File names are untrusted: every string from the report is HTML-escaped, every link is a percent-encoded relative
path, and a path that is absolute, climbs out with "..", or resolves outside its folder is neither linked nor opened.
Quarantined files are never opened (they are bad or hostile by definition).
"""

from __future__ import annotations

import hashlib
import html
import math
from pathlib import Path, PurePosixPath
from urllib.parse import quote

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from productstudio.data.images import BadImage, open_image, upright

FONT_PATHS = ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/dejavu/DejaVuSans.ttf")
THUMB_SIDE = 256  # pixels of a thumbnail's longest side (shown at 160 CSS px, sharp on high-density screens)
THUMB_MAX_PIXELS = 100_000_000  # a source bigger than this gets no thumbnail rather than a memory spike
CELL_BACKGROUND = (238, 238, 238)


# --- pictures ---------------------------------------------------------------------------------------------------

def on_checkerboard(image: Image.Image, tile: int = 16) -> Image.Image:
    """RGB for display: a transparent image over a grey checkerboard, so its transparency stays visible."""
    if "A" not in image.getbands() and "transparency" not in image.info:
        return image.convert("RGB")
    rgba = image.convert("RGBA")
    tiles = (np.indices((rgba.height, rgba.width)) // tile).sum(axis=0) % 2
    board = Image.fromarray(np.where(tiles[..., None] == 1, 204, 255).repeat(3, axis=2).astype(np.uint8))
    board.paste(rgba, mask=rgba.getchannel("A"))
    return board


def label_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    for path in FONT_PATHS:
        if Path(path).is_file():
            return ImageFont.truetype(path, size)
    return ImageFont.load_default(size)


def fit_text(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """``text``, shortened with an ellipsis until it fits ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def before_after_png(before: Image.Image, afters: list[tuple[str, Image.Image]], out_path: str | Path,
                     cell: int = 256) -> Path:
    """The source and each (label, export) side by side in ``cell``-pixel squares, each labelled below with its
    name and size; written as PNG."""
    pad, line = max(4, cell // 32), max(14, cell // 12)
    font, small = label_font(max(10, line - 3)), label_font(max(9, line - 6))
    panels = [("source", before), *afters]
    sheet = Image.new("RGB", (pad + len(panels) * (cell + pad), pad + cell + 2 * line + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for index, (label, image) in enumerate(panels):
        x = pad + index * (cell + pad)
        shown = on_checkerboard(image)
        shown.thumbnail((cell, cell), Image.LANCZOS)
        left, top = x + (cell - shown.width) // 2, pad + (cell - shown.height) // 2
        draw.rectangle((x, pad, x + cell - 1, pad + cell - 1), fill=CELL_BACKGROUND)
        sheet.paste(shown, (left, top))
        # A hairline around the image: a white canvas must not melt into the page, its margins must show.
        draw.rectangle((left - 1, top - 1, left + shown.width, top + shown.height), outline=(150, 150, 150))
        draw.text((x + cell / 2, pad + cell + line / 2), fit_text(draw, label, font, cell), fill="black", font=font,
                  anchor="mm")
        draw.text((x + cell / 2, pad + cell + 1.5 * line), f"{image.width}x{image.height}", fill=(90, 90, 90),
                  font=small, anchor="mm")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out_path, format="PNG")
    return out_path


# --- paths from the report (untrusted) ----------------------------------------------------------------------------

def inside(root: Path, relative: str | None) -> Path | None:
    """``root / relative`` when ``relative`` is a plain relative path that stays inside ``root``; else None."""
    if not relative or not isinstance(relative, str) or "\x00" in relative:
        return None
    parts = PurePosixPath(relative)
    if parts.is_absolute() or ".." in parts.parts or "\\" in relative:
        return None
    path = root / parts
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:  # a symlink that leads elsewhere
        return None
    return path


def href(relative: str) -> str:
    """A relative path as an attribute value: percent-encoded (so '#', '?', ':' stay part of the name), escaped."""
    return html.escape(quote(relative, safe="/"), quote=True)


def write_thumb(image: Image.Image, path: Path) -> None:
    shown = on_checkerboard(image)
    shown.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.LANCZOS)
    path.parent.mkdir(parents=True, exist_ok=True)
    shown.save(path, format="JPEG", quality=82)


def thumbnail(out_dir: Path, given: str | None, image_path: Path | None, name: str, upright_photo: bool) -> str | None:
    """The thumbnail's path relative to ``out_dir``: the report's own when it exists, else one made here from
    ``image_path`` (named by a hash, so no untrusted name becomes a file name). None when there is nothing to show."""
    if inside(out_dir, given) is not None and (out_dir / given).is_file():
        return given
    if image_path is None or not image_path.is_file():
        return None
    stat = image_path.stat()  # in the name too: a rerun that rewrote the file gets a fresh thumbnail
    key = f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}"
    relative = f"thumbs/sheet/{hashlib.sha256(key.encode()).hexdigest()[:20]}.jpg"
    target = out_dir / relative
    if not target.is_file():
        try:
            with open_image(image_path, THUMB_MAX_PIXELS) as image:
                write_thumb(upright(image) if upright_photo else image, target)
        except BadImage:
            return None
    return relative


# --- the page -----------------------------------------------------------------------------------------------------

CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 20px; } table { border-collapse: collapse; }
.summary td, .summary th { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }
.summary th:first-child, .summary td:first-child { text-align: left; }
.photo { display: flex; gap: 16px; border-top: 1px solid #ddd; padding: 12px 0; align-items: flex-start; }
.cell { width: 170px; } .cell img { max-width: 160px; max-height: 160px; background: #eee; display: block; }
.none { width: 160px; height: 100px; background: #eee; color: #888; display: flex; align-items: center;
        justify-content: center; }
.name { font-size: 12px; word-break: break-all; }
.status { display: inline-block; padding: 1px 8px; border-radius: 8px; color: white; font-size: 12px; }
.exported { background: #2e7d32; } .refused { background: #c62828; } .quarantined { background: #6d4c41; }
.reason { color: #c62828; font-size: 12px; }
.checks { list-style: none; padding: 0; margin: 4px 0; font-size: 12px; }
.ok { color: #2e7d32; } .fail { color: #c62828; font-weight: bold; }
.meta { color: #666; font-size: 12px; }
"""
# No script can run, whatever a file name manages to smuggle in; images and inline styles still load.
CSP = "script-src 'none'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-src 'none'"


def text(value) -> str:
    return html.escape(str(value), quote=True)


def listed(value) -> str:
    return ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def shown_value(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):
        return "x".join(shown_value(v) for v in value) if len(value) == 2 else str(value)
    return str(value)


def image_cell(thumb: str | None, caption: str, details: str, link: str | None = None) -> str:
    """One column of a row: the thumbnail (linked to the file when given), its caption, then ``details`` (HTML)."""
    picture = (f'<img src="{href(thumb)}" alt="{text(caption)}">' if thumb
               else '<div class="none">no preview</div>')
    if link:
        picture = f'<a href="{href(link)}">{picture}</a>'
    return f'<div class="cell">{picture}<div class="name">{text(caption)}</div>{details}</div>'


def checks_list(checks: dict) -> str:
    items = []
    for rule, check in (checks or {}).items():
        ok = bool(check.get("ok")) if isinstance(check, dict) else False
        detail = check.get("rule", "") if isinstance(check, dict) else ""
        value = shown_value(check.get("value", "")) if isinstance(check, dict) else ""
        mark = "✓" if ok else "✗"
        items.append(f'<li class="{"ok" if ok else "fail"}" title="{text(detail)}">{mark} {text(rule)}'
                     f' <span class="meta">{text(value)}</span></li>')
    return f'<ul class="checks">{"".join(items)}</ul>'


def summary_table(summary: dict) -> str:
    usable = max(1, summary.get("photos", 0) - summary.get("quarantined", 0))
    counts = "".join(f"<tr><td>{text(label)}</td><td>{text(summary.get(key, 0))}</td></tr>" for key, label in
                     (("photos", "photos"), ("exported", "exported (at least one preset)"),
                      ("refused", "refused"), ("quarantined", "quarantined (not usable images)")))
    presets = "".join(
        f"<tr><td>{text(name)}</td><td>{text(c.get('exported', 0))}</td><td>{text(c.get('passed', 0))}</td>"
        f"<td>{text(c.get('refused', 0))}</td><td>{100 * c.get('passed', 0) / usable:.1f} %</td></tr>"
        for name, c in (summary.get("presets") or {}).items())
    return (f'<table class="summary">{counts}</table><h2>Presets</h2><table class="summary"><tr><th>preset</th>'
            f"<th>exported</th><th>passed</th><th>refused</th><th>pass rate (of usable photos)</th></tr>"
            f"{presets}</table>")


def photo_row(row: dict, out_dir: Path, source_root: Path | None) -> str:
    source = str(row.get("source", ""))
    status = row.get("status") if row.get("status") in ("exported", "refused", "quarantined") else "refused"
    cells = []
    if status == "quarantined":
        source_thumb = None  # never decode a quarantined file
    else:
        source_path = inside(source_root, source) if source_root is not None else None
        source_thumb = thumbnail(out_dir, row.get("thumb"), source_path, "source:" + source, upright_photo=True)
    head = (f'<span class="status {status}">{text(status)}</span>'
            + (f'<div class="reason">{text(row["reason"])}</div>' if row.get("reason") else ""))
    cutout = row.get("cutout") or {}
    if cutout:
        head += (f'<div class="meta">foreground {shown_value(cutout.get("foreground_fraction", ""))}, '
                 f'edges touched {text(cutout.get("edges_touched", ""))}, '
                 f'uncertain {shown_value(cutout.get("uncertain_fraction", ""))}</div>')
    cells.append(image_cell(source_thumb, source, head))
    for export in row.get("exports") or []:
        preset = str(export.get("preset", ""))
        file_path = inside(out_dir, export.get("file"))
        link = export["file"] if file_path is not None and file_path.is_file() else None
        thumb = thumbnail(out_dir, export.get("thumb"), file_path, f"export:{preset}:{source}", upright_photo=False)
        passed = bool(export.get("passed"))
        verdict = f'<span class="status {"exported" if passed else "refused"}">{"passed" if passed else "refused"}'
        verdict += "</span>"
        upscale = export.get("upscale")
        detail = f'<div class="meta">upscale {shown_value(upscale)}x</div>' if upscale is not None else ""
        reason = f'<div class="reason">{text(export["reason"])}</div>' if export.get("reason") else ""
        cells.append(image_cell(thumb, preset, verdict + detail + reason + checks_list(export.get("checks")), link))
    return f'<div class="photo">{"".join(cells)}</div>'


def write_contact_sheet(report: dict, out_dir: str | Path, source_root: str | Path | None = None) -> Path:
    """The batch report as out_dir/index.html (thumbnails under out_dir/thumbs/); returns the page's path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    source_root = Path(source_root) if source_root is not None else None
    summary = report.get("summary") or {}
    meta = " · ".join(f"{label}: {text(listed(report[key]))}" for key, label in
                      (("presets", "presets"), ("weights", "weights"), ("settings_key", "settings")) if report.get(key))
    rows = "\n".join(photo_row(row, out_dir, source_root) for row in report.get("photos") or [])
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>Product Studio contact sheet</title><style>{CSS}</style></head><body>"
            f"<h1>Product Studio: studio shots</h1><p class=\"meta\">{meta}</p>{summary_table(summary)}"
            f"<h2>Photos</h2>\n{rows}\n</body></html>\n")
    index = out_dir / "index.html"
    partial = index.with_name("index.html.partial")
    partial.write_text(page, encoding="utf-8")
    partial.replace(index)
    return index
