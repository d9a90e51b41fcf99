"""``python -m lbtransports.cli``: the same as the ``lb`` command."""

from . import main

raise SystemExit(main())
