"""vtpipe orchestration: command line, config, the stage graph, run directories, executors."""

from stages import __version__  # noqa: E402,F401 (the one version, written in stages/__init__.py)
