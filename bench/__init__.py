"""Benchmarks of the relay's data path that print tables (`python -m bench`); they are not tests."""
