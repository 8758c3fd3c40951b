"""Learning curves of GP regression: kernel spectra w.r.t. a data measure, three theories
(eigenlearning / effective ridge, equivalent kernel, Wilsonian RG), empirical curves, and
ridge selection from the theory. THEORY.md sec. 7; review Fig 1.
"""

from adaptive_kernels.learning_curves.empirical import LearningCurve, empirical_learning_curve
from adaptive_kernels.learning_curves.spectra import (
    NNGPKernel,
    Spectrum,
    as_kernel,
    dot_product_profile,
    empirical_spectrum,
    harmonic_multiplicity,
    sphere_spectrum,
    sphere_spectrum_from_profile,
)
from adaptive_kernels.learning_curves.theory import (
    THEORIES,
    LearningCurvePrediction,
    effective_ridge,
    eigenlearning,
    equivalent_kernel,
    optimal_ridge,
    predict_learning_curve,
    renormalised_ridge,
    wilsonian_rg,
)

__all__ = [
    "LearningCurve",
    "LearningCurvePrediction",
    "NNGPKernel",
    "Spectrum",
    "THEORIES",
    "as_kernel",
    "dot_product_profile",
    "effective_ridge",
    "eigenlearning",
    "empirical_learning_curve",
    "empirical_spectrum",
    "equivalent_kernel",
    "harmonic_multiplicity",
    "optimal_ridge",
    "predict_learning_curve",
    "renormalised_ridge",
    "sphere_spectrum",
    "sphere_spectrum_from_profile",
    "wilsonian_rg",
]
