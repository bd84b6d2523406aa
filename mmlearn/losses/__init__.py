"""Module forms of the book's losses (``nn.Module`` wrappers of :mod:`mmlearn.functional`)."""
