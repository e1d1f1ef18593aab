import os

# scikit-learn's check_array_api_input (run by parametrize_with_checks) is
# skipped unless SciPy's array API support is on, and SciPy reads this variable
# once, at import: set it before any test module imports scipy.
os.environ.setdefault("SCIPY_ARRAY_API", "1")
