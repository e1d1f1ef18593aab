"""The scikit-learn estimators: parameters, validation, one driver call, attributes."""
