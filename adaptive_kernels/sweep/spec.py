"""What a sweep computes: regime points, the data recipe, and their keys.

A *point* is one regime (THEORY.md sec. 1): theory, activation, depth, width N, sample
count P, readout scaling gamma (or chi = N**(gamma - 1)), kappa2, s_w2, s_a2 and the data
seed. A *data recipe* says how the data set of a point is drawn from (P, seed): a
single-index teacher on Gaussian inputs (``TeacherData``) or sklearn's digits
(``DigitsData``). Every point gets a key, a hash of its parameters, the recipe and the
solver options, so a re-run of the same sweep recognises the points it already has.

These are host-side descriptions (frozen dataclasses of Python scalars), not PyTrees:
the arrays are built from them by :mod:`adaptive_kernels.sweep.engine`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import math
import numbers
from typing import Any, Mapping, Sequence

from adaptive_kernels.actions.adaptive import SPACES
from adaptive_kernels.activations import ACTIVATIONS
from adaptive_kernels.api import SOLVERS
from adaptive_kernels.architectures import GAMMA_RANGE
from adaptive_kernels.solvers import AbstractRule, QuasiNewton
from adaptive_kernels.theories import FORMS, MEASURES

THEORIES = ("gp", "scaling", "adaptive")
BRANCH_MODES = ("posterior", "all")
"""``Sweep(branches=...)``: report each point's posterior branch (one row) or every stationary point found (one row
each, the posterior's marked); see :func:`adaptive_kernels.sweep.engine.branch_rows`."""

# name -> (default, kind); kind is one of "int", "float", "str". No default: required.
_REQUIRED = object()
POINT_PARAMETERS: dict[str, tuple[Any, str]] = {
    "theory": ("adaptive", "str"),
    "activation": ("linear", "str"),
    "depth": (1, "int"),
    "width": (_REQUIRED, "int"),
    "P": (_REQUIRED, "int"),
    "gamma": (None, "float"),
    "chi": (None, "float"),
    "kappa2": (_REQUIRED, "float"),
    "s_w2": (1.0, "float"),
    "s_a2": (1.0, "float"),
    "seed": (0, "int"),
}


class ParameterError(ValueError):
    """A bad sweep parameter; ``key`` names it (the config reader adds its line)."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key


class SolverOptionError(ParameterError):
    """A bad solver option (``[solver]`` table of a config; ``options=`` of a Sweep)."""


@dataclasses.dataclass(frozen=True)
class SolverOption:
    """What a sweep accepts for one keyword option of ``adaptive_kernels.solve``.

    kind: ``"choice"`` (one of ``choices``; a solver object too if ``objects``), ``"bool"``, ``"positive_int"``
    or ``"object"`` (a Python object, e.g. a lineax solver: Python API only, a config file cannot spell it).
    """

    kind: str
    choices: tuple[str, ...] = ()
    objects: bool = False


# The one place the sweep package lists the keyword options of adaptive_kernels.solve, their allowed values taken
# from the library's own registries (solver names; the adaptive theory's space, form and measure). A config file and
# Sweep(options=...) are checked against it before anything is solved.
SOLVER_OPTIONS: dict[str, SolverOption] = {
    "solver": SolverOption("choice", tuple(SOLVERS), objects=True),
    "implicit": SolverOption("bool"),
    "linear_solver": SolverOption("object"),
    "space": SolverOption("choice", SPACES),
    "form": SolverOption("choice", FORMS),
    "measure": SolverOption("choice", MEASURES),
    "samples": SolverOption("positive_int"),
    "seed": SolverOption("positive_int"),
    "loops": SolverOption("choice", (0, 1)),
}


def check_solver_option(key: str, value):
    """Name, type and value of one solver option against :data:`SOLVER_OPTIONS`."""
    if key not in SOLVER_OPTIONS:
        raise SolverOptionError(key, f"unknown option of adaptive_kernels.solve; known: {', '.join(SOLVER_OPTIONS)}")
    spec = SOLVER_OPTIONS[key]
    primitive = isinstance(value, (str, numbers.Number, bool, list, dict, tuple)) or value is None
    if spec.kind == "choice":
        if isinstance(value, (str, int)) and not isinstance(value, bool) and value in spec.choices:
            return value
        if spec.objects and isinstance(value, (AbstractRule, QuasiNewton)):
            return value
        extra = " or a solver object" if spec.objects else ""
        raise SolverOptionError(key, f"must be one of {', '.join(map(repr, spec.choices))}{extra}, got {value!r}")
    if spec.kind == "bool":
        if not isinstance(value, bool):
            raise SolverOptionError(key, f"must be true or false, got {value!r}")
        return value
    if spec.kind == "positive_int":
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
            raise SolverOptionError(key, f"must be a positive integer, got {value!r}")
        return int(value)
    if primitive:
        raise SolverOptionError(key, f"must be a Python object (Python API only, e.g. Sweep(options=...)), got {value!r}")
    return value


def check_solver_options(options: Mapping[str, Any], points: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Every option checked by :func:`check_solver_option`."""
    return {key: check_solver_option(key, value) for key, value in options.items()}


def check_kind(key: str, value, kind: str):
    """``value`` as a Python int/float/str of the declared ``kind``, or a ParameterError."""
    if kind == "str":
        if not isinstance(value, str):
            raise ParameterError(key, f"must be a string, got {type(value).__name__} {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ParameterError(key, f"must be a number, got {type(value).__name__} {value!r}")
    if kind == "int":
        if not isinstance(value, numbers.Integral):
            raise ParameterError(key, f"must be an integer, got {value!r}")
        return int(value)
    value = float(value)
    if not math.isfinite(value):
        raise ParameterError(key, f"must be finite, got {value}")
    return value


def _check_value(key: str, value):
    """Type and range of one point parameter (ranges as in architectures.FCN)."""
    value = check_kind(key, value, POINT_PARAMETERS[key][1])
    if key == "theory" and value not in THEORIES:
        raise ParameterError(key, f"unknown theory {value!r}; choose one of {', '.join(THEORIES)}")
    if key == "activation" and value not in ACTIVATIONS:
        raise ParameterError(key, f"unknown activation {value!r}; choose one of {', '.join(ACTIVATIONS)}")
    if key in ("depth", "width", "P") and value <= 0:
        raise ParameterError(key, f"must be a positive integer, got {value}")
    if key in ("kappa2", "s_w2", "s_a2", "chi") and value <= 0:
        raise ParameterError(key, f"must be positive, got {value}")
    if key == "gamma" and not GAMMA_RANGE[0] <= value <= GAMMA_RANGE[1]:
        raise ParameterError(key, f"must lie in [{GAMMA_RANGE[0]}, {GAMMA_RANGE[1]}], got {value}")
    if key == "seed" and value < 0:
        raise ParameterError(key, f"must be a non-negative integer, got {value}")
    return value


def check_parameter(key: str, value):
    """Validate one value of a point parameter (unknown names rejected)."""
    if key not in POINT_PARAMETERS:
        raise ParameterError(key, f"unknown parameter; known: {', '.join(POINT_PARAMETERS)}")
    return _check_value(key, value)


def normalise_point(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A complete, validated point: defaults filled in, exactly one of gamma/chi kept.

    gamma defaults to 1 (standard scaling). A given chi is kept as chi (the point's key keeps
    what the user wrote); the gamma it implies, 1 + log(chi)/log(N), is range-checked.
    """
    point = {}
    for key, value in raw.items():
        point[key] = check_parameter(key, value)
    for key, (default, _) in POINT_PARAMETERS.items():
        if key not in point:
            if default is _REQUIRED:
                raise ParameterError(key, "is required (give it in the grid or in every point)")
            if default is not None:
                point[key] = default
    if "gamma" in point and "chi" in point:
        raise ParameterError("chi", "give gamma or chi, not both (chi = N**(gamma - 1))")
    if "chi" in point:
        if point["width"] == 1:
            raise ParameterError("chi", "needs width > 1 to define gamma = 1 + log(chi)/log(N)")
        gamma = resolved_gamma(point)
        if not GAMMA_RANGE[0] <= gamma <= GAMMA_RANGE[1]:
            raise ParameterError(
                "chi", f"implies gamma = {gamma:.4g} at width {point['width']}, outside {list(GAMMA_RANGE)}"
            )
    else:
        point.setdefault("gamma", 1.0)
    return point


def resolved_gamma(point: Mapping[str, Any]) -> float:
    """gamma of a normalised point (from chi = N**(gamma - 1) if chi was given)."""
    if "chi" in point:
        return 1.0 + math.log(point["chi"]) / math.log(point["width"])
    return point["gamma"]


def grid(**axes) -> list[dict[str, Any]]:
    """Cartesian product of parameter axes: ``grid(P=[10, 20], gamma=[1, 2], kappa2=1e-2)``.

    A scalar is an axis of length one. Points come out in row-major order (last axis fastest).
    """
    names = list(axes)
    values = [v if isinstance(v, (list, tuple)) else [v] for v in axes.values()]
    return [dict(zip(names, combo)) for combo in itertools.product(*values)]


# ---------------------------------------------------------------------------- data recipes


@dataclasses.dataclass(frozen=True)
class TeacherData:
    """Gaussian inputs x ~ N(0, I_d) with a unit single-index teacher (``data.teacher_dataset``).

    teacher: ``"linear"`` (y = w*.x) or ``"cubic"`` (y = z + eps He3(z), review Fig 4);
    P_test held-out points; ``noise``: std of label noise on the training targets.
    The data of a point are drawn with ``jax.random.PRNGKey(seed)``.
    """

    teacher: str = "linear"
    d: int = 10
    P_test: int = 500
    eps: float = 0.1
    noise: float = 0.0

    def __post_init__(self):
        kinds = {"teacher": "str", "d": "int", "P_test": "int", "eps": "float", "noise": "float"}
        for key, kind in kinds.items():
            object.__setattr__(self, key, check_kind(key, getattr(self, key), kind))
        if self.teacher not in ("linear", "cubic"):
            raise ParameterError("teacher", f"unknown teacher {self.teacher!r}; choose linear or cubic")
        if self.d <= 0 or self.P_test <= 0:
            raise ParameterError("d" if self.d <= 0 else "P_test", "must be a positive integer")
        if self.noise < 0:
            raise ParameterError("noise", f"must be non-negative, got {self.noise}")

    def make(self, P: int, seed: int):
        return _teacher_data(self, P, seed)

    def describe(self) -> dict[str, Any]:
        return {"data": "teacher", **dataclasses.asdict(self)}


@dataclasses.dataclass(frozen=True)
class DigitsData:
    """sklearn's 8x8 digits (``data.load_digits_regression``): the first P shuffled rows
    train, the rest test; two classes give +-1 targets. ``seed`` shuffles the rows."""

    classes: tuple[int, ...] = (0, 1)

    def __post_init__(self):
        classes = self.classes
        if not isinstance(classes, (list, tuple)) or not all(
            isinstance(c, numbers.Integral) and not isinstance(c, bool) for c in classes
        ):
            raise ParameterError("classes", f"must be a list of digits, got {classes!r}")
        if len(classes) < 2 or len(set(classes)) != len(classes) or not set(classes) <= set(range(10)):
            raise ParameterError("classes", f"must be two or more distinct digits in 0..9, got {list(classes)}")
        object.__setattr__(self, "classes", tuple(int(c) for c in classes))

    def make(self, P: int, seed: int):
        return _digits_data(self, P, seed)

    def describe(self) -> dict[str, Any]:
        return {"data": "digits", "classes": ",".join(map(str, self.classes))}


DataRecipe = TeacherData | DigitsData


@functools.lru_cache(maxsize=256)
def _teacher_data(recipe: TeacherData, P: int, seed: int):
    import jax

    from adaptive_kernels.data import teacher_dataset

    return teacher_dataset(
        jax.random.PRNGKey(seed), P, recipe.d, recipe.teacher, recipe.P_test, recipe.eps, recipe.noise
    )


@functools.lru_cache(maxsize=256)
def _digits_data(recipe: DigitsData, P: int, seed: int):
    from adaptive_kernels.data import load_digits_regression

    return load_digits_regression(recipe.classes, n_train=P, seed=seed)


def point_key(point: Mapping[str, Any], recipe: DataRecipe, solve_settings: Mapping[str, Any]) -> str:
    """Stable identity of a point's row: sha256 of its parameters, the data recipe and how it is
    solved (solver options, continuation axis, branch detection -- they change the row)."""
    blob = json.dumps(
        {"point": dict(point), "data": recipe.describe(), "solve": dict(solve_settings)},
        sort_keys=True,
        default=repr,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


@dataclasses.dataclass(frozen=True)
class Sweep:
    """A sweep: points (validated, in order), the data recipe, and how to solve them.

    Args:
        points: the regimes, e.g. from :func:`grid` (dicts of parameters; see POINT_PARAMETERS).
        data: a :class:`TeacherData` or :class:`DigitsData`.
        continuation: an ordered parameter (e.g. ``"P"``, ``"gamma"``, ``"kappa2"``) along which
            each solution warm-starts the next; points that differ only in it form a chain.
        detect_branches: also run every chain backwards and flag points where the two passes
            reach different solutions (more than one branch); the lower action is kept.
        options: keyword options passed to the solver (``adaptive_kernels.solve``).
        branches: None (one solve per point, as above), ``"posterior"`` or ``"all"``: solve every point from
            several starts with ``adaptive_kernels.phases`` (the prior, teacher-aligned states with variance
            ``ratios`` times the prior's along w*, and -- along ``continuation`` -- every branch of the previous
            point), classify each distinct stationary point by its Hessian and name the branch it lies on;
            ``"posterior"`` keeps one row per point (the lowest-action minimum), ``"all"`` one row per stationary
            point (columns ``branch``, ``starts``, ``kind``, ``index``, ``min_eigenvalue``, ``posterior``,
            ``minima``, ``metastable``; extra rows' keys are ``<point key>/<j>``). Theories with an action only
            (``"scaling"``, ``"adaptive"``).
        ratios: the aligned starts' variance ratios (with ``branches``).
    """

    points: tuple
    data: DataRecipe = TeacherData()
    continuation: str | None = None
    detect_branches: bool = False
    options: tuple = ()
    branches: str | None = None
    ratios: tuple = (30.0,)

    def __init__(self, points, data=None, continuation=None, detect_branches=False, options=None, *,
                 branches=None, ratios=(30.0,)):
        points = tuple(normalise_point(p) for p in points)
        if not points:
            raise ValueError("points: the sweep has no points")
        if continuation is not None and POINT_PARAMETERS.get(continuation, (None, "str"))[1] == "str":
            raise ParameterError("continuation", f"must be a numeric point parameter, got {continuation!r}")
        if detect_branches and continuation is None:
            raise ParameterError("detect_branches", "needs a continuation axis to run forward and backward")
        _check_branches(branches, ratios, detect_branches, points)
        object.__setattr__(self, "branches", branches)
        object.__setattr__(self, "ratios", tuple(float(r) for r in ratios))
        object.__setattr__(self, "points", points)
        object.__setattr__(self, "data", TeacherData() if data is None else data)
        object.__setattr__(self, "continuation", continuation)
        object.__setattr__(self, "detect_branches", bool(detect_branches))
        options = check_solver_options(options or {}, points)
        object.__setattr__(self, "options", tuple(sorted(options.items())))

    @property
    def solver_options(self) -> dict[str, Any]:
        return dict(self.options)

    def keys(self) -> list[str]:
        settings = {"options": self.solver_options, "continuation": self.continuation,
                    "detect_branches": self.detect_branches}
        if self.branches is not None:  # (absent otherwise: the keys of earlier sweeps stay valid)
            settings.update(branches=self.branches, ratios=list(self.ratios))
        return [point_key(p, self.data, settings) for p in self.points]

    def chains(self) -> list[list[int]]:
        """Point indices grouped into continuation chains, each ordered along the axis
        (one point per chain without continuation). Duplicate points are kept once."""
        keys = self.keys()
        first = {}
        for i, k in enumerate(keys):
            first.setdefault(k, i)
        unique = sorted(first.values())
        if self.continuation is None:
            return [[i] for i in unique]
        axis = self.continuation
        along = {"gamma", "chi"} if axis in ("gamma", "chi") else {axis}  # two spellings of one axis
        chains: dict[tuple, list[int]] = {}
        for i in unique:
            rest = tuple(sorted((k, v) for k, v in self.points[i].items() if k not in along))
            chains.setdefault(rest, []).append(i)
        return [sorted(ix, key=lambda i: axis_value(self.points[i], axis)) for ix in chains.values()]


def _check_branches(branches, ratios, detect_branches, points) -> None:
    """``branches`` one of None, :data:`BRANCH_MODES`; ``ratios`` positive numbers; not with ``detect_branches``
    (the phase tools already follow every start); every point's theory has an action to classify by."""
    if branches is None:
        return
    if branches not in BRANCH_MODES:
        raise ParameterError("branches", f"must be one of {', '.join(map(repr, BRANCH_MODES))} or None, got {branches!r}")
    if detect_branches:
        raise ParameterError("detect_branches", "not with branches (they already follow every start both ways)")
    if not isinstance(ratios, (list, tuple)) or not all(
            isinstance(r, numbers.Real) and not isinstance(r, bool) and r > 0 for r in ratios):
        raise ParameterError("ratios", f"must be a list of positive numbers, got {ratios!r}")
    gp = [i for i, p in enumerate(points) if p["theory"] == "gp"]
    if gp:
        raise ParameterError("branches", f"needs theories with an action (scaling, adaptive); point {gp[0]} has "
                             "theory 'gp' (one kernel, no order parameters)")


def axis_value(point: Mapping[str, Any], axis: str) -> float:
    """A normalised point's coordinate along ``axis`` (gamma and chi resolved from each other)."""
    if axis == "gamma":
        return resolved_gamma(point)
    if axis == "chi":
        return point["width"] ** (resolved_gamma(point) - 1.0)
    return point[axis]

