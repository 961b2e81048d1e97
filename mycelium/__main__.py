"""``python -m mycelium`` is the ``mycelium`` command."""

from mycelium.cli import main

main()
