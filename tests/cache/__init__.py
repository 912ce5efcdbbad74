"""Tests of autofreeze/cache/."""
