"""The composition root: the only package that imports both api and worker."""
