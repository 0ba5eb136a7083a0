"""Metadata-only stand-ins for vLLM 0.25.0's requirements that this run cannot carry.

    python3 stubs.py make WHEELHOUSE NAME==VERSION ...   # a stub only where no real wheel is
    python3 stubs.py resolve WHEELHOUSE PIP              # pip's own resolution; stub what it lacks

vLLM 0.25.0 declares ~200 distributions, among them gigabytes of kernels for other model kinds
and cards (flashinfer's cubins, CUTLASS DSL, tilelang, the CUDA toolkit wheels, video codecs).
The GPU test machine has no network and a call carries 64 MiB, so those are replaced by empty
wheels of the same name and version (no files, no requirements): pip's resolver still runs on
everything else, and the AWQ-on-Hopper path that these services take never imports them (the
same set ran by hand before: ../shared/gpu/README.md). Every stub is listed in the run's log.
``resolve`` repeats ``pip install --dry-run --no-index`` against the wheelhouse and adds a stub
for each requirement that no wheel satisfies, so the list is what pip itself found missing.
"""

from __future__ import annotations

import base64
import hashlib
import re
import subprocess
import sys
import zipfile
from pathlib import Path

MISSING = re.compile(r"No matching distribution found for ([A-Za-z0-9_.\-]+)\s*([^\s;]*)")


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def have(wheelhouse: Path) -> set[str]:
    """Names with a real (not stub) wheel in the wheelhouse."""
    stubs = set(_listed(wheelhouse))
    return {norm(p.name.split("-")[0]) for p in wheelhouse.glob("*.whl") if p.name not in stubs}


def _listed(wheelhouse: Path) -> list[str]:
    """The stubs made so far, kept beside the wheelhouse (the deploy pushes its files only)."""
    log = wheelhouse.parent / "stubs.txt"
    return log.read_text().split() if log.is_file() else []


def stub(wheelhouse: Path, name: str, version: str) -> Path:
    safe = re.sub(r"[-_.]+", "_", name).lower()
    info = f"{safe}-{version}.dist-info"
    files = {
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        "Summary: llmhost bench stub: metadata only (not carried to the GPU test machine)\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: llmhost-bench\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    record.append(f"{info}/RECORD,,")
    out = wheelhouse / f"{safe}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(out, "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
        z.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    with (wheelhouse.parent / "stubs.txt").open("a") as log:
        log.write(out.name + "\n")
    return out


def version_for(spec: str) -> str:
    """A version that satisfies the simple specifiers pip prints (==x, >=x, ~=x, <x...)."""
    exact = re.search(r"===?\s*([0-9][^,]*)", spec)
    if exact:
        return exact.group(1).strip()
    low = re.search(r"(?:>=|~=)\s*([0-9][^,]*)", spec)
    return low.group(1).strip() if low else "0.0.1"


def make(wheelhouse: Path, pins: list[str]) -> None:
    real = have(wheelhouse)
    for pin in pins:
        name, _, version = pin.partition("==")
        if norm(name) in real:
            print(f"real wheel kept: {name}")
        else:
            print(f"stub: {stub(wheelhouse, name, version).name}")


def resolve(wheelhouse: Path, pip: str, requirement: str = "vllm==0.25.0") -> int:
    for _ in range(40):
        cmd = [pip, "install", "--dry-run", "--no-index", "--find-links", str(wheelhouse),
               "--ignore-installed", "--report", str(wheelhouse.parent / "resolve.json"),
               "-q", requirement]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode == 0:
            print("resolved")
            return 0
        found = MISSING.search(proc.stderr)
        if not found:
            print(proc.stderr[-3000:])
            return 1
        name, spec = found.group(1), found.group(2)
        made = stub(wheelhouse, name, version_for(spec))
        print(f"pip found no wheel for {name}{spec}: stub {made.name}")
    return 1


def main() -> int:
    verb, wheelhouse = sys.argv[1], Path(sys.argv[2])
    if verb == "make":
        make(wheelhouse, sys.argv[3:])
        return 0
    return resolve(wheelhouse, sys.argv[3])


if __name__ == "__main__":
    sys.exit(main())
