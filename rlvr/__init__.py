"""rlvr: reinforcement learning with verifiable rewards."""

import sys
from importlib.machinery import ModuleSpec, PathFinder
from pathlib import Path

# In a checkout, rlvr.rewards and rlvr.kernels are the top-level rewards/ and kernels/ folders
# (pyproject.toml's package-dir). An editable install maps those names to the *installed* checkout, so a
# copy of the checkout that comes first on sys.path (a `ray job submit` upload, which is the job's working
# directory) ran its own rlvr with the installed copy's rewards and kernels, and beside a wheel it found
# none. So an rlvr imported from a checkout takes both from that same checkout. A wheel's rlvr holds its
# own rewards/ and kernels/, and then nothing is added (its parent is site-packages, where an unrelated
# `rewards` package may live).
_CHECKOUT = Path(__file__).resolve().parent.parent
_SUBPACKAGES = ("rlvr.rewards", "rlvr.kernels")


class _CheckoutFinder:
    """A meta path finder: rlvr.rewards and rlvr.kernels from the checkout this rlvr was imported from."""

    @staticmethod
    def find_spec(fullname: str, path: object = None, target: object = None) -> ModuleSpec | None:
        if fullname in _SUBPACKAGES:
            return PathFinder.find_spec(fullname, [str(_CHECKOUT)])  # looks for <checkout>/rewards, /kernels
        return None


if (_CHECKOUT / "pyproject.toml").is_file() and not (_CHECKOUT / "rlvr" / "rewards").exists():
    sys.meta_path.insert(0, _CheckoutFinder)  # ahead of setuptools' editable finder
