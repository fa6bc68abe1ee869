import sys

from cxrbox.cli import main

sys.exit(main())
