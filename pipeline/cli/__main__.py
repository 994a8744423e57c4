"""`python -m pipeline.cli ...` = `vtpipe ...` (the tests and the fault harness start the CLI this way)."""

from pipeline.cli import run_main

run_main()
