"""Callbacks that lmtemplate adds to Lightning's own."""
