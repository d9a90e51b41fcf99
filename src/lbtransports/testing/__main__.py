"""``python -m lbtransports.testing``: see :mod:`lbtransports.testing._cli`."""

from ._cli import main

raise SystemExit(main())
