"""``python -m flowstate_web``: the same as the ``flowstate-web`` command."""

from __future__ import annotations

import sys

from .cli_main import main

if __name__ == "__main__":
    sys.exit(main())
