"""``python -m privsynth``: the same as the ``privsynth`` command."""

from privsynth.cli import main

main()
