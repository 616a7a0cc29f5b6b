"""The big corpus's raw sources: Debian packages and one npm package, fetched and unpacked.

Every source is pinned to the version the reference build used (`data/corpus-manifest.json` records
them). A Debian mirror drops old versions after a point release; then the current one is taken with a
warning, and the manifest check says which shards changed. The npm tarball is checked against its
registry integrity hash, so what is unpacked is exactly the published package.

Fetched files are kept in a cache folder (`--cache`), so a second build reads no network.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

from lab.errors import LabError


@dataclass(frozen=True)
class Package:
    name: str
    registry: str          # "debian" or "npm"
    version: str           # the version of the reference build
    licence: str
    what: str              # what the corpus takes from it
    integrity: str = ""    # npm: the registry's sha512 of the tarball


PYTHON_DOC = Package("python3.11-doc", "debian", "3.11.2-6+deb12u9", "PSF License Agreement",
                     "the reStructuredText sources of the Python 3.11 documentation")
DJANGO_DOC = Package("python-django-doc", "debian", "3:3.2.25-0+deb12u7", "BSD-3-Clause (Django)",
                     "the Django 3.2 documentation (HTML, main text only)")
SPHINX_DOC = Package("sphinx-doc", "debian", "5.3.0-4", "BSD-2-Clause (Sphinx)",
                     "the reStructuredText sources of the Sphinx 5.3 documentation")
POSTGRESQL_DOC = Package("postgresql-doc-15", "debian", "15.20-0+deb12u1", "PostgreSQL Licence",
                         "the PostgreSQL 15 documentation (HTML, main text only)")
GIT_DOC = Package("git-doc", "debian", "1:2.39.5-0+deb12u3", "GPL-2.0 (Git)",
                  "Git's manual pages and guides in AsciiDoc")
CHINESE_POETRY = Package(
    "chinese-poetry", "npm", "2.0.1", "MIT (the collection); the poems are classical works in the public domain",
    "Tang poems (全唐诗), Song ci (全宋词) and a hash-chosen share of Song poems (全宋诗), "
    "converted to simplified characters",
    integrity="sha512-KtYARvV7CWNtax0na9+Jn6PlhGgSoid7PWyDzXI4KsCEm2odZcqEQyval5koaLygZnM/EQ3lfJ//25K8p3uHNg==")

PACKAGES = (PYTHON_DOC, SPHINX_DOC, DJANGO_DOC, POSTGRESQL_DOC, GIT_DOC, CHINESE_POETRY)


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    if shutil.which(command[0]) is None:
        raise LabError(f"{command[0]}: not found; the corpus build needs it to fetch "
                       f"{command[2] if len(command) > 2 else 'its sources'}")
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True)


def _debian(package: Package, cache: Path) -> tuple[Path, str]:
    root = cache / f"{package.name}.root"
    stamp = root / ".version"
    # A cached package of another version (fetched when the index was old) is fetched again: the pinned
    # version may be there now.
    if stamp.is_file() and stamp.read_text() == package.version:
        return root, stamp.read_text()
    download = cache / f"{package.name}.download"
    shutil.rmtree(download, ignore_errors=True)
    download.mkdir(parents=True)
    result = _run(["apt-get", "download", f"{package.name}={package.version}"], download)
    if result.returncode != 0:
        result = _run(["apt-get", "download", package.name], download)
        if result.returncode != 0:
            raise LabError(f"apt-get download {package.name}: {result.stderr.strip().splitlines()[-1:]} "
                           "(run apt-get update, or give --cache a folder holding the packages)")
    deb = next(download.glob("*.deb"))
    version = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True,
                             check=True).stdout.strip()
    if version != package.version:
        print(f"warning: {package.name} {version}; the reference build used {package.version} "
              "(an old package index? run apt-get update as root, then build again)", file=sys.stderr)
    shutil.rmtree(root, ignore_errors=True)
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    stamp.write_text(version)
    shutil.rmtree(download)
    return root, version


def _npm(package: Package, cache: Path) -> tuple[Path, str]:
    root = cache / f"{package.name}.root"
    stamp = root / ".version"
    if stamp.is_file() and stamp.read_text() == package.version:
        return root / "package", stamp.read_text()
    download = cache / f"{package.name}.download"
    shutil.rmtree(download, ignore_errors=True)
    download.mkdir(parents=True)
    result = _run(["npm", "pack", f"{package.name}@{package.version}", "--silent"], download)
    if result.returncode != 0:
        raise LabError(f"npm pack {package.name}@{package.version}: {result.stderr.strip()[-300:]}")
    tarball = next(download.glob("*.tgz"))
    digest = "sha512-" + base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()).decode()
    if digest != package.integrity:
        raise LabError(f"{tarball.name}: integrity {digest} differs from the registry's {package.integrity}")
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    with tarfile.open(tarball) as archive:
        archive.extractall(root, filter="data")  # no absolute paths, links or devices out of the archive
    stamp.write_text(package.version)
    shutil.rmtree(download)
    return root / "package", package.version


def fetch(package: Package, cache: Path) -> tuple[Path, str]:
    """(the unpacked package's root folder, its version), fetching into `cache` when not there yet."""
    cache.mkdir(parents=True, exist_ok=True)
    return (_debian if package.registry == "debian" else _npm)(package, cache)
