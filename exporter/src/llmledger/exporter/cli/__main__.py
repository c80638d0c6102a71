"""``python -m llmledger.exporter.cli``: the same as the ``llmledger`` command."""

import sys

from llmledger.exporter.cli import main

sys.exit(main())
