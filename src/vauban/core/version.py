"""vauban's version: the one place it is written (``pyproject.toml``'s ``version`` must match it).

Read from the code rather than from installed metadata, so a source checkout on ``PYTHONPATH``
reports the version of the code that ran.
"""

__version__ = "0.1.0"
