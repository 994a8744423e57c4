"""The FAISS index library under its old import name; the code lives in the stages.ann package."""

from stages.ann import *  # noqa: F401,F403
from stages.ann import __all__  # noqa: F401
