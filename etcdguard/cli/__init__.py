"""The ``etcdguard`` command line (:mod:`etcdguard.cli.main`)."""

import gc
import os
import sys

# True when the ``etcdguard`` console script runs (not an importer: tests, completion).
CONSOLE = os.path.basename(sys.argv[0]) == "etcdguard"
if CONSOLE:
    # The command's imports make some hundred thousand objects and no garbage: the cyclic collector
    # waits until they are in (main.run() freezes them and turns it back on), about a tenth of the
    # start-up time.
    gc.disable()
