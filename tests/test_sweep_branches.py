"""Sweeps that report branches (issue 17): ``Sweep(branches="all" | "posterior")`` on a small erf net with two
known minima, and pseudo-arclength continuation (``phases.arclength``) through the fold where one of them ends,
both checked against an independent enumeration of the minima of the action (numpy + scipy)."""

from __future__ import annotations

import numpy as np
import pytest
from arcsine_action import arcsine_action, local_minima

from adaptive_kernels.sweep import ConfigError, ParameterError, Sweep, TeacherData, build_regime, grid, load_config
from adaptive_kernels.sweep import run_sweep

# Mean-field erf net (gamma = 2), d = 2, N = 3, P = 20, y = z + 3 He3(z): at kappa2 = 0.01 the Gaussian ansatz's
# action has two minima (one reached from the prior, one from a start with 1/20 of the prior variance along w*);
# at kappa2 = 0.1 one.
RECIPE = TeacherData("cubic", d=2, P_test=20, eps=3.0)
POINTS = grid(theory="adaptive", activation="erf", P=20, width=3, gamma=2.0, kappa2=[0.01, 0.1])
RATIOS = (30.0, 0.05)


def _independent_action(point):
    """S(Sigma) in numpy (``arcsine_action``: entropy + GP data term with the erf arcsine kernel) as a function of
    the Cholesky coordinates (log l11, l21, log l22) of Sigma."""
    data = build_regime(point, RECIPE).data
    return arcsine_action(np.asarray(data.X), np.asarray(data.y), point["width"], point["gamma"], point["kappa2"])


def _independent_minima(point, starts=40):
    """The distinct local minima (actions) of :func:`_independent_action` from random starts (``local_minima``)."""
    return local_minima(_independent_action(point), starts)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    out = tmp_path_factory.mktemp("branches") / "branches.parquet"
    sweep = Sweep(POINTS, RECIPE, continuation="kappa2", branches="all", ratios=RATIOS)
    return sweep, out, run_sweep(sweep, out)


def test_all_branches_match_independent_minima(swept):
    # Every minimum the sweep reports at each kappa2 is a minimum of the independently coded action and vice
    # versa (actions within 1e-7 relative: both solved to stationarity); the posterior is the lowest.
    sweep, _, table = swept
    for point in sweep.points:
        rows = table[table.kappa2 == point["kappa2"]]
        assert rows.converged.all() and (rows.kind == "minimum").all() and (rows["index"] == 0).all()
        expected = _independent_minima(point)
        np.testing.assert_allclose(np.sort(rows.action), expected, rtol=1e-7)
        assert (rows.minima == len(expected)).all() and (rows.metastable == (len(expected) > 1)).all()
        assert rows.posterior.sum() == 1 and rows.action[rows.posterior].item() == rows.action.min()
        assert rows.key.iloc[0] == rows.key.iloc[0].partition("/")[0] and rows.posterior.iloc[0]
    low = table[table.kappa2 == 0.01]
    assert len(low) == 2 and set(low.branch) == {"prior", "aligned x0.05"}
    assert low.branch[low.posterior].item() == "prior"
    # kappa2 = 0.1: both branches of 0.01, continued by warm starts, end on the one minimum left; it keeps the
    # name of the posterior branch it continues
    high = table[table.kappa2 == 0.1]
    assert len(high) == 1 and high.branch.item() == "prior" and high.warm_start.item()
    assert "aligned x0.05" in high.starts.item()


def test_posterior_mode_and_resume(swept, tmp_path):
    sweep, out, table = swept
    again = run_sweep(sweep, out)  # everything stored: nothing solved, the same rows
    assert again.attrs["solved"] == 0
    assert list(again.key) == list(table.key) and np.allclose(again.action, table.action)
    posterior = run_sweep(Sweep(POINTS, RECIPE, continuation="kappa2", branches="posterior", ratios=RATIOS))
    assert len(posterior) == len(POINTS) and posterior.posterior.all()
    np.testing.assert_allclose(posterior.action, table.action[table.posterior], rtol=1e-10)


def test_branch_options_are_checked(tmp_path):
    with pytest.raises(ParameterError, match="branches: must be one of"):
        Sweep(POINTS, RECIPE, branches="every")
    with pytest.raises(ParameterError, match="branches: needs theories with an action"):
        Sweep(grid(theory="gp", P=5, width=3, kappa2=0.1), RECIPE, branches="all")
    with pytest.raises(ParameterError, match="ratios"):
        Sweep(POINTS, RECIPE, branches="all", ratios=(-1.0,))
    config = tmp_path / "sweep.toml"
    body = ('[data]\nteacher = "cubic"\nd = 2\n[grid]\nactivation = "erf"\nP = 20\nwidth = 3\ngamma = 2.0\n'
            'kappa2 = 0.01\n[run]\nbranches = "{}"\nratios = [30.0, 0.05]\n')
    config.write_text(body.format("all"))
    sweep, _ = load_config(config)
    assert sweep.branches == "all" and sweep.ratios == RATIOS
    config.write_text(body.format("most"))
    with pytest.raises(ConfigError, match=r"sweep.toml:11: branches: must be one of"):
        load_config(config)


def _numerical_hessian(S, u, h=1e-4):
    """Central finite-difference gradient and Hessian of S at u."""
    n = u.size
    E = np.eye(n) * h
    g = np.array([(S(u + E[i]) - S(u - E[i])) / (2 * h) for i in range(n)])
    H = np.array([[(S(u + E[i] + E[j]) - S(u + E[i] - E[j]) - S(u - E[i] + E[j]) + S(u - E[i] - E[j])) / (4 * h * h)
                   for j in range(n)] for i in range(n)])
    return g, H


def test_arclength_locates_the_fold_where_the_independent_second_minimum_disappears():
    # the minimum reached from the 1/20-variance start at kappa2 = 0.01, followed up in kappa2 by pseudo-arclength:
    # it ends at a fold (a zero Hessian eigenvalue) and the trace continues on the saddle branch. Independently
    # (numpy action + scipy from random starts): two minima 0.1 % below the fold, one 0.1 % above it; on the saddle
    # branch the numpy action is stationary with exactly one negative Hessian eigenvalue.
    from adaptive_kernels import phases

    point = Sweep(POINTS, RECIPE).points[0]
    regime = build_regime(point, RECIPE)
    arc = phases.arclength(regime.arch, regime.data, 0.01, "kappa2", start="aligned x0.05", ratios=(0.05,),
                           step=0.05, steps=26, bounds=(0.002, 0.05))
    (fold,) = arc.folds
    assert fold.refined and abs(fold.eigenvalue) < 1e-6
    assert [len(_independent_minima(dict(point, kappa2=fold.parameter * f))) for f in (0.999, 1.001)] == [2, 1]
    kinds = [p.kind for p in arc.points]
    assert kinds[0] == "minimum" and kinds[-1] == "saddle" and kinds.index("saddle") == fold.after
    saddle = arc.points[-1]
    S = _independent_action(dict(point, kappa2=saddle.parameter))
    L = np.linalg.cholesky(np.asarray(saddle.value))
    g, H = _numerical_hessian(S, np.array([np.log(L[0, 0]), L[1, 0], np.log(L[1, 1])]))
    assert np.max(np.abs(g)) < 1e-4 * np.max(np.abs(H))
    assert np.sum(np.linalg.eigvalsh(H) < 0) == 1
    assert saddle.action == pytest.approx(S(np.array([np.log(L[0, 0]), L[1, 0], np.log(L[1, 1])])), rel=1e-10)
