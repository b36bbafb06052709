"""Find a reward by name: the decorator registry, a Python entry point, or a dotted path.

    @register("short")                        # then RewardTermConfig("short")
    def short(rollout): ...

    RewardTermConfig("mypkg.rewards:short")     # a dotted path (to the object, or to a name it registers)

    # a pip-installed plugin package registers itself in its pyproject.toml:
    [project.entry-points."rlvr.rewards"]
    short = "mypkg.rewards:short"

`resolve(name, kwargs)` returns the callable: a class (e.g. a frozen dataclass) is instantiated with
the kwargs, a function with kwargs is bound with `functools.partial` (which still pickles).

A dotted path's module is looked up on sys.path and then in the working directory, as `python -m` would
(the `rlvr` console script puts its bin/ folder on sys.path instead). Ray puts the driver's working directory
on its workers' sys.path, and multiprocessing hands each reward-pool process its parent's sys.path, so the
module is found there too.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import inspect
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

ENTRY_POINT_GROUP = "rlvr.rewards"
_GROUP_ATTR = "__rlvr_group_reward__"

# The one piece of module state in rewards/: a plugin registry is global by nature (P12 in STYLE.md).
_REGISTRY: dict[str, Callable[..., Any]] = {}

# Built-ins, imported on first use: their modules import heavy libraries (sympy, reasoning-gym) at the
# top, so a worker process has them loaded before it reports ready and no call pays for the import.
BUILTINS = {
    # verifiers
    "boxed_format": "rlvr.rewards.format:boxed_format",
    "choice": "rlvr.rewards.choice:MultipleChoice",
    "exact": "rlvr.rewards.exact:exact",
    "gsm8k": "rlvr.rewards.gsm8k:gsm8k",
    "math": "rlvr.rewards.math:MathVerify",
    "think_format": "rlvr.rewards.format:ThinkFormat",
    # length shaping: per rollout
    "overlong": "rlvr.rewards.length:OverlongPenalty",
    "target_length": "rlvr.rewards.length:TargetLength",
    "truncation": "rlvr.rewards.length:TruncationPenalty",
    # length shaping: group shapers (they see the correctness channel)
    "cosine_length": "rlvr.rewards.length_group:CosineLength",
    "drpo_length": "rlvr.rewards.length_group:drpo_length",
    "kimi_length": "rlvr.rewards.length_group:kimi_length",
    "l1_max": "rlvr.rewards.length_group:L1Max",
    "laser_d": "rlvr.rewards.laser:LaserD",
    "reasoning_gym": "rlvr.rewards.reasoning_gym:reasoning_gym_score",
}

F = TypeVar("F", bound=Callable[..., Any])


class UnknownRewardError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def register(name: str, *, group: bool = False) -> Callable[[F], F]:
    """Register a reward (or, with group=True, a group shaper) under `name`."""

    def decorate(obj: F) -> F:
        old = _REGISTRY.get(name)
        if old is not None and _qualname(old) != _qualname(obj):
            raise ValueError(f"reward {name!r} is already registered to {_qualname(old)}")
        setattr(obj, _GROUP_ATTR, group)
        _REGISTRY[name] = obj
        return obj

    return decorate


def registered() -> list[str]:
    """Names of the built-in and decorator-registered rewards (entry points are found on demand)."""
    return sorted(set(_REGISTRY) | set(BUILTINS))


def is_group_reward(obj: Any) -> bool:
    target = obj.func if isinstance(obj, functools.partial) else obj
    return bool(getattr(target, _GROUP_ATTR, False) or getattr(type(target), _GROUP_ATTR, False))


def lookup(name: str) -> Callable[..., Any]:
    """The registered object (function or class) for `name`, before any kwargs are applied."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in BUILTINS:
        return _import_dotted(BUILTINS[name])
    if ":" in name:
        return _import_dotted(name)
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            return ep.load()
    known = ", ".join(registered())
    raise UnknownRewardError(
        f"unknown reward {name!r}: not registered (known: {known}), not an entry point in group "
        f"{ENTRY_POINT_GROUP!r}, and not a dotted path 'package.module:function'"
    )


def resolve(name: str, kwargs: Mapping[str, Any] | None = None) -> Callable[..., Any]:
    """The ready-to-call reward for a config term: `name` with its `kwargs` applied."""
    obj = lookup(name)
    kwargs = dict(kwargs or {})
    try:
        if inspect.isclass(obj):
            return obj(**kwargs)
        if kwargs:
            inspect.signature(obj).bind_partial(None, **kwargs)  # fail now on a misspelt kwarg
            return functools.partial(obj, **kwargs)
    except TypeError as e:
        raise TypeError(f"reward {name!r}: bad kwargs {sorted(kwargs)}: {e}") from None
    return obj


def _import_dotted(path: str) -> Callable[..., Any]:
    module_name, _, attr = path.partition(":")
    try:
        obj: Any = _import_module(module_name)
    except ImportError as e:
        hint = ""
        if isinstance(e, ModuleNotFoundError) and _names_the_module(e, module_name):
            hint = (f" (not on sys.path nor in the working directory {os.getcwd()}; set PYTHONPATH to the folder "
                    "that holds it)")
        raise UnknownRewardError(f"reward {path!r}: cannot import {module_name!r}: {e}{hint}") from None
    if not hasattr(obj, attr.split(".")[0]) and attr in _REGISTRY:
        return _REGISTRY[attr]  # "pkg.module:name": the module registers `name` when imported
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UnknownRewardError(f"reward {path!r}: {module_name!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise UnknownRewardError(f"reward {path!r} is not callable")
    return obj


def _import_module(name: str) -> Any:
    """importlib.import_module; a module not found on sys.path is looked for in the working directory, which
    is then appended to sys.path (after the installed packages, so it shadows none of them)."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        cwd = os.getcwd()
        if not _names_the_module(e, name) or cwd in sys.path:
            raise
        sys.path.append(cwd)
        return importlib.import_module(name)


def _names_the_module(e: ModuleNotFoundError, name: str) -> bool:
    """The module itself (or a package above it) is missing, not something it imports."""
    return e.name is not None and (name == e.name or name.startswith(e.name + "."))


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', repr(obj))}"
