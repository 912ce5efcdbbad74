"""Frozen work computed once: pooled features and prefix outputs (:mod:`.activations`), and where
they are kept (:mod:`.store`).
"""
