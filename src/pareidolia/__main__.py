"""``python -m pareidolia``: the ``pareidolia`` command, as launchers start it
(``accelerate launch -m pareidolia train …``, ``torchrun -m pareidolia train …``)."""

import sys

from pareidolia.cli import main

if __name__ == "__main__":
    sys.exit(main())
