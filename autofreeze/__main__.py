"""``python -m autofreeze``: the same as the ``autofreeze`` console script."""

from __future__ import annotations

from autofreeze.cli import main

if __name__ == "__main__":
    main()
