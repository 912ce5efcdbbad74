"""Tests of autofreeze/plugins/."""
