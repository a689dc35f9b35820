"""The library behind train.py, report.py, sweep.py and hubconf.py; docs/layout.md draws its layers.

Importing the package imports nothing: sweep.py reads run folders without PyTorch.
"""
