"""reasonloop: RL post-training of language models as one orchestrated, queryable data pipeline.

The code lives in the repository's top-level folders (`flows/`, `tasks/`, `schemas/`, `storage/`,
`trainers/`), and is installed as subpackages of this one (`reasonloop.flows`, ...) through
pyproject's `package-dir`: a user's project has folders of exactly those names, and one import
namespace keeps theirs and ours from shadowing each other.

A source checkout that is not installed (a copy of the tree on a GPU machine, a script run with
the checkout on PYTHONPATH) finds the same folders next to this one.
"""

from __future__ import annotations

import os

__version__ = "0.2.0"

_checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.isfile(os.path.join(_checkout, "pyproject.toml")) and os.path.isdir(os.path.join(_checkout, "trainers")):
    __path__.append(_checkout)
