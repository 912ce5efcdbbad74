"""The search: run, trial loop, objective, space, recipes as baselines, the transferability
probe, re-evaluation and worker processes. It never imports :mod:`autofreeze.review`.
"""
