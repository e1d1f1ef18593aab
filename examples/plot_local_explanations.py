"""
=======================================
Exact local explanations
=======================================

Every ARN prediction is exactly a linear model of its own input,
``f(x) = A(x) x + a(x)``, with ``A(x) = sum_k pi_k(x) W_k`` and
``a(x) = sum_k pi_k(x) b_k``. ``ARNRegressor.local_linear`` returns that
model for each sample, so the per-feature contributions ``A_j(x) x_j`` add up
to the prediction exactly, with no sampling or surrogate model.
``ARNRegressor.jacobian`` gives the exact derivative, which also counts how the
assignments move with ``x``.
"""

# %%
# A model of disease progression
# ------------------------------
# The diabetes data that ships with scikit-learn: ten standardised clinical
# variables, one year's disease progression.
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_diabetes
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from arn_sklearn import ARNRegressor
from arn_sklearn.inspection import LocalExplanationDisplay

X, y = load_diabetes(return_X_y=True, as_frame=True)
model = make_pipeline(StandardScaler(), ARNRegressor(8, alpha=10.0, random_state=0))
print("5-fold R2:", cross_val_score(model, X, y, cv=5).mean().round(3))
model.fit(X, y)

# %%
# The local linear model reproduces the prediction
# ------------------------------------------------
# ``local_linear`` takes the inputs the ARN step sees (after the scaler).
arn = model[-1]
Z = model[:-1].transform(X)
coef, intercept = arn.local_linear(Z)
rebuilt = np.einsum("nd,nd->n", coef, Z) + intercept
print("max |sum of contributions + intercept - predict|:", np.abs(rebuilt - model.predict(X)).max())

# %%
# One patient's explanation
# -------------------------
# Box plots: the contributions of each feature over all patients. Diamonds:
# this patient's. Features are sorted by the size of this patient's
# contribution.
display = LocalExplanationDisplay.from_estimator(model, X, sample_index=7)
display.figure_.tight_layout()

# %%
# Local coefficients against the Jacobian
# ---------------------------------------
# ``coef`` is the regressor applied at ``x``; the Jacobian adds the change of
# the assignments themselves. With soft assignments the two differ most
# between anchors.
jac = arn.jacobian(Z)
fig, ax = plt.subplots(figsize=(4.5, 4))
for j, name in enumerate(X.columns):
    if name in ("bmi", "s5", "bp"):
        ax.scatter(coef[:, j], jac[:, j], s=8, label=name)
lims = [min(coef.min(), jac.min()), max(coef.max(), jac.max())]
ax.plot(lims, lims, color="0.5", lw=0.8)
ax.set_xlabel("local coefficient A(x)")
ax.set_ylabel("derivative df/dx (jacobian)")
ax.legend()
fig.tight_layout()
plt.show()
