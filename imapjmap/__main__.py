"""``python -m imapjmap`` is the ``imapjmap`` command."""

from imapjmap.cli import main

raise SystemExit(main())
