"""Theories: what is adapted, and how (THEORY.md secs. 2-5). Each is a small immutable object that provides

    problem(problem)            -> (action, args): what the solvers solve (an EntropicAction or a fixed-point map)
    init(problem, args)         -> initial order parameters
    default_solver(problem)     -> the solver used when none is given
    output_kernels(value, problem, X_test) -> K (P, P), K(X_test, X), diag K(X_test): the output kernel c K_L
    layer_kernels(value, problem)          -> per-layer post-activation kernels K_1..K_L on the training inputs
    input_covariances(value, problem)      -> per-layer input-space covariances (d x d) or None

for every depth: a two-layer net is the L = 1 case.

- :class:`NNGP`: no adaptation, the infinite-width kernel (sec. 2).
- :class:`Scaling`: one scalar per layer rescales the NNGP kernel (sec. 3; exact mean output for linear nets).
- :class:`Adaptive`: a matrix per layer (secs. 4-5). ``form``: ``"weight"`` -- the first-layer weight covariance
  Sigma of a two-layer FCN or CNN with the Gaussian ansatz (any phi), or one d x d Sigma_l per layer of a deep
  linear net; ``"kernel"`` -- per-layer P x P kernels of the Gaussian-equivalent (exact for linear phi) layer
  CGF, the whitened primal (any depth, any P, N_l, d); ``"conjugate"`` -- the same saddle as the forward-backward
  map on the conjugate kernels (with ``measure="second_order"``: Fischer et al.'s second-order cumulant CGF; with
  ``measure="exact"``: the exact layer CGF by Monte Carlo, THEORY.md sec. 9);
  ``"auto"``: ``"weight"`` for one hidden layer, ``"kernel"`` for deeper nets.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp

from adaptive_kernels._validation import is_traced
from adaptive_kernels.actions import deep, deep_exact_one_loop, exact, exact_one_loop, mixture, one_loop, test_points
from adaptive_kernels.actions.adaptive import TwoLayerAdaptiveAction, resolve_space
from adaptive_kernels.actions.scaling import ScalingAction, scaled_kernel, scales_like
from adaptive_kernels.gp import data_term
from adaptive_kernels.problem import Problem, check_unweighted
from adaptive_kernels.solvers import Continuation, FixedPoint, Newton, stationary_point

FORMS = ("auto", "weight", "kernel", "conjugate")
MEASURES = ("gaussian", "second_order", "exact", "mixture")


def has_bias(problem: Problem) -> bool:
    """s_b2 > 0 (False while s_b2 is traced: checks of traced values are skipped)."""
    return not is_traced(problem.s_b2) and float(problem.s_b2) != 0


def _exact_loop(problem: Problem):
    """The module of the one loop around the exact measure: ``actions.exact_one_loop`` (two-layer nets, closed-form
    blocks) or ``actions.deep_exact_one_loop`` (deeper FCNs, P <= its ``MAX_P`` = 64)."""
    return deep_exact_one_loop if problem.depth > 1 else exact_one_loop


class AbstractTheory(eqx.Module):
    """The interface every theory provides (see the module docstring)."""

    name: ClassVar[str]

    def check(self, problem: Problem) -> None:
        """Raise a ValueError naming the option if this theory cannot describe ``problem``."""

    def prepared(self, problem: Problem) -> "AbstractTheory":
        """The theory with what it precomputes once, outside jit, for ``problem`` (``solve`` calls it): itself."""
        return self

    @abc.abstractmethod
    def problem(self, problem: Problem):
        """(action, args) for the solvers, or None for a theory without order parameters."""

    @abc.abstractmethod
    def init(self, problem: Problem, args):
        """Initial order parameters."""

    def default_solver(self, problem: Problem):
        return Newton()

    @abc.abstractmethod
    def output_kernels(self, value, problem: Problem, X_test=None):
        """(K, K(X_test, X), diag K(X_test)) of the output kernel (the last two None without X_test)."""

    @abc.abstractmethod
    def layer_kernels(self, value, problem: Problem) -> tuple:
        """Per-layer post-activation kernels K_1..K_L (P x P) on the training inputs."""

    def input_covariances(self, value, problem: Problem):
        """Per-layer input-space covariances Sigma_l (d x d), or None where the theory has none."""
        return None

    def mean(self, fn, value, problem: Problem, linear: bool = False):
        """(E[fn], Var[fn] or None) of an observable fn(order parameters) over their posterior: at the saddle
        (fn(value), None). ``linear``: fn is linear in the order parameters (:meth:`kernels_linear`)."""
        return fn(value), None

    def test_fluctuations(self, value, problem: Problem, X_test):
        """(d mean_test, d var_test) that the test points' own order-parameter fluctuations add at one loop beyond
        the average over ``value``'s posterior (:meth:`mean`), or None where the prediction has none."""
        return None

    def kernels_linear(self, problem: Problem) -> bool:
        """Whether ``output_kernels``, ``layer_kernels`` and ``input_covariances`` are linear in the order parameters
        (their means over the posterior are then those of the mean order parameters)."""
        return False

    def check_value(self, value, problem: Problem, name: str = "value") -> None:
        """Raise if ``value`` does not have the structure and shapes this theory's order parameters have on
        ``problem`` (a solution of another problem, a wrong ``init``)."""
        action, args = self.problem(problem)
        want = jax.eval_shape(lambda: self.init(problem, args))
        got_structure, want_structure = jax.tree.structure(value), jax.tree.structure(want)
        shapes = [jnp.shape(x) for x in jax.tree.leaves(value)]
        want_shapes = [x.shape for x in jax.tree.leaves(want)]
        if got_structure != want_structure or shapes != want_shapes:
            raise ValueError(f"{name}: order parameters of shapes {shapes} do not fit this {self.name} problem "
                             f"(P = {problem.P}, d = {problem.d}, depth {problem.depth}), which needs {want_shapes}")


def _nngp_blocks(problem: Problem, X_test, scale=1.0):
    train = problem.nngp_kernel()
    if X_test is None:
        return scale * train.nngp, None, None
    cross = problem.nngp_kernel(X_test, problem.X)
    return scale * train.nngp, scale * cross.nngp, scale * cross.var1


def _nngp_layer_kernels(problem: Problem, scales=None) -> tuple:
    """K_phi(C_l^NNGP) per layer, times prod_{k<=l} u_k when scales are given."""
    C = deep.input_covariance(problem, problem.X)
    kernels = []
    for layer in range(problem.depth):
        K = deep.prior_kernel(problem, C)
        C = deep.next_covariance(problem, K)
        kernels.append(K if scales is None else jnp.prod(jnp.stack(scales[: layer + 1])) * K)
    return tuple(kernels)


class NNGP(AbstractTheory):
    """The infinite-width (NNGP) kernel: no order parameters; its action is the data term D(K_NNGP)."""

    name: ClassVar[str] = "gp"

    def problem(self, problem):
        return None

    def init(self, problem, args):
        return None

    def action(self, problem: Problem):
        check_unweighted(problem, "the NNGP theory")
        return data_term(problem.nngp_kernel().nngp, problem.y, problem.kappa2)

    def output_kernels(self, value, problem, X_test=None):
        return _nngp_blocks(problem, X_test)

    def layer_kernels(self, value, problem):
        return _nngp_layer_kernels(problem)

    def check_value(self, value, problem, name="value"):
        if value is not None:
            raise ValueError(f"{name}: the NNGP has no order parameters, got {type(value).__name__}")


class AbstractLoopTheory(AbstractTheory):
    """A theory with an action to minimise; ``loops=1`` minimises its one-loop effective action instead and corrects
    the observables' means (``actions.one_loop``, THEORY.md sec. 10)."""

    loops: eqx.AbstractVar[int]

    def __check_init__(self):
        one_loop.check_loops(self.loops)

    @abc.abstractmethod
    def saddle_problem(self, problem: Problem):
        """(action, args) of the saddle."""

    def problem(self, problem):
        action, args = self.saddle_problem(problem)
        if self.loops:
            check_unweighted(problem, "loops=1")
        return one_loop.with_loops(action, self.loops), args

    def check(self, problem):
        if self.loops:
            action, args = self.problem(problem)
            shapes = jax.eval_shape(self.init, problem, args)  # the start's shapes (a deep one loop's is a solve)
            one_loop.check_widths(action, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes), args)

    def mean(self, fn, value, problem, linear=False):
        if not self.loops:
            return super().mean(fn, value, problem)
        action, args = self.problem(problem)
        return one_loop.moments(action, value, args, fn, linear)


class Scaling(AbstractLoopTheory):
    """Kernel scaling: S(u) = sum_l (N_l/2)(u_l - log u_l) + D((prod u_l) K_NNGP) (``actions.scaling``): one
    eigendecomposition of K_NNGP (an SVD of its P x d factor for linear nets without bias, d < P), then O(P) per
    evaluation of the action, its gradient and the exact Newton step on the L scales.
    ``loops``: 0 (the saddle) or 1 (one-loop corrections)."""

    name: ClassVar[str] = "scaling"
    loops: int = eqx.field(static=True, default=0)

    def saddle_problem(self, problem):
        check_unweighted(problem, "the scaling theory")
        return ScalingAction(), scaled_kernel(problem)

    def init(self, problem, args):
        return scales_like(problem.widths, problem.X.dtype)

    def _scales(self, value):
        return tuple(jax.tree.leaves(value))

    def kernels_linear(self, problem):
        """One scale (two-layer nets): the kernels are s K_NNGP."""
        return problem.depth == 1

    def output_kernels(self, value, problem, X_test=None):
        return _nngp_blocks(problem, X_test, jnp.prod(jnp.stack(self._scales(value))))

    def layer_kernels(self, value, problem):
        return _nngp_layer_kernels(problem, self._scales(value))


class Adaptive(AbstractLoopTheory):
    """Adaptive kernels: a matrix per layer (module docstring).

    Attributes:
        form: ``"auto"``, ``"weight"``, ``"kernel"`` or ``"conjugate"``.
        space: for the two-layer weight form, where D is evaluated: ``"auto"``, ``"weight"`` (Woodbury, linear phi)
            or ``"function"`` (P x P kernel).
        measure: ``"gaussian"`` (the Gaussian ansatz / Gaussian-equivalent CGF; exact for linear phi) or
            ``"second_order"`` (conjugate form only: the second-order cumulant CGF, Monte Carlo with
            ``samples`` fixed draws from ``seed``) or ``"exact"`` (conjugate form, FCNs, the CNN: the exact large-width
            layer CGF by importance sampling, ``samples`` fixed draws per layer from ``seed``; ``actions.exact``:
            ``Solution.stats["ess"]`` per layer, and the domain margin min ESS/S - 0.01, so degenerate weights
            give status LEFT_DOMAIN) or ``"mixture"`` (two-layer FCN, erf, linear or quadratic, form ``"weight"``/``"auto"``: the
            single-neuron density a symmetrised mixture of ``components`` Gaussian pairs, ``actions.mixture``;
            ``samples`` fixed draws from ``seed`` for its entropy's overlap correction; default solver dense BFGS, ``mixture.DEFAULT_SOLVER``).
        components: number of mixture components K (``measure="mixture"``).
        along: ``measure="mixture"``: ``"free"`` (each component a full mean and covariance), ``"equal"`` (the same
            with the component weights fixed at 1/K: with phi = x^2 free weights run away to 0 at infinite variance)
            or ``"axis"`` (the paper's cubic-teacher form: a one-dimensional mixture along ``direction`` times one
            isotropic Gaussian across it; exact entropy, 3K + 1 order parameters; ``actions.mixture.AxisMixtureAction``).
        direction: ``along="axis"``: the axis (e.g. the teacher's w*; None: the direction of X^T y).
        sampled: ``measure="exact"``: the sampled layer measures (``actions.exact.ExactCGF``: fixed draws and proposals
            adapted to the problem) that ``solve`` attaches (:meth:`prepared`), so a solution's observables reuse them;
            None: made from ``samples`` and ``seed`` where needed.
        seed: the key of the sampled measures: an int (each value compiles its own solve) or a scalar integer
            array, e.g. ``jnp.asarray(k)``, traced under jit, so solves over keys share one compilation.
        loops: 0 (the saddle) or 1 (one-loop corrections; form ``"weight"``: two-layer and deep linear nets;
            form ``"kernel"``: deep nets of any activation, the one loop of the Gaussian-equivalent chain of
            Wisharts with N_l > P + 1, the test points' own fluctuations included, ``actions.test_points``;
            ``measure="exact"``: FCNs, the saddle's observables corrected, ``actions.exact_one_loop`` for two-layer
            nets, ``actions.deep_exact_one_loop`` for deeper ones with P <= its ``MAX_P`` (64), the mean output too for
            two hidden layers, other depths' mean output with P <= its ``OUTPUT_MAX_P`` (24)).
    """

    name: ClassVar[str] = "adaptive"
    form: str = eqx.field(static=True, default="auto")
    space: str = eqx.field(static=True, default="auto")
    measure: str = eqx.field(static=True, default="gaussian")
    samples: int = eqx.field(static=True, default=20000)
    seed: int | jax.Array = 0  # a Python int is static under jit; an integer array is traced (one compilation)
    loops: int = eqx.field(static=True, default=0)
    sampled: exact.ExactCGF | None = None  # measure="exact": its draws and adapted proposals (``prepared``)
    components: int = eqx.field(static=True, default=2)
    along: str = eqx.field(static=True, default="free")
    direction: jax.Array | None = None

    def __check_init__(self):
        if self.form not in FORMS:
            raise ValueError(f"form must be one of {', '.join(FORMS)}, got {self.form!r}")
        if self.measure not in MEASURES:
            raise ValueError(f"measure must be one of {', '.join(MEASURES)}, got {self.measure!r}")
        if self.measure == "mixture":
            mixture.check_components(self.components)
            mixture.check_along(self.along)
            if self.form not in ("auto", "weight"):
                raise ValueError(f"measure: 'mixture' needs form='weight' (or 'auto'), got {self.form!r}")
        elif self.measure != "gaussian" and self.form != "conjugate":
            raise ValueError(f"measure: {self.measure!r} needs form='conjugate'")
        if self.direction is not None and (self.measure != "mixture" or self.along != "axis"):
            raise ValueError("direction: only for measure='mixture' with along='axis'")
        if isinstance(self.samples, bool) or not isinstance(self.samples, int) or self.samples < 2:
            raise ValueError(f"samples must be an integer >= 2, got {self.samples!r}")
        if isinstance(self.seed, bool) or not (isinstance(self.seed, int) or (
                isinstance(self.seed, jax.Array) and self.seed.ndim == 0 and jnp.issubdtype(self.seed.dtype, jnp.integer))):
            raise ValueError(f"seed must be an int or a scalar integer array, got {self.seed!r}")

    def resolved_form(self, problem: Problem) -> str:
        if self.form == "auto":
            return "weight" if problem.depth == 1 else "kernel"
        return self.form

    def check(self, problem):
        form = self.resolved_form(problem)
        if problem.patches > 1 and form != "weight" and self.measure != "exact":
            raise ValueError(f"form: a CNN has the 'weight' form (its filter covariance), or 'conjugate' with "
                             f"measure='exact' (its filter measure) only, got {form!r}")
        if form == "weight":
            if problem.depth == 1:
                if has_bias(problem):
                    raise ValueError("arch: biases (s_b2 > 0) are not supported by the two-layer weight form; "
                                     "use form='kernel'")
                resolve_space(self.space, problem)
            elif not problem.activation.is_linear:
                raise ValueError(f"form: 'weight' for depth {problem.depth} needs a linear activation "
                                 f"(one d x d Sigma_l per layer), got {problem.activation.name!r}")
            elif has_bias(problem):
                raise ValueError("form: 'weight' for deep nets needs s_b2 = 0")
        if self.sampled is not None and tuple(d.shape for d in self.sampled.draws) != tuple(
                (self.samples, exact.factor_rank(problem, layer)) for layer in range(problem.depth)):
            raise ValueError("sampled: the attached exact measure was made for another problem (layer shapes differ)")
        if self.measure == "mixture":
            mixture.check_problem(problem)
            if self.direction is not None and jnp.shape(self.direction) != (problem.d,):
                raise ValueError(f"direction: needs shape ({problem.d},) (the input dimension), "
                                 f"got {jnp.shape(self.direction)}")
            if self.loops:
                raise ValueError("loops: one-loop corrections need measure='gaussian', got 'mixture'")
        if self.loops and self.measure == "exact":  # loops act on the observables (actions.(deep_)exact_one_loop)
            _exact_loop(problem).check(problem)
            return AbstractTheory.check(self, problem)
        if self.loops and form == "conjugate":
            raise ValueError("loops: one-loop corrections need an action to expand: form='weight' or 'kernel' "
                             "(measure='gaussian'), or form='conjugate' with measure='exact' (fully connected nets); "
                             "the Gaussian conjugate form is a saddle map")
        super().check(problem)

    def problem(self, problem):
        if self.measure == "exact":  # the saddle map itself: its one loop corrects the observables (``mean``)
            return self.saddle_problem(problem)
        return super().problem(problem)

    def mean(self, fn, value, problem, linear=False):
        if self.loops and self.measure == "exact":
            return _exact_loop(problem).mean(self, fn, value, problem)
        return super().mean(fn, value, problem, linear)

    def test_fluctuations(self, value, problem, X_test):
        """The kernel form at one loop: the test rows' own fluctuations (``actions.test_points``)."""
        if self.loops and self.measure == "gaussian" and self.resolved_form(problem) == "kernel":
            return test_points.fluctuation_correction(problem, value, X_test, self._factor())
        return None

    def prepared(self, problem: Problem) -> "Adaptive":
        """The exact measure's draws and proposals made once, outside jit (``actions.exact.exact_cgf`` with the
        compiled Gaussian anchor, ``exact.gaussian_anchor``, and exact-measure solves: the final solve reuses the
        latter's compilation) and attached: the solve and every observable of its solution use them instead of
        remaking them under jit."""
        if self.measure != "exact" or self.sampled is not None:
            return self
        from adaptive_kernels.api import solve_problem  # the library's compiled solves (api imports this module)

        def solve(cgf, init):  # init: the theory's own (zeros; the proposals' adaptation point), as in ``solve``
            if cgf is None and problem.patches > 1:  # a CNN's Gaussian anchor: its Gaussian-ansatz filter covariance
                sigma = solve_problem(problem, Adaptive(), None, init=None, implicit=True, linear_solver=None).value
                return exact.weight_form_conjugates(problem, sigma)
            if cgf is None:
                return exact.gaussian_anchor(problem)
            return solve_problem(problem, self._with_sampled(cgf), None, init=None, implicit=True, linear_solver=None)

        return self._with_sampled(exact.exact_cgf(problem, self.samples, jax.random.PRNGKey(self.seed), solve))

    def _with_sampled(self, cgf):
        return eqx.tree_at(lambda t: t.sampled, self, cgf, is_leaf=lambda x: x is None)

    def _cgf(self, problem: Problem):
        """The layer CGF of the conjugate form: None (Gaussian-equivalent) or a sampled one with fixed draws."""
        if self.measure == "exact":
            if self.sampled is not None:
                return self.sampled
            return exact.exact_cgf(problem, self.samples, jax.random.PRNGKey(self.seed))
        if self.measure == "second_order":
            key = jax.random.PRNGKey(self.seed)
            return deep.SecondOrderCGF(tuple(
                jax.random.normal(jax.random.fold_in(key, layer), (self.samples, problem.P), problem.X.dtype)
                for layer in range(problem.depth)))
        return None

    def saddle_problem(self, problem):
        form = self.resolved_form(problem)
        if self.measure == "mixture":
            return mixture.mixture_action(self.components, self.samples, self.seed, problem, self.along,
                                          self.direction), problem
        if form == "weight" and problem.depth == 1:
            return TwoLayerAdaptiveAction(resolve_space(self.space, problem)), problem
        check_unweighted(problem, f"the adaptive {form} form of depth {problem.depth} (measure {self.measure!r})")
        if form == "weight":
            return deep.InputSpaceAction(), problem
        if form == "kernel":
            return deep.WhitenedKernelAction(self._factor()), problem
        return deep.ConjugateMap(self._cgf(problem)), problem

    def _factor(self):
        """The kernel form's factor of G_l (``deep.WhitenedKernelAction``): Cholesky for the one loop."""
        return deep.prior_factor if self.loops else deep.whitening_factor

    def init(self, problem, args):
        form = self.resolved_form(problem)
        if self.measure == "mixture":
            if self.along == "axis":
                return mixture.axis_initial(problem, self.components)
            return mixture.initial(problem, self.components)
        if form == "weight":
            if problem.depth == 1:
                return problem.prior_covariance()
            start = deep.InputSpaceAction().initial(problem)
            if self.loops:  # from the saddle: at the prior I + M need not be positive definite (docs/finite_width.md)
                saddle = stationary_point(deep.InputSpaceAction(), Newton(), start, problem, implicit=False).value
                finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(S)) for S in saddle]))
                start = tuple(jnp.where(finite, S, S0) for S, S0 in zip(saddle, start))
            return start
        if form == "kernel":
            return deep.WhitenedKernelAction().initial(problem)
        if self.measure == "exact":  # where the proposals were last adapted: the exact saddle of the earlier proposal
            return self._cgf(problem).start
        return tuple(jnp.zeros((problem.P, problem.P), problem.X.dtype) for _ in range(problem.depth))

    def default_solver(self, problem):
        if self.measure == "mixture":
            return mixture.DEFAULT_SOLVER
        if self.measure == "exact":
            return exact.default_solver()
        form = self.resolved_form(problem)
        return {"conjugate": FixedPoint(), "kernel": Continuation()}.get(form, Newton())

    def kernels_linear(self, problem):
        """Linear nets in the weight form (the kernels X Sigma_l X^T, summed over patches for a CNN)."""
        return self.measure == "gaussian" and self.resolved_form(problem) == "weight" and problem.activation.is_linear

    # --- kernels of a solution -----------------------------------------------------------------------------------
    def _joint_kernels(self, value, problem: Problem, X_test) -> tuple:
        """Per-layer kernels of the conjugate form on [X; X_test]: the test inputs are appended with zero conjugate
        kernel on their rows and columns and the same forward pass is run (THEORY.md sec. 5)."""
        X_all = problem.X if X_test is None else jnp.concatenate([problem.X, X_test])
        P, P_all = problem.P, X_all.shape[0]
        padded = tuple(jnp.zeros((P_all, P_all), K.dtype).at[:P, :P].set(K) for K in value)
        cgf = self._cgf(problem)
        if cgf is None:
            return deep.ConjugateMap().kernels(problem, X_all, padded)[0]
        return deep.extended_kernels(problem, X_all, padded, cgf)

    def output_kernels(self, value, problem, X_test=None):
        form = self.resolved_form(problem)
        if self.measure == "mixture":
            train = mixture.mixture_kernel(problem, value, problem.X, direction=self.direction)[0]
            if X_test is None:
                return train, None, None
            return (train,) + mixture.mixture_kernel(problem, value, X_test, problem.X, self.direction)
        if form == "weight" and problem.depth == 1:
            train = problem.two_layer_kernel(value)
            if X_test is None:
                return train.nngp, None, None
            cross = problem.two_layer_kernel(value, X_test, problem.X)
            return train.nngp, cross.nngp, cross.var1
        c = problem.readout_scale
        if form == "kernel":  # test rows by Gaussian conditioning on the training kernels (``actions.test_points``)
            if X_test is None:
                return c * deep.whitened_chain(problem, problem.X, value, self._factor())[-1], None, None
            return tuple(c * K for K in test_points.kernel_rows(problem, value, X_test, self._factor()))
        if form == "weight":
            X_all = problem.X if X_test is None else jnp.concatenate([problem.X, X_test])
            K_all = c * X_all @ value[-1] @ X_all.T
        else:
            K_all = c * self._joint_kernels(value, problem, X_test)[-1]
        P = problem.P
        if X_test is None:
            return K_all, None, None
        return K_all[:P, :P], K_all[P:, :P], jnp.diagonal(K_all)[P:]

    def layer_kernels(self, value, problem):
        form = self.resolved_form(problem)
        if self.measure == "mixture":
            return (mixture.mixture_kernel(problem, value, problem.X, direction=self.direction)[0]
                    / problem.readout_scale,)
        if form == "weight":
            if problem.depth == 1:
                return (problem.two_layer_kernel(value).nngp / problem.readout_scale,)
            return tuple(problem.X @ S @ problem.X.T for S in value)
        if form == "kernel":
            return deep.whitened_chain(problem, problem.X, value, self._factor())
        return self._joint_kernels(value, problem, None)

    def input_covariances(self, value, problem):
        """Sigma (two-layer FCN, any phi), Sigma_l (deep linear, weight form), the first layer's E_tilted[w w^T]
        (exact measure, any depth), or for a linear net without bias in a kernel form with P >= d:
        Sigma_l = X^+ K_l X^{+T} (K_l = X Sigma_l X^T determines it)."""
        form = self.resolved_form(problem)
        if problem.patches > 1:
            return None
        if self.measure == "mixture":  # E_rho[w w^T]
            return (mixture.second_moment(problem, value, self.direction),)
        if form == "weight":
            return (value,) if problem.depth == 1 else tuple(value)
        if self.measure == "exact":  # the first layer's E_tilted[w w^T]
            return (exact.first_layer_covariance(self._cgf(problem), problem, value),)
        if not problem.activation.is_linear or has_bias(problem) or problem.P < problem.d:
            return None
        pinv = jnp.linalg.pinv(problem.X)
        return tuple(pinv @ K @ pinv.T for K in self.layer_kernels(value, problem))


THEORIES = {"gp": NNGP, "nngp": NNGP, "scaling": Scaling, "adaptive": Adaptive}


def get_theory(theory, **options) -> AbstractTheory:
    """A theory object from a name in :data:`THEORIES` (``options`` passed to its constructor) or itself."""
    if isinstance(theory, AbstractTheory):
        if options:
            raise TypeError(f"theory: options {', '.join(options)} go into the theory object, not beside it")
        return theory
    if isinstance(theory, str) and theory in THEORIES:
        try:
            return THEORIES[theory](**options)
        except TypeError as err:
            raise TypeError(f"theory {theory!r}: {err}") from None
    raise ValueError(f"theory must be one of {', '.join(THEORIES)} or a theory object, got {theory!r}")
