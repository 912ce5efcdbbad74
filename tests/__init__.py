"""The test suite: one folder per package of autofreeze, shared helpers at the top."""
