"""Download, here, the wheels the GPU check installs on a bare CUDA machine (which cannot reach a
package index): requirements.txt and every dependency of them, recursively, that the machine's
image (present.txt) lacks, for CPython 3.12 on Linux x86_64, into bench/gpu/wheels/ (ignored by git).

    python bench/gpu/prepare.py                 # ~25 MiB; the device tool carries at most 64 MiB

A dependency installed here at a version that satisfies the requirement is taken at that version
(the combination dftlab is tested with); any other at the newest version that satisfies it. A
package published only as a source archive is built here into a wheel, which must be pure Python.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

HERE = Path(__file__).resolve().parent
PYTHON = "3.12"
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64", "linux_x86_64"]
MARKERS = {"python_version": PYTHON, "python_full_version": f"{PYTHON}.3", "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
           "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}


def names(path: Path) -> list[str]:
    text = "\n".join(line.split("#")[0] for line in path.read_text().splitlines())
    return text.split()


def pinned(req: Requirement) -> str:
    """The requirement as pip is asked for it: this environment's version when it satisfies it."""
    try:
        version = importlib.metadata.version(req.name)
    except importlib.metadata.PackageNotFoundError:
        version = None
    if version is not None and req.specifier.contains(version, prereleases=True):
        return f"{req.name}=={version}"
    return f"{req.name}{req.specifier}"


def fetch(spec: str, out: Path) -> Path:
    """One wheel (no dependencies) for the GPU machine; built here when only a source archive exists."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
               PYTHON, "--implementation", "cp", *(f"--platform={p}" for p in PLATFORMS), "-d", tmp, spec]
        if subprocess.run(cmd, check=False, capture_output=True, text=True).returncode != 0:
            build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp, spec]
            done = subprocess.run(build, check=False, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"no wheel for {spec}:\n{done.stderr[-2000:]}")
        (wheel,) = Path(tmp).glob("*.whl")
        if not (wheel.name.endswith("-none-any.whl") or "x86_64" in wheel.name):
            raise SystemExit(f"{spec}: built {wheel.name}, not a wheel the GPU machine can install")
        target = out / wheel.name
        target.write_bytes(wheel.read_bytes())
    return target


def requires(wheel: Path) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        text = z.read(meta).decode()
    reqs = [Requirement(line.split(":", 1)[1].strip()) for line in text.splitlines()
            if line.startswith("Requires-Dist:")]
    return [r for r in reqs if r.marker is None or r.marker.evaluate(MARKERS)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(HERE / "wheels"))
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.whl"):  # one version of each package: two would stop the install
        old.unlink()
    present = {canonicalize_name(n) for n in names(HERE / "present.txt")}
    queue = [Requirement(s) for s in names(HERE / "requirements.txt")]
    chosen: dict[str, str] = {}
    while queue:
        req = queue.pop(0)
        name = canonicalize_name(req.name)
        if name in present:
            continue
        if name in chosen:
            version = chosen[name]
            if not req.specifier.contains(version, prereleases=True):
                print(f"warning: {name} {version} does not satisfy {req} (asked for by another package)")
            continue
        wheel = fetch(pinned(req), out)
        chosen[name] = re.split(r"-", wheel.name)[1]
        print(f"{wheel.name}  ({wheel.stat().st_size / 2**20:.1f} MiB)")
        # the extras asked for (e.g. math-verify[antlr4_9_3]) are not needed by the check
        queue.extend(requires(wheel))
    total = sum(w.stat().st_size for w in out.glob("*.whl"))
    print(f"{len(chosen)} wheels, {total / 2**20:.1f} MiB in {out}")


if __name__ == "__main__":
    main()
