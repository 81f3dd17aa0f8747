"""python bench/recall [options]: the MQAR recall study (see study.py)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from study import main  # noqa: E402

sys.exit(main())
