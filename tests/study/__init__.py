"""Tests of autofreeze/study/."""
