import sys

from deltanet.cli import main

sys.exit(main())
