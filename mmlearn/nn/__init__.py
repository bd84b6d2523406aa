"""Modules built on :mod:`mmlearn.functional`."""
