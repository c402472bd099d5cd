# Thin shim so that `pip install -e .` and older tools work; all metadata lives in pyproject.toml.
from setuptools import setup
setup()
