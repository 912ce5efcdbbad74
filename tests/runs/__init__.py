"""Tests of autofreeze/runs/."""
