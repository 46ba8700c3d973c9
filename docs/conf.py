"""Sphinx configuration; built in CI with ``sphinx-build -W`` (warnings are errors)."""

from __future__ import annotations

import netpoll_trio

project = "netpoll_trio"
author = "the netpoll_trio developers"
copyright = f"2026, {author}"  # without it the HTML footer shows an empty "©."
release = version = netpoll_trio.__version__
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.viewcode"]
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True  # dataclass "Attributes:" become fields, not duplicate objects
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
html_theme = "alabaster"
html_static_path = ["_static"]
exclude_patterns = ["_build"]
nitpicky = False
