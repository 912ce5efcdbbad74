"""Tests of autofreeze/schedules/."""
