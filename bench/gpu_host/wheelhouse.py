"""Turn the distributions installed in a venv into wheels: a site wheelhouse for pip.

    python3 wheelhouse.py SITE_PACKAGES OUT_DIR [--skip NAME ...]

The GPU test machine has torch 2.11.0 and its CUDA libraries installed (``/opt/torch/.venv``),
not as wheel files, and no network. An air-gapped site serves pip a mirror of wheels; this
makes that mirror from what is installed: a wheel is a zip of the files a distribution's
``RECORD`` lists plus its ``.dist-info``. Stored, not compressed (the CUDA libraries are
gigabytes: deflating them would cost minutes for nothing on a local disk). Files outside
site-packages (``../../bin`` scripts: pip makes console scripts again from
``entry_points.txt``) and bytecode are left out; ``RECORD`` is written anew for what is in.
Standard library only (it runs on the device's Python 3.12).
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import re
import sys
import zipfile
from concurrent.futures import ProcessPoolExecutor
from email.parser import HeaderParser
from pathlib import Path

# Written by the installer, not part of a wheel.
INSTALLER_FILES = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json", "uv_cache.json"}


def _tags(wheel_file: Path) -> str:
    """The compressed tag set of a WHEEL file's ``Tag:`` lines (py3-none-any if it has none)."""
    tags = []
    if wheel_file.is_file():
        meta = HeaderParser().parsestr(wheel_file.read_text(encoding="utf-8"))
        tags = [t.strip().split("-") for t in meta.get_all("Tag") or []]
    if not tags:
        return "py3-none-any"
    parts = []
    for i in range(3):
        seen: list[str] = []
        for t in tags:
            if t[i] not in seen:
                seen.append(t[i])
        parts.append(".".join(seen))
    return "-".join(parts)


def build(args: tuple[str, str]) -> str:
    dist_info, out = Path(args[0]), Path(args[1])
    site = dist_info.parent
    meta = HeaderParser().parsestr((dist_info / "METADATA").read_text(encoding="utf-8"))
    name, version = meta["Name"], meta["Version"]
    safe = re.sub(r"[-_.]+", "_", name).lower()
    whl = out / f"{safe}-{version}-{_tags(dist_info / 'WHEEL')}.whl"
    record = dist_info / "RECORD"
    if not record.is_file():
        return f"SKIP {name} {version}: no RECORD"
    rows = list(csv.reader(record.read_text(encoding="utf-8").splitlines()))
    files = []
    for row in rows:
        if not row:
            continue
        rel = row[0]
        if rel.startswith(("..", "/")) or "__pycache__/" in rel or rel.endswith(".pyc"):
            continue
        p = site / rel
        if rel.startswith(dist_info.name + "/") and p.name in INSTALLER_FILES:
            continue
        if p.is_file():
            files.append(rel)
    new_record: list[list[str]] = []
    tmp = whl.with_suffix(".part")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as z:
        for rel in files:
            data = (site / rel).read_bytes()
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            new_record.append([rel, f"sha256={digest.decode()}", str(len(data))])
            info = zipfile.ZipInfo(rel, date_time=(2026, 1, 1, 0, 0, 0))
            # Keep the mode: pip gives installed files the wheel's executable bits (ptxas).
            info.external_attr = ((site / rel).stat().st_mode & 0xFFFF) << 16
            z.writestr(info, data)
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(
            [*new_record, [f"{dist_info.name}/RECORD", "", ""]]
        )
        z.writestr(f"{dist_info.name}/RECORD", buf.getvalue())
    tmp.rename(whl)
    return f"OK {whl.name} {len(files)} files"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("site", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--skip", nargs="*", default=[], help="distribution names to leave out")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    skip = {re.sub(r"[-_.]+", "-", s).lower() for s in args.skip}
    todo = []
    for d in sorted(args.site.glob("*.dist-info")):
        name = re.sub(r"[-_.]+", "-", d.name.rsplit("-", 1)[0]).lower()
        if name not in skip and (d / "METADATA").is_file():
            todo.append((str(d), str(args.out)))
    bad = 0
    with ProcessPoolExecutor() as pool:
        for line in pool.map(build, todo):
            bad += line.startswith("SKIP")
            print(line)
    print(f"{len(todo)} distributions, {bad} skipped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
