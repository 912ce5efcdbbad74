"""Plugins: the manager (the only importer of pluggy besides the hookspecs), the registry (the
only caller of hooks) and the built-in plugins.
"""
