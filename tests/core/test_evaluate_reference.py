"""``curation.evaluate.fit`` against scikit-learn's ``LogisticRegression`` on the same objective.

``fit`` minimizes ``mean CE + ||W||^2 / (2 C n)`` with an unpenalized bias; scikit-learn's
L2 multinomial logistic regression minimizes ``C * sum CE + ||W||^2 / 2``, the same objective
times ``C n``. So ``EvalConfig(C=c)`` must reach the optimum of ``LogisticRegression(C=c)``.
"""

import numpy as np
import pytest
import torch
from scipy.special import log_softmax
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from curation.evaluate import EvalConfig, accuracy, fit

# Measured on digits with the default EvalConfig (C=10, max_iter=200): max |dW| 2.8e-3
# (max |W| is 3.0), max |d centered bias| 7.9e-3, max |d probability| 1.0e-3, objectives equal
# to 1e-8. Fitting scikit-learn with C/2 or 2C instead moves W by > 0.4 and the objective by
# > 1e-3, so these tolerances do tell a wrong C apart. The slack covers float32 and the
# 1e-6 gradient tolerance of fit's L-BFGS.
W_ATOL = 1e-2
BIAS_ATOL = 3e-2
PROBA_ATOL = 5e-3
OBJECTIVE_RTOL = 1e-5


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.3, random_state=0,
                                                        stratify=y)
    scaler = StandardScaler().fit(x_train)
    return (scaler.transform(x_train).astype(np.float32), y_train,
            scaler.transform(x_test).astype(np.float32), y_test)


def _objective(x, y, weight, bias, C):
    logits = x.astype(np.float64) @ weight.T + bias
    return (-log_softmax(logits, axis=1)[np.arange(len(y)), y].mean()
            + np.square(weight).sum() / (2 * C * len(y)))


def test_fit_matches_sklearn_logistic_regression(digits):
    x_train, y_train, x_test, y_test = digits
    config = EvalConfig()  # linear model, C=10: what every evaluation uses
    model = fit(x_train, y_train, 10, config, seed=0)
    weight = model[0].weight.detach().numpy().astype(np.float64)
    bias = model[0].bias.detach().numpy().astype(np.float64)
    # Tight tol: the reference must be converged further than fit, not the other way round.
    reference = LogisticRegression(C=config.C, tol=1e-8, max_iter=5000).fit(x_train, y_train)

    np.testing.assert_allclose(weight, reference.coef_, rtol=0, atol=W_ATOL)
    # Softmax is invariant to shifting every bias by one constant: compare centered biases.
    np.testing.assert_allclose(bias - bias.mean(),
                               reference.intercept_ - reference.intercept_.mean(),
                               rtol=0, atol=BIAS_ATOL)
    with torch.no_grad():
        proba = torch.softmax(model(torch.from_numpy(x_test)), dim=1).numpy()
    np.testing.assert_allclose(proba, reference.predict_proba(x_test), rtol=0, atol=PROBA_ATOL)
    ours = _objective(x_train, y_train, weight, bias, config.C)
    theirs = _objective(x_train, y_train, reference.coef_, reference.intercept_, config.C)
    assert ours == pytest.approx(theirs, rel=OBJECTIVE_RTOL)
    assert accuracy(model, x_test, y_test) == reference.score(x_test, y_test)
    assert reference.score(x_test, y_test) > 0.95  # a real fit, not two equal failures
