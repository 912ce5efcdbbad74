"""Tests of autofreeze/review/."""
