"""Tests of autofreeze/core/."""
