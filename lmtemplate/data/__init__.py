"""Data: corpora and token files, the built-in demo data, datamodules."""
