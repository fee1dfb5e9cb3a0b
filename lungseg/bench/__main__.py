"""``python -m lungseg.bench``: the same as ``lungseg bench``."""

import sys

from lungseg.bench.cli import main
from lungseg.errors import LungsegError

try:
    sys.exit(main())
except LungsegError as exc:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(2)
