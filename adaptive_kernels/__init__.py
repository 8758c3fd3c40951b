"""adaptive_kernels: what finite, trained neural networks learn, from the saddle points of
their statistical field theory. See README.md and ../shared/THEORY.md for the equations.

Importing the package enables JAX's float64 mode unless the user chose otherwise
(``JAX_ENABLE_X64`` in the environment, or ``ADAPTIVE_KERNELS_X64=0``): see ``_config``.
"""

from adaptive_kernels._config import _apply_default_precision, compilation_cache, precision, threads

_apply_default_precision()

from adaptive_kernels.actions.exact import exact_error_bars, exact_hmc_check, exact_measure  # noqa: E402
from adaptive_kernels._validation import PrecisionWarning  # noqa: E402
from adaptive_kernels.activations import ACTIVATIONS, AbstractActivation, get_activation  # noqa: E402
from adaptive_kernels.api import layer_kernels, predict, solve, summarize  # noqa: E402
from adaptive_kernels.architectures import CNN, FCN  # noqa: E402
from adaptive_kernels.data import Dataset, load_digits_regression, teacher_dataset  # noqa: E402
from adaptive_kernels.gp import GPPrediction, gp_predict, log_marginal_likelihood  # noqa: E402
from adaptive_kernels.kernels import hidden_kernels, nngp, ntk  # noqa: E402
from adaptive_kernels.learning_curves import (  # noqa: E402
    Spectrum,
    eigenlearning,
    empirical_learning_curve,
    empirical_spectrum,
    equivalent_kernel,
    optimal_ridge,
    predict_learning_curve,
    sphere_spectrum,
    wilsonian_rg,
)
from adaptive_kernels.observables import (  # noqa: E402
    eigenvalue_ratio,
    kernel_target_alignment,
    learnability,
    mse,
    spectrum,
)
from adaptive_kernels.phases import continuation, stationary_points  # noqa: E402
from adaptive_kernels.prediction import Prediction  # noqa: E402
from adaptive_kernels.problem import Problem, make_problem  # noqa: E402
from adaptive_kernels.solvers import FixedPoint, Newton, QuasiNewton, Solution, Status, TrustRegion  # noqa: E402
from adaptive_kernels.theories import NNGP, Adaptive, Scaling  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS",
    "AbstractActivation",
    "Adaptive",
    "CNN",
    "Dataset",
    "exact_error_bars",
    "exact_hmc_check",
    "exact_measure",
    "FCN",
    "FixedPoint",
    "NNGP",
    "Newton",
    "Problem",
    "QuasiNewton",
    "Scaling",
    "Solution",
    "Status",
    "TrustRegion",
    "GPPrediction",
    "Prediction",
    "PrecisionWarning",
    "Spectrum",
    "continuation",
    "eigenlearning",
    "eigenvalue_ratio",
    "empirical_learning_curve",
    "empirical_spectrum",
    "equivalent_kernel",
    "get_activation",
    "gp_predict",
    "hidden_kernels",
    "kernel_target_alignment",
    "layer_kernels",
    "learnability",
    "load_digits_regression",
    "log_marginal_likelihood",
    "make_problem",
    "mse",
    "nngp",
    "ntk",
    "optimal_ridge",
    "precision",
    "predict",
    "predict_learning_curve",
    "solve",
    "spectrum",
    "stationary_points",
    "sphere_spectrum",
    "summarize",
    "teacher_dataset",
    "threads",
    "compilation_cache",
    "wilsonian_rg",
]
