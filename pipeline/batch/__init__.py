"""Batch jobs: a manifest of many dubs, generations and renders, run resumably on a local pool or Ray.

``manifest.py`` reads and checks the rows, ``state.py`` keeps each job's state in SQLite under the output
root, ``jobs.py`` runs one job in a worker (its log, the identity lock), ``runner.py`` drives them on a
local process pool, ``ray_runner.py`` on Ray, ``report.py`` writes the summary.
"""
