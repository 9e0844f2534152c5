"""Puts the checkout's root on ``sys.path``, so that a benchmark run as ``python3 bench/x.py``
can import the throw-away servers of ``devservers/``, which are not part of the installed
package.  Imported for that effect alone, before any ``devservers`` import."""

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:
    sys.path.insert(1, ROOT)  # after the script's own directory (bench/)
