"""Sphinx configuration of the arn-sklearn documentation.

Build (from the repository root; the gallery examples run, about a minute on 2 cores):

    pip install ".[docs]" && sphinx-build -W -b html docs docs/_build/html

``-D sphinx_gallery_conf.plot_gallery=0`` skips running the examples.
"""

import os
import sys
import warnings

sys.path.insert(0, os.path.abspath(".."))

import arn_sklearn  # noqa: E402

project = "arn-sklearn"
author = "The arn-sklearn developers"
copyright = "The arn-sklearn developers, BSD-3-Clause"
release = version = arn_sklearn.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    # MathJax 3 shipped inside the built site (_static/mathjax), not fetched
    # from a CDN: formulas render offline.
    "sphinx-mathjax-offline",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "auto_examples/*.ipynb", "auto_examples/*.py", "**/*.codeobj.json"]
templates_path = ["_templates"]

# API reference: one page per public object, numpydoc sections.
autosummary_generate = True
autodoc_default_options = {"members": True}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
# Types such as "array-like of shape (n, d)" are free text, not cross-references.
numpydoc_xref_param_type = False

myst_enable_extensions = ["dollarmath"]
myst_heading_anchors = 3

intersphinx_mapping = {}  # offline builds: no inventories are fetched

sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "download_all_examples": False,
    "remove_config_comments": True,
    "matplotlib_animations": False,
    "within_subsection_order": "FileNameSortKey",
    "reference_url": {"arn_sklearn": None},
    "doc_module": ("arn_sklearn",),
    "backreferences_dir": "generated/backreferences",
}

html_theme = "pydata_sphinx_theme"
html_title = "arn-sklearn"
html_theme_options = {"navigation_with_keys": False, "secondary_sidebar_items": ["page-toc"]}
html_static_path = []

# Matplotlib's Agg backend in the gallery: no GUI warning.
warnings.filterwarnings("ignore", message="Matplotlib is currently using agg")
