"""Tests of autofreeze/data/."""
