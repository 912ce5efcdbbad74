"""Tests of the command line (autofreeze/cli/)."""
