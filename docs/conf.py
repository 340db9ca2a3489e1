"""Sphinx configuration of the course site. Build it with
``python -m nanotie site --out site/``: that command stages the pages (docs/_ext/
sitebuild.py) and runs Sphinx with this file; see docs/README.md."""

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(DOCS / "_ext"))
sys.path.insert(0, str(ROOT))

project = "nanotie"
author = "the nanotie authors"
copyright = "nanotie authors, MIT licence"

extensions = [
    "myst_nb",                 # markdown pages and the executed walkthroughs
    "sphinx.ext.autodoc",      # the API reference, from the docstrings
    "mathml",                  # math typeset to MathML at build time: no script, no network
    "annotate",                # the side-by-side source pages
    "sitepages",               # each page's source links
]
nanotie_root = str(ROOT)

html_math_renderer = "mathml"
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_dmath_double_inline = True
suppress_warnings = ["myst.header", "misc.highlighting_failure", "toc.not_included",
                     "autodoc.import_object"]

# The walkthroughs arrive executed (docs/_ext/notebooks.py): render, never execute.
nb_execution_mode = "off"
nb_output_stderr = "remove"
nb_merge_streams = True
nb_ipywidgets_js = {}          # no widget script from a CDN

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "ignore-module-all": True}
add_module_names = False
highlight_language = "none"    # a docstring's literal block is an equation, not Python

html_theme = "furo"
html_title = "nanotie"
html_static_path = ["_static"]
html_css_files = ["site.css"]
html_show_sourcelink = False
html_copy_source = False
html_theme_options = {"navigation_with_keys": True}
html_last_updated_fmt = None
html_permalinks_icon = "#"
html_favicon = "_static/favicon.svg"
