import sys

from signer_guard.cli import main

sys.exit(main())
