"""Tests of autofreeze/search/."""
