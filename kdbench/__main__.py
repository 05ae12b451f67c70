"""`python -m kdbench` is the same as the `kdbench` command."""

from kdbench.cli import main

raise SystemExit(main())
