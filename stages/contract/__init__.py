"""The stage contract: what every stage module and the pipeline share.

    tasks.py     Task, Result, fingerprints, manifests (written last), atomic writes, the stage registry
    layout.py    where a run's outputs go (outputs/<run>/<stage>/..., _manifests/)
    errors.py    VtpipeError, ConfigError, FingerprintMismatch
    faults.py    named fault points (the kill -9 tests stop a process at them)
    progress.py  progress bars that stay quiet off a terminal
    assets.py    where the shipped presets (configs/) and data files (data/) are, checkout or installed wheel
"""
