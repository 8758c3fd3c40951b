"""Bad input to the samplers gives a clear error naming the argument (no sampling is run)."""

import numpy as np
import pytest

import adaptive_kernels as ak
from adaptive_kernels.sampling import Gibbs, sample_posterior

X = np.array([[1.0, 0.3], [-0.4, 1.2], [0.8, -1.1]])
DATA = ak.Dataset(X=X, y=np.array([0.9, -0.6, 1.2]))
LINEAR = ak.FCN(2, 3)


@pytest.mark.parametrize(
    "arch, data, kappa2, options, error, match",
    [
        (ak.FCN(3, 3), DATA, 0.1, {}, ValueError, "^data: inputs have dimension d = 2 but arch expects d = 3"),
        (LINEAR, ak.Dataset(X=X, y=np.ones((3, 2))), 0.1, {"method": "gibbs"}, ValueError,
         "^method: 'gibbs' samples one output, y of shape \\(P,\\); data.y has columns"),
        (LINEAR, ak.Dataset(X=X, y=np.ones((3, 2))), 0.1, {"method": "langevin"}, ValueError,
         "^method: 'langevin' samples one output"),
        (LINEAR, (X, DATA.y), 0.1, {}, TypeError, "^data must be an adaptive_kernels.Dataset"),
        ("fcn", DATA, 0.1, {}, TypeError, "^arch must be an FCN or a CNN"),
        (LINEAR, DATA, 0.0, {}, ValueError, "^kappa2 must be positive"),
        (LINEAR, DATA, -1.0, {}, ValueError, "^kappa2 must be positive"),
        (LINEAR, DATA, 0.1, {"method": "nuts"}, ValueError, "^method: unknown 'nuts'"),
        (ak.FCN(2, 3, "relu"), DATA, 0.1, {"method": "gibbs"}, ValueError, "^method: 'gibbs' is exact only for linear FCNs"),
        (ak.CNN(1, 2, 3), DATA, 0.1, {"method": Gibbs()}, ValueError, "^method: 'gibbs' is exact only for linear FCNs"),
        (ak.FCN(2, 3, s_b2=0.1), DATA, 0.1, {"method": "gibbs"}, ValueError, "^method: 'gibbs' needs an FCN without biases"),
        (LINEAR, DATA, 0.1, {"num_samples": 3}, ValueError, "^num_samples must be at least 4"),
        (LINEAR, DATA, 0.1, {"num_chains": 0}, ValueError, "^num_chains must be a positive integer"),
        (LINEAR, DATA, 0.1, {"num_warmup": -5}, ValueError, "^num_warmup must be a non-negative integer"),
        (LINEAR, DATA, 0.1, {"thin": 1.5}, ValueError, "^thin must be a positive integer"),
    ],
)
def test_bad_input_is_rejected(arch, data, kappa2, options, error, match):
    with pytest.raises(error, match=match):
        sample_posterior(arch, data, kappa2, **options)


def test_auto_method_choice():
    """'auto' picks Gibbs for linear FCNs, HMC for other one-hidden-layer FCNs, else Langevin."""
    from adaptive_kernels.sampling import default_method

    assert default_method(ak.FCN(2, (3, 4))) == "gibbs"
    assert default_method(ak.FCN(2, 3, "erf")) == "hmc"
    assert default_method(ak.FCN(2, 3, s_b2=0.5)) == "hmc"
    assert default_method(ak.FCN(2, (3, 4), "relu")) == "langevin"
    assert default_method(ak.CNN(1, 2, 3, "relu")) == "langevin"
