"""``python -m xraylib``: the same command line as the ``xraylib`` script.

DVC stages call ``python -m xraylib`` so that, in a DVC temporary workspace, the
workspace's own copy of the package (first on ``sys.path``) runs its stages.
"""

import sys

from xraylib.cli import main

sys.exit(main())
