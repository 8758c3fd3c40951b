import sys

from adaptive_kernels.cli import main

sys.exit(main())
