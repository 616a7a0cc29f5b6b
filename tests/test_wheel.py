"""The package as users install it: a wheel built from the checkout's files (tracked or new, not ignored), installed into a fresh virtual
environment outside the checkout, carries the shipped data, recipes and dashboard, and its console
script trains the tiny recipe by name."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.fail("the wheel test builds from the tracked files of a git checkout")
    src = tmp_path_factory.mktemp("src")
    tracked = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True, check=True).stdout
    for name in filter(None, tracked.decode().split("\0")):
        if (REPO / name).is_file():  # a file deleted in the working tree but not yet in the index is skipped
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
                    str(src)], check=True, capture_output=True)
    (found,) = out.glob("efficientscale_lab-*.whl")
    return found


def test_the_wheel_carries_what_the_lab_ships(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for shipped in ("app.py", ".streamlit/config.toml", "LICENSE", "recipes/tiny.yaml", "data/corpus.jsonl",
                    "data/tokenizer.json", "data/runs/efficientscale-tiny/metrics.jsonl",
                    "data/sources/source-deep/model.safetensors", "notebooks/01_fpi_symmetry.py"):
        assert f"lab/shipped/{shipped}" in names, shipped
    assert "lab/dashboard/overview.py" in names and not any(n.startswith("tests/") for n in names)


def test_installed_outside_the_checkout_the_console_script_trains_by_recipe_name(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    site = next((env_dir / "lib").glob("python3*/site-packages"))
    # The dependencies come from this environment (no network); the lab itself only from the wheel.
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)  # what pip does with a pure-Python wheel, without pip
    python = env_dir / "bin" / "python"
    where = subprocess.run([str(python), "-c", "import lab, lab.paths; print(lab.__file__); print(lab.paths.ROOT)"],
                           cwd=tmp_path, capture_output=True, text=True, check=True).stdout.split()
    assert all(Path(w).is_relative_to(site) for w in where), where
    done = subprocess.run([str(python), "-m", "lab", "train", "--recipe", "tiny", "--out", str(tmp_path / "run"),
                           "--max-steps", "2", "--quiet"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()
    dashboard = subprocess.run([str(python), "-c", "from lab.commands.dashboard import APP; print(APP)"],
                               cwd=tmp_path, capture_output=True, text=True, check=True).stdout.strip()
    assert Path(dashboard).is_file() and Path(dashboard).is_relative_to(site)
