"""rlvr/__init__.py: rlvr.rewards and rlvr.kernels come from the tree rlvr was imported from, whatever is installed."""

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PRINT_ORIGINS = ("import rlvr, rlvr.rewards.only_here, rlvr.kernels; "
                 "print(rlvr.__file__, rlvr.rewards.__file__, rlvr.kernels.__file__)")


def origins(cwd: Path) -> list[str]:
    """The files of rlvr, rlvr.rewards and rlvr.kernels imported by this interpreter (rlvr installed from REPO,
    editable) in a process started in `cwd`, which comes first on its sys.path."""
    done = subprocess.run([sys.executable, "-c", PRINT_ORIGINS], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.split()


def test_a_copy_of_the_checkout_uses_its_own_rewards_and_kernels(tmp_path):
    """As a `ray job submit` upload: without this, rlvr came from the copy and its subpackages from REPO."""
    for name in ("rlvr", "rewards", "kernels", "pyproject.toml"):
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy
        copy(REPO / name, tmp_path / name)
    (tmp_path / "rewards/only_here.py").write_text("")
    assert origins(tmp_path) == [str(tmp_path / "rlvr/__init__.py"), str(tmp_path / "rewards/__init__.py"),
                                 str(tmp_path / "kernels/__init__.py")]


def test_an_installed_layout_keeps_its_own_subpackages(tmp_path):
    """A wheel's rlvr holds rewards/ and kernels/; an unrelated `rewards` package beside it is not taken."""
    shutil.copytree(REPO / "rlvr", tmp_path / "rlvr")
    shutil.copytree(REPO / "rewards", tmp_path / "rlvr/rewards")
    shutil.copytree(REPO / "kernels", tmp_path / "rlvr/kernels")
    (tmp_path / "rlvr/rewards/only_here.py").write_text("")
    (tmp_path / "rewards").mkdir()
    (tmp_path / "rewards/__init__.py").write_text("raise ImportError('the unrelated PyPI package')")
    (tmp_path / "pyproject.toml").write_text("")
    assert origins(tmp_path) == [str(tmp_path / "rlvr/__init__.py"), str(tmp_path / "rlvr/rewards/__init__.py"),
                                 str(tmp_path / "rlvr/kernels/__init__.py")]
