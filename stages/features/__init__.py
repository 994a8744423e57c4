"""Features on disk and the engine that makes them.

    store.py       the flat, ragged HDF5 feature store (VideoStore, VideoStoreWriter, TextStore), LocVTP export
    engine.py      extract's engine: decode workers -> batched model forward -> store rows
    identity.py    input identities (size, mtime, sampled-content hash, cached in SQLite) for fingerprints
    provenance.py  what made a store: vtpipe version, model, checkpoint sha256, presets; same-source checks
"""
