"""Allows `python -m vlmlab ...`."""

from vlmlab.cli import main

raise SystemExit(main())
