"""Leaves every floor may use: user errors, atomic files, typed config loading.

Nothing here imports motion, renderers or pipeline.
"""
