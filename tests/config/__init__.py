"""Tests of autofreeze/config/."""
