"""``python -m sparsekernels``: the training command line (see ``cli.py``)."""
from .cli import main

raise SystemExit(main())
